/*
 * Tests of the channel and health C API (drpc_channel_*, drpc_health_*)
 * against three in-process servers: round-robin split, fail-fast versus
 * wait-for-ready, a server draining through its health status without
 * failed calls, option errors, and races (asynchronous calls cancelled and
 * channels freed while calls are in flight) repeated ITERS times. Prints
 * "ok NAME" / "not ok NAME"; the last line is "channel: N passed, M failed".
 * Run under valgrind by tests/c/run.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drpc.h"

static int check_failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                        \
        }                                                                            \
    } while (0)

#define CHECK_RC(expr, want)                                                                        \
    do {                                                                                            \
        drpc_status rc_ = (expr);                                                                   \
        if (rc_ != (drpc_status)(want)) {                                                           \
            fprintf(stderr, "  %s:%d: %s returned %s (%u), want %s\n", __FILE__, __LINE__, #expr,    \
                    drpc_status_name(rc_), (unsigned)rc_, drpc_status_name(want));                  \
            check_failures++;                                                                       \
        }                                                                                           \
    } while (0)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* Servers: /t/Who answers the server's name after an optional delay in ms. */

typedef struct {
    char name[8];
    char addr[64];
    drpc_server *srv;
    drpc_health *health;
} test_server;

static uint32_t h_who(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    test_server *s = (test_server *)ud;
    if (len > 0 && len < 8) {
        char buf[8] = {0};
        memcpy(buf, req, len);
        long ms = atol(buf);
        if (ms > 0 && drpc_server_call_wait_cancelled(call, (uint64_t)ms)) return DRPC_CANCELED;
    }
    return drpc_server_call_respond(call, (const uint8_t *)s->name, strlen(s->name));
}

static void start(test_server *s, const char *name, const char *addr) {
    snprintf(s->name, sizeof s->name, "%s", name);
    s->srv = drpc_server_new();
    s->health = drpc_health_new();
    CHECK_RC(drpc_server_register_unary(s->srv, "/t/Who", h_who, s, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_health(s->srv, s->health, NULL), DRPC_OK);
    /* Registered once only. */
    CHECK_RC(drpc_server_register_health(s->srv, s->health, NULL), DRPC_ALREADY_EXISTS);
    char *bound = NULL;
    CHECK_RC(drpc_server_listen(s->srv, addr, &bound, NULL), DRPC_OK);
    if (bound) snprintf(s->addr, sizeof s->addr, "%s", bound);
    drpc_string_free(bound);
}

static void stop(test_server *s) {
    drpc_server_free(s->srv);
    drpc_health_free(s->health);
    s->srv = NULL;
    s->health = NULL;
}

static test_server SERVERS[3];
static char TARGET[256];

static drpc_channel_options *fast_options(void) {
    drpc_channel_options *o = drpc_channel_options_new();
    CHECK_RC(drpc_channel_options_set_connect_backoff(o, 20, 200), DRPC_OK);
    return o;
}

static drpc_channel *new_channel(const char *target, drpc_channel_options *o) {
    drpc_channel *ch = NULL;
    drpc_error *err = NULL;
    CHECK_RC(drpc_channel_new(target, o, &ch, &err), DRPC_OK);
    if (err) fprintf(stderr, "  channel %s: %s\n", target, drpc_error_message(err));
    drpc_error_free(err);
    drpc_channel_options_free(o);
    return ch;
}

/* Which server answered (index into SERVERS), -1 on failure. */
static int who(drpc_channel *ch, const char *delay, uint32_t wait, uint64_t timeout, drpc_status *rc_out) {
    drpc_buffer *b = NULL;
    drpc_status rc = drpc_channel_unary(ch, "/t/Who", (const uint8_t *)delay, delay ? strlen(delay) : 0, NULL, timeout,
                                        wait, &b, NULL);
    if (rc_out) *rc_out = rc;
    int found = -1;
    for (int i = 0; b && i < 3; i++) {
        if (drpc_buffer_len(b) == strlen(SERVERS[i].name) &&
            memcmp(drpc_buffer_data(b), SERVERS[i].name, drpc_buffer_len(b)) == 0)
            found = i;
    }
    drpc_buffer_free(b);
    return found;
}

/* ------------------------------------------------------------------ */

static void test_options_errors(void) {
    drpc_channel_options *o = drpc_channel_options_new();
    CHECK(o != NULL);
    CHECK_RC(drpc_channel_options_set_retry(o, 0, 10, 100), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_retry(o, 11, 10, 100), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_retry(o, 4, 10, 100), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_retry_budget(o, 10, 0.0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_retry_budget(o, 0, 0.0), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_load_balancing(o, 7), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_load_balancing(o, DRPC_LB_POWER_OF_TWO_CHOICES), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_connect_backoff(o, 0, 10), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_idle_timeout(o, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_tcp_keepalive(o, 500, 1000, 3), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_tcp_keepalive(o, 0, 0, 0), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_tcp_keepalive(o, 30000, 5000, 3), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_max_conns_per_endpoint(o, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_resolve_interval(o, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_options_set_health_check(o, "kv.KV"), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_health_check(o, NULL), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_wait_for_ready(o, true), DRPC_OK);
    drpc_conn_options *co = drpc_conn_options_new();
    CHECK_RC(drpc_channel_options_set_conn_options(o, co), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_conn_options(o, NULL), DRPC_BAD_ARGUMENT);
    drpc_conn_options_free(co);
    CHECK_RC(drpc_channel_options_set_retry(NULL, 1, 1, 1), DRPC_BAD_ARGUMENT);

    drpc_channel *ch = (drpc_channel *)1;
    drpc_error *err = NULL;
    CHECK_RC(drpc_channel_new("http://x:1", o, &ch, &err), DRPC_INVALID_ARGUMENT);
    CHECK(ch == NULL);
    CHECK(err != NULL && strstr(drpc_error_message(err), "scheme") != NULL);
    drpc_error_free(err);
    CHECK_RC(drpc_channel_new(NULL, o, &ch, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_channel_new("ipv4:127.0.0.1:1", o, NULL, NULL), DRPC_BAD_ARGUMENT);
    drpc_channel_options_free(o);
    drpc_channel_options_free(NULL);

    drpc_buffer *b = (drpc_buffer *)1;
    CHECK_RC(drpc_channel_unary(NULL, "/t/Who", NULL, 0, NULL, 0, DRPC_WAIT_DEFAULT, &b, NULL), DRPC_BAD_ARGUMENT);
    CHECK(b == NULL);
    drpc_channel_stats st;
    CHECK_RC(drpc_channel_get_stats(NULL, &st), DRPC_BAD_ARGUMENT);
    drpc_channel_free(NULL);
    CHECK_RC(drpc_health_set_status(NULL, "", DRPC_SERVING), DRPC_BAD_ARGUMENT);
    drpc_health *h = drpc_health_new();
    CHECK_RC(drpc_health_set_status(h, "", 9), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_health_set_status(h, NULL, DRPC_SERVING), DRPC_BAD_ARGUMENT);
    drpc_health_free(h);
    drpc_health_free(NULL);
}

static void test_round_robin_split(void) {
    drpc_channel *ch = new_channel(TARGET, fast_options());
    drpc_channel_stats st;
    CHECK_RC(drpc_channel_get_stats(ch, &st), DRPC_OK);
    CHECK(st.attempts == 0 && st.ready_endpoints == 0); /* lazy */
    CHECK_RC(drpc_channel_ready(ch, 5000, NULL), DRPC_OK);
    /* Wait for all three, so the split is exact. */
    for (int i = 0; i < 500; i++) {
        CHECK_RC(drpc_channel_get_stats(ch, &st), DRPC_OK);
        if (st.ready_endpoints == 3) break;
        sleep_ms(10);
    }
    CHECK(st.endpoints == 3 && st.ready_endpoints == 3);
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < 300; i++) {
        int w = who(ch, NULL, DRPC_WAIT_DEFAULT, 5000, NULL);
        CHECK(w >= 0);
        if (w >= 0) counts[w]++;
    }
    for (int i = 0; i < 3; i++) CHECK(counts[i] == 100);
    CHECK_RC(drpc_channel_get_stats(ch, &st), DRPC_OK);
    CHECK(st.attempts >= 300 && st.retries == 0);
    drpc_channel_free(ch);
}

static void test_fail_fast_and_wait_for_ready(void) {
    /* A port nobody listens on: server 0 bound and freed. */
    test_server gone;
    start(&gone, "gone", "127.0.0.1:0");
    char addr[64];
    snprintf(addr, sizeof addr, "%s", gone.addr);
    stop(&gone);

    drpc_channel *ch = new_channel(addr, fast_options());
    drpc_status rc;
    double t0 = now_s();
    CHECK(who(ch, NULL, DRPC_WAIT_DEFAULT, 5000, &rc) == -1);
    CHECK(rc == DRPC_UNAVAILABLE);
    CHECK(now_s() - t0 < 2.0);
    CHECK(who(ch, NULL, DRPC_WAIT_FOR_READY, 200, &rc) == -1);
    CHECK(rc == DRPC_DEADLINE_EXCEEDED);
    CHECK(who(ch, NULL, 5, 200, &rc) == -1);
    CHECK(rc == DRPC_BAD_ARGUMENT);
    /* The server comes back on the same port: used again. */
    test_server back;
    start(&back, "back", addr);
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_channel_unary(ch, "/t/Who", NULL, 0, NULL, 5000, DRPC_WAIT_FOR_READY, &b, NULL), DRPC_OK);
    CHECK(b && drpc_buffer_len(b) == 4 && memcmp(drpc_buffer_data(b), "back", 4) == 0);
    drpc_buffer_free(b);
    drpc_channel_free(ch);
    stop(&back);
}

/* A server reporting NOT_SERVING gets no new calls; then it shuts down,
 * and no call fails. */
static void test_health_drain(void) {
    test_server s[2];
    start(&s[0], "h0", "127.0.0.1:0");
    start(&s[1], "h1", "127.0.0.1:0");
    char target[160];
    snprintf(target, sizeof target, "ipv4:%s,%s", s[0].addr, s[1].addr);
    drpc_channel_options *o = fast_options();
    CHECK_RC(drpc_channel_options_set_health_check(o, ""), DRPC_OK);
    CHECK_RC(drpc_channel_options_set_retry(o, 1, 10, 10), DRPC_OK); /* no retries: draining alone must do it */
    drpc_channel *ch = new_channel(target, o);
    CHECK_RC(drpc_channel_ready(ch, 5000, NULL), DRPC_OK);
    drpc_channel_stats st;
    for (int i = 0; i < 500; i++) {
        drpc_channel_get_stats(ch, &st);
        if (st.ready_endpoints == 2) break;
        sleep_ms(10);
    }
    CHECK(st.ready_endpoints == 2);
    CHECK_RC(drpc_health_shutdown(s[0].health), DRPC_OK);
    for (int i = 0; i < 500; i++) {
        drpc_channel_get_stats(ch, &st);
        if (st.ready_endpoints == 1) break;
        sleep_ms(10);
    }
    CHECK(st.ready_endpoints == 1);
    for (int i = 0; i < 50; i++) {
        drpc_buffer *b = NULL;
        CHECK_RC(drpc_channel_unary(ch, "/t/Who", NULL, 0, NULL, 5000, DRPC_WAIT_DEFAULT, &b, NULL), DRPC_OK);
        CHECK(b && drpc_buffer_len(b) == 2 && memcmp(drpc_buffer_data(b), "h1", 2) == 0);
        drpc_buffer_free(b);
    }
    CHECK_RC(drpc_server_shutdown(s[0].srv, 1000, NULL), DRPC_OK);
    for (int i = 0; i < 50; i++) {
        drpc_status rc;
        who(ch, NULL, DRPC_WAIT_DEFAULT, 5000, &rc);
        CHECK(rc == DRPC_OK);
    }
    drpc_channel_free(ch);
    stop(&s[0]);
    stop(&s[1]);
}

/* ------------------------------------------------------------------ */
/* Races. */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, cancelled, other;
} async_tally;

static void on_done(void *ud, drpc_call *call, drpc_status status, drpc_buffer *resp, drpc_error *err) {
    async_tally *t = (async_tally *)ud;
    drpc_buffer_free(resp);
    drpc_error_free(err);
    drpc_call_free(call);
    pthread_mutex_lock(&t->mu);
    if (status == DRPC_OK) t->ok++;
    else if (status == DRPC_CANCELED) t->cancelled++;
    else t->other++;
    t->done++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Asynchronous calls, half of them cancelled at once, and the channel freed
 * while they run: every callback runs exactly once, nothing leaks. */
static void race_async_cancel_and_free(int iters) {
    for (int it = 0; it < iters; it++) {
        async_tally t = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};
        drpc_channel *ch = new_channel(TARGET, fast_options());
        enum { N = 8 };
        for (int i = 0; i < N; i++) {
            drpc_call *call = NULL;
            CHECK_RC(drpc_channel_unary_async(ch, "/t/Who", (const uint8_t *)"2", 1, NULL, 5000,
                                              DRPC_WAIT_FOR_READY, on_done, &t, (i % 2) ? &call : NULL, NULL),
                     DRPC_OK);
            if (call) drpc_call_cancel(call);
        }
        drpc_channel_free(ch);
        pthread_mutex_lock(&t.mu);
        while (t.done < N) pthread_cond_wait(&t.cv, &t.mu);
        pthread_mutex_unlock(&t.mu);
        CHECK(t.other == 0);
        CHECK(t.ok >= N / 2 && t.ok + t.cancelled == N);
    }
}

typedef struct {
    drpc_channel *ch;
    int failures;
} caller_arg;

static void *caller(void *p) {
    caller_arg *a = (caller_arg *)p;
    for (int i = 0; i < 5; i++) {
        drpc_status rc;
        who(a->ch, NULL, DRPC_WAIT_DEFAULT, 5000, &rc);
        if (rc != DRPC_OK) a->failures++;
    }
    return NULL;
}

/* Blocking calls from several threads on one channel while another
 * channel is created and freed: no call fails. */
static void race_threads_on_one_channel(int iters) {
    drpc_channel *ch = new_channel(TARGET, fast_options());
    for (int it = 0; it < iters; it++) {
        enum { T = 4 };
        pthread_t th[T];
        caller_arg args[T];
        for (int i = 0; i < T; i++) {
            args[i].ch = ch;
            args[i].failures = 0;
            pthread_create(&th[i], NULL, caller, &args[i]);
        }
        drpc_channel *other = new_channel(TARGET, fast_options());
        who(other, NULL, DRPC_WAIT_DEFAULT, 5000, NULL);
        drpc_channel_free(other);
        for (int i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            CHECK(args[i].failures == 0);
        }
    }
    drpc_channel_free(ch);
}

/* ------------------------------------------------------------------ */

static int passed, failed;

static void run(const char *name, void (*f)(void)) {
    int before = check_failures;
    f();
    if (check_failures == before) {
        printf("ok %s\n", name);
        passed++;
    } else {
        printf("not ok %s\n", name);
        failed++;
    }
    fflush(stdout);
}

static int ITERS = 100;
static void race1(void) { race_async_cancel_and_free(ITERS); }
static void race2(void) { race_threads_on_one_channel(ITERS / 4 + 1); }

int main(int argc, char **argv) {
    if (argc > 1) ITERS = atoi(argv[1]);
    const char *names[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) start(&SERVERS[i], names[i], "127.0.0.1:0");
    snprintf(TARGET, sizeof TARGET, "ipv4:%s,%s,%s", SERVERS[0].addr, SERVERS[1].addr, SERVERS[2].addr);

    run("options_errors", test_options_errors);
    run("round_robin_split", test_round_robin_split);
    run("fail_fast_and_wait_for_ready", test_fail_fast_and_wait_for_ready);
    run("health_drain", test_health_drain);
    run("race_async_cancel_and_free", race1);
    run("race_threads_on_one_channel", race2);

    for (int i = 0; i < 3; i++) stop(&SERVERS[i]);
    /* Every handle released. */
    sleep_ms(100);
    if (drpc_live_handles() != 0) {
        printf("not ok no_live_handles (%zu)\n", drpc_live_handles());
        failed++;
    } else {
        printf("ok no_live_handles\n");
        passed++;
    }
    printf("channel: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
