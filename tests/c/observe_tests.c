/*
 * Tests of libdrpc's observability API: server and client interceptors
 * (order, short-circuit rejection, metadata changes, outcome values, stream
 * messages), deadlines (drpc-timeout cancels a sleeping handler, the
 * server's cap and ignore options, inheritance by a handler's own calls),
 * trace context, metrics after a scripted workload (exact counts), handler
 * failures logged at ERROR with rpc and peer through drpc_set_log_callback,
 * and NULL / wrong / stale handles. Then the races (ITERS times each, argv[1],
 * default 100): interceptors added while the server starts listening,
 * metrics read while calls run and the server is freed, call-info handles
 * used after their call ended, intercepted client streams freed while
 * another thread receives, the log callback replaced while events flow.
 *
 * Meant to run under valgrind (tests/c/run.sh), which must report nothing.
 * Prints "ok NAME" / "not ok NAME" per test and "observe: N passed, M
 * failed" last.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drpc.h"

static atomic_int check_failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            atomic_fetch_add(&check_failures, 1);                                      \
        }                                                                              \
    } while (0)

#define CHECK_RC(expr, want)                                                                             \
    do {                                                                                                 \
        drpc_status rc_ = (expr);                                                                        \
        if (rc_ != (drpc_status)(want)) {                                                                \
            fprintf(stderr, "  %s:%d: %s returned %s (%u), want %s (%u)\n", __FILE__, __LINE__, #expr,   \
                    drpc_status_name(rc_), (unsigned)rc_, drpc_status_name(want), (unsigned)(want));     \
            atomic_fetch_add(&check_failures, 1);                                                        \
        }                                                                                                \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static const char *TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/* ------------------------------------------------------------------ */
/* A log of interceptor and handler events, shared by the tests.       */

typedef struct {
    pthread_mutex_t mu;
    char text[1024];
    /* The last `after` seen. */
    uint64_t code, duration_us, sent, received;
    int afters;
    int messages_sent, messages_received;
    size_t message_bytes;
    /* What the first interceptor's `before` saw. */
    char rpc[64], peer[128], meta[64], traceparent[64];
    int64_t deadline_us;
} event_log;

static event_log LOG = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, 0, 0, 0, 0, 0, 0, {0}, {0}, {0}, {0}, 0};

static void log_reset(void) {
    pthread_mutex_lock(&LOG.mu);
    LOG.text[0] = 0;
    LOG.code = LOG.duration_us = LOG.sent = LOG.received = 0;
    LOG.afters = LOG.messages_sent = LOG.messages_received = 0;
    LOG.message_bytes = 0;
    LOG.rpc[0] = LOG.peer[0] = LOG.meta[0] = LOG.traceparent[0] = 0;
    LOG.deadline_us = -2;
    pthread_mutex_unlock(&LOG.mu);
}

static void log_add(const char *s) {
    pthread_mutex_lock(&LOG.mu);
    size_t n = strlen(LOG.text);
    snprintf(LOG.text + n, sizeof LOG.text - n, "%s", s);
    pthread_mutex_unlock(&LOG.mu);
}

static int log_is(const char *want) {
    pthread_mutex_lock(&LOG.mu);
    int ok = strcmp(LOG.text, want) == 0;
    if (!ok) fprintf(stderr, "  log is \"%s\", want \"%s\"\n", LOG.text, want);
    pthread_mutex_unlock(&LOG.mu);
    return ok;
}

/* Waits up to 5 s for `n` afters (server afters run after the client got
 * its answer). */
static int wait_afters(int n) {
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&LOG.mu);
        int a = LOG.afters;
        pthread_mutex_unlock(&LOG.mu);
        if (a >= n) return 1;
        sleep_ms(10);
    }
    return 0;
}

/* One interceptor of a chain: its name letter is its userdata. */
typedef struct {
    char name;
    int reject;      /* reject calls without an "authorization" key */
    int set_user;    /* set "x-user" from the token and drop "authorization" */
    int record;      /* record what before sees into LOG */
} icpt_conf;

static uint32_t ic_before(void *ud, drpc_call_info *call) {
    icpt_conf *c = (icpt_conf *)ud;
    char s[4] = {'B', c->name, 0};
    log_add(s);
    if (c->record) {
        pthread_mutex_lock(&LOG.mu);
        const char *rpc = drpc_call_info_rpc(call);
        const char *peer = drpc_call_info_peer(call);
        const char *m = drpc_call_info_metadata(call, "x-test");
        const char *tp = NULL;
        CHECK_RC(drpc_call_info_traceparent(call, &tp), DRPC_OK);
        snprintf(LOG.rpc, sizeof LOG.rpc, "%s", rpc ? rpc : "");
        snprintf(LOG.peer, sizeof LOG.peer, "%s", peer ? peer : "");
        snprintf(LOG.meta, sizeof LOG.meta, "%s", m ? m : "");
        snprintf(LOG.traceparent, sizeof LOG.traceparent, "%s", tp ? tp : "");
        CHECK_RC(drpc_call_info_deadline(call, &LOG.deadline_us), DRPC_OK);
        pthread_mutex_unlock(&LOG.mu);
    }
    if (c->reject && !drpc_call_info_metadata(call, "authorization")) {
        CHECK_RC(drpc_call_info_reject(call, DRPC_UNAUTHENTICATED, "no token"), DRPC_OK);
        return DRPC_OK; /* the recorded rejection wins */
    }
    if (c->set_user) {
        const char *tok = drpc_call_info_metadata(call, "authorization");
        if (tok) {
            CHECK_RC(drpc_call_info_set_metadata(call, "x-user", tok), DRPC_OK);
            /* The borrowed string stays valid after the change. */
            CHECK(strlen(tok) > 0);
            CHECK_RC(drpc_call_info_set_metadata(call, "authorization", NULL), DRPC_OK);
            CHECK(drpc_call_info_metadata(call, "authorization") == NULL);
        }
    }
    return DRPC_OK;
}

static void ic_message(void *ud, drpc_call_info *call, uint32_t direction, const uint8_t *data, size_t len) {
    (void)ud;
    (void)call;
    (void)data;
    pthread_mutex_lock(&LOG.mu);
    if (direction == DRPC_DIRECTION_SENT) LOG.messages_sent++;
    else LOG.messages_received++;
    LOG.message_bytes += len;
    pthread_mutex_unlock(&LOG.mu);
}

static void ic_after(void *ud, drpc_call_info *call, uint64_t code, uint64_t duration_us, uint64_t sent,
                     uint64_t received) {
    icpt_conf *c = (icpt_conf *)ud;
    char s[4] = {'A', c->name, 0};
    /* Too late to change anything. */
    CHECK_RC(drpc_call_info_set_metadata(call, "k", "v"), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_call_info_reject(call, 7, "late"), DRPC_FAILED_PRECONDITION);
    CHECK(drpc_call_info_rpc(call) != NULL);
    log_add(s);
    pthread_mutex_lock(&LOG.mu);
    LOG.code = code;
    LOG.duration_us = duration_us;
    LOG.sent = sent;
    LOG.received = received;
    LOG.afters++;
    pthread_mutex_unlock(&LOG.mu);
}

static drpc_interceptor interceptor(icpt_conf *c) {
    drpc_interceptor ic = {ic_before, ic_message, ic_after, c};
    return ic;
}

/* ------------------------------------------------------------------ */
/* Handlers.                                                           */

/* Logs "H" and answers with "<x-user>|<authorization or ->". */
static uint32_t h_whoami(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    log_add("H");
    const char *user = drpc_server_call_metadata(call, "x-user");
    const char *auth = drpc_server_call_metadata(call, "authorization");
    char out[256];
    snprintf(out, sizeof out, "%s|%s", user ? user : "-", auth ? auth : "-");
    return drpc_server_call_respond(call, (const uint8_t *)out, strlen(out));
}

static uint32_t h_not_found(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)call;
    (void)req;
    (void)len;
    return DRPC_NOT_FOUND;
}

/* Answers with the value of the metadata key named by the request. */
static uint32_t h_echo_meta(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    char key[64] = {0};
    memcpy(key, req, len < 63 ? len : 63);
    const char *v = drpc_server_call_metadata(call, key);
    if (!v) v = "";
    return drpc_server_call_respond(call, (const uint8_t *)v, strlen(v));
}

typedef struct {
    pthread_mutex_t mu;
    double waited_s;      /* how long the last sleeper waited */
    int64_t deadline_us;  /* the deadline it saw */
    int cancelled;
} sleeper_state;

static sleeper_state SLEEP = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};

/* Sleeps up to 5 s, waking when the call is cancelled (its deadline). */
static uint32_t h_sleep(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    int64_t d = -2;
    CHECK_RC(drpc_server_call_deadline(call, &d), DRPC_OK);
    double t0 = now_s();
    int cancelled = drpc_server_call_wait_cancelled(call, 5000);
    pthread_mutex_lock(&SLEEP.mu);
    SLEEP.waited_s = now_s() - t0;
    SLEEP.deadline_us = d;
    SLEEP.cancelled = cancelled;
    pthread_mutex_unlock(&SLEEP.mu);
    return drpc_server_call_respond(call, (const uint8_t *)"late", 4);
}

/* Answers with "<deadline us>|<traceparent>" as the handler sees them. */
static uint32_t h_deadline(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    int64_t d = -2;
    const char *tp = NULL;
    CHECK_RC(drpc_server_call_deadline(call, &d), DRPC_OK);
    CHECK_RC(drpc_server_call_traceparent(call, &tp), DRPC_OK);
    char out[128];
    snprintf(out, sizeof out, "%lld|%s", (long long)d, tp ? tp : "");
    return drpc_server_call_respond(call, (const uint8_t *)out, strlen(out));
}

/* Makes its own calls to /o/EchoMeta on the address in userdata, with no
 * deadline or metadata of its own: answers with
 * "<drpc-timeout sent>|<traceparent sent>|<own traceparent>". */
static uint32_t h_forward(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)req;
    (void)len;
    const char *addr = (const char *)ud;
    drpc_conn *c = NULL;
    CHECK_RC(drpc_conn_dial(addr, NULL, &c, NULL), DRPC_OK);
    char sent_timeout[64] = "", sent_tp[64] = "";
    const char *keys[2] = {"drpc-timeout", "traceparent"};
    char *outs[2] = {sent_timeout, sent_tp};
    for (int i = 0; i < 2; i++) {
        drpc_buffer *b = NULL;
        CHECK_RC(drpc_conn_unary(c, "/o/EchoMeta", (const uint8_t *)keys[i], strlen(keys[i]), NULL, 0, &b, NULL),
                 DRPC_OK);
        if (b) snprintf(outs[i], 64, "%.*s", (int)drpc_buffer_len(b), (const char *)drpc_buffer_data(b));
        drpc_buffer_free(b);
    }
    drpc_conn_free(c);
    const char *own = NULL;
    CHECK_RC(drpc_server_call_traceparent(call, &own), DRPC_OK);
    char out[256];
    snprintf(out, sizeof out, "%s|%s|%s", sent_timeout, sent_tp, own ? own : "");
    return drpc_server_call_respond(call, (const uint8_t *)out, strlen(out));
}

/* Streams: echoes every message, then ends cleanly. */
static uint32_t h_echo_stream(void *ud, drpc_stream *s) {
    (void)ud;
    int64_t d = -2;
    CHECK_RC(drpc_stream_deadline(s, &d), DRPC_OK);
    for (;;) {
        drpc_buffer *m = NULL;
        drpc_status rc = drpc_stream_recv(s, &m, NULL);
        if (rc == DRPC_END) return DRPC_OK;
        if (rc != DRPC_OK) return rc;
        rc = drpc_stream_send(s, drpc_buffer_data(m), drpc_buffer_len(m), NULL);
        drpc_buffer_free(m);
        if (rc != DRPC_OK) return rc;
    }
}

static char FORWARD_TARGET[256];

static void register_all(drpc_server *srv) {
    CHECK_RC(drpc_server_register_unary(srv, "/o/WhoAmI", h_whoami, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/o/NotFound", h_not_found, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/o/EchoMeta", h_echo_meta, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/o/Sleep", h_sleep, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/o/Deadline", h_deadline, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/o/Forward", h_forward, FORWARD_TARGET, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/o/EchoStream", h_echo_stream, NULL, NULL), DRPC_OK);
}

static drpc_server *serve(char *bound, size_t n, void (*configure)(drpc_server *)) {
    drpc_server *srv = drpc_server_new();
    register_all(srv);
    if (configure) configure(srv);
    char *b = NULL;
    CHECK_RC(drpc_server_listen(srv, "127.0.0.1:0", &b, NULL), DRPC_OK);
    snprintf(bound, n, "%s", b ? b : "");
    drpc_string_free(b);
    return srv;
}

static drpc_conn *dial_with(const char *addr, drpc_conn_options *o) {
    drpc_conn *c = NULL;
    drpc_error *err = NULL;
    CHECK_RC(drpc_conn_dial(addr, o, &c, &err), DRPC_OK);
    if (err) fprintf(stderr, "  dial %s: %s\n", addr, drpc_error_message(err));
    drpc_error_free(err);
    return c;
}

/* A unary call with optional metadata pairs (NULL-terminated list); the
 * response as a malloc'ed string in *out (NULL on failure), the error
 * message in why (if non-NULL). */
static drpc_status call(drpc_conn *c, const char *rpc, const char *req, uint64_t timeout_ms, const char **md,
                        char **out, char *why, size_t why_len) {
    drpc_metadata *m = NULL;
    if (md) {
        m = drpc_metadata_new();
        for (int i = 0; md[i]; i += 2) CHECK_RC(drpc_metadata_set(m, md[i], md[i + 1]), DRPC_OK);
    }
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc =
        drpc_conn_unary(c, rpc, (const uint8_t *)req, req ? strlen(req) : 0, m, timeout_ms, &b, &err);
    if (out) {
        *out = NULL;
        if (b) {
            size_t n = drpc_buffer_len(b);
            *out = (char *)malloc(n + 1);
            if (n) memcpy(*out, drpc_buffer_data(b), n);
            (*out)[n] = 0;
        }
    }
    if (why) snprintf(why, why_len, "%s", err ? drpc_error_message(err) : "");
    drpc_error_free(err);
    drpc_buffer_free(b);
    drpc_metadata_free(m);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Server interceptors.                                                */

static icpt_conf SC1 = {'1', 0, 0, 1}, SC2 = {'2', 1, 1, 0}, SC3 = {'3', 0, 0, 0};

static void add_server_chain(drpc_server *srv) {
    drpc_interceptor a = interceptor(&SC1), b = interceptor(&SC2), c = interceptor(&SC3);
    CHECK_RC(drpc_server_add_interceptor(srv, &a), DRPC_OK);
    CHECK_RC(drpc_server_add_interceptor(srv, &b), DRPC_OK);
    CHECK_RC(drpc_server_add_interceptor(srv, &c), DRPC_OK);
}

static void test_server_interceptors(void) {
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, add_server_chain);
    drpc_conn *c = dial_with(addr, NULL);

    /* Order, metadata changes seen by the handler, what `before` sees. */
    log_reset();
    char *out = NULL;
    const char *md[] = {"authorization", "alice", "x-test", "v1", "traceparent", TRACEPARENT, NULL};
    CHECK_RC(call(c, "/o/WhoAmI", "12345", 5000, md, &out, NULL, 0), DRPC_OK);
    CHECK(out && strcmp(out, "alice|-") == 0);
    CHECK(wait_afters(3));
    CHECK(log_is("B1B2B3HA3A2A1"));
    pthread_mutex_lock(&LOG.mu);
    CHECK(strcmp(LOG.rpc, "/o/WhoAmI") == 0);
    CHECK(strncmp(LOG.peer, "127.0.0.1:", 10) == 0);
    CHECK(strcmp(LOG.meta, "v1") == 0);
    CHECK(LOG.deadline_us > 3000000 && LOG.deadline_us <= 5000000);
    /* The server span: the client's trace id, a new span id. */
    CHECK(strlen(LOG.traceparent) == 55 && strncmp(LOG.traceparent, TRACEPARENT, 36) == 0 &&
          strcmp(LOG.traceparent, TRACEPARENT) != 0);
    CHECK(LOG.code == 0);
    CHECK(LOG.received == 5 && LOG.sent == strlen("alice|-"));
    CHECK(LOG.messages_received == 3 && LOG.messages_sent == 3); /* each of 3 interceptors saw both */
    CHECK(LOG.duration_us > 0 && LOG.duration_us < 5000000);
    pthread_mutex_unlock(&LOG.mu);
    free(out);

    /* Short-circuit: the second rejects, the third and the handler never run,
     * the afters of the two that ran do, with the code. */
    log_reset();
    char why[128];
    CHECK_RC(call(c, "/o/WhoAmI", "x", 0, NULL, &out, why, sizeof why), DRPC_UNAUTHENTICATED);
    CHECK(out == NULL);
    CHECK(strcmp(why, "no token") == 0);
    CHECK(wait_afters(2));
    CHECK(log_is("B1B2A2A1"));
    CHECK(LOG.code == DRPC_UNAUTHENTICATED);
    CHECK(LOG.deadline_us == -1); /* no client deadline */
    CHECK(LOG.traceparent[0] == 0);

    /* A failing handler's code reaches the afters. */
    log_reset();
    const char *auth[] = {"authorization", "bob", NULL};
    CHECK_RC(call(c, "/o/NotFound", "", 0, auth, NULL, NULL, 0), DRPC_NOT_FOUND);
    CHECK(wait_afters(3));
    CHECK(LOG.code == DRPC_NOT_FOUND);

    /* Streams: every message observed, bytes counted. */
    log_reset();
    drpc_metadata *m = drpc_metadata_new();
    CHECK_RC(drpc_metadata_set(m, "authorization", "carol"), DRPC_OK);
    drpc_stream *s = NULL;
    CHECK_RC(drpc_conn_stream(c, "/o/EchoStream", m, 0, &s, NULL), DRPC_OK);
    drpc_metadata_free(m);
    for (int i = 0; i < 4; i++) {
        CHECK_RC(drpc_stream_send(s, (const uint8_t *)"abc", 3, NULL), DRPC_OK);
        drpc_buffer *b = NULL;
        CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
        drpc_buffer_free(b);
    }
    CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_END);
    drpc_stream_free(s);
    CHECK(wait_afters(3));
    CHECK(log_is("B1B2B3A3A2A1"));
    CHECK(LOG.code == 0 && LOG.sent == 12 && LOG.received == 12);
    CHECK(LOG.messages_sent == 12 && LOG.messages_received == 12);

    /* Not after listen; bad arguments. */
    drpc_interceptor ic = interceptor(&SC3), empty = {NULL, NULL, NULL, NULL};
    CHECK_RC(drpc_server_add_interceptor(srv, &ic), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_add_interceptor(srv, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_add_interceptor(NULL, &ic), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_add_interceptor((drpc_server *)c, &ic), DRPC_BAD_ARGUMENT);
    drpc_server *fresh = drpc_server_new();
    CHECK_RC(drpc_server_add_interceptor(fresh, &empty), DRPC_BAD_ARGUMENT);
    drpc_server_free(fresh);

    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
}

/* ------------------------------------------------------------------ */
/* Client interceptors.                                                */

static icpt_conf CC1 = {'x', 0, 0, 1}, CC2 = {'y', 1, 0, 0};

/* Adds a header on the way out. */
static uint32_t ic_add_token(void *ud, drpc_call_info *call) {
    (void)ud;
    log_add("T");
    if (drpc_call_info_metadata(call, "x-no-token")) return DRPC_OK;
    return drpc_call_info_set_metadata(call, "authorization", "dave");
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    drpc_status status;
} async_done;

static void on_async(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    async_done *a = (async_done *)ud;
    drpc_buffer_free(resp);
    drpc_error_free(err);
    drpc_call_free(call);
    pthread_mutex_lock(&a->mu);
    a->done = 1;
    a->status = st;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void test_client_interceptors(void) {
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, NULL);
    drpc_conn_options *o = drpc_conn_options_new();
    drpc_interceptor a = interceptor(&CC1), t = {ic_add_token, NULL, NULL, NULL}, b = interceptor(&CC2);
    CHECK_RC(drpc_conn_options_add_interceptor(o, &a), DRPC_OK);
    CHECK_RC(drpc_conn_options_add_interceptor(o, &t), DRPC_OK);
    CHECK_RC(drpc_conn_options_add_interceptor(o, &b), DRPC_OK);
    CHECK_RC(drpc_conn_options_add_interceptor(o, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_add_interceptor(NULL, &a), DRPC_BAD_ARGUMENT);
    drpc_conn *c = dial_with(addr, o);
    drpc_conn_options_free(o);

    /* The token added by the second reaches the server; the third sees it. */
    log_reset();
    char *out = NULL;
    const char *md[] = {"x-test", "v2", NULL};
    CHECK_RC(call(c, "/o/WhoAmI", "hello", 2000, md, &out, NULL, 0), DRPC_OK);
    CHECK(out && strcmp(out, "-|dave") == 0);
    CHECK(log_is("BxTByHAyAx"));
    CHECK(strcmp(LOG.rpc, "/o/WhoAmI") == 0);
    CHECK(strcmp(LOG.peer, addr) == 0);
    CHECK(strcmp(LOG.meta, "v2") == 0);
    CHECK(LOG.deadline_us > 1000000 && LOG.deadline_us <= 2000000);
    CHECK(LOG.code == 0 && LOG.sent == 5 && LOG.received == strlen("-|dave"));
    free(out);

    /* Rejected on the client: nothing is sent (the handler does not run). */
    log_reset();
    const char *no[] = {"x-no-token", "1", NULL};
    char why[128];
    CHECK_RC(call(c, "/o/WhoAmI", "hello", 0, no, &out, why, sizeof why), DRPC_UNAUTHENTICATED);
    CHECK(strcmp(why, "no token") == 0);
    CHECK(log_is("BxTByAyAx"));
    CHECK(LOG.code == DRPC_UNAUTHENTICATED && LOG.sent == 0);

    /* Asynchronous calls: the rejection reaches the callback. */
    async_done ad = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DRPC_OK};
    drpc_metadata *m = drpc_metadata_new();
    CHECK_RC(drpc_metadata_set(m, "x-no-token", "1"), DRPC_OK);
    CHECK_RC(drpc_conn_unary_async(c, "/o/WhoAmI", NULL, 0, m, 0, on_async, &ad, NULL, NULL), DRPC_OK);
    drpc_metadata_free(m);
    pthread_mutex_lock(&ad.mu);
    while (!ad.done) pthread_cond_wait(&ad.cv, &ad.mu);
    pthread_mutex_unlock(&ad.mu);
    CHECK(ad.status == DRPC_UNAUTHENTICATED);
    ad.done = 0;
    log_reset();
    CHECK_RC(drpc_conn_unary_async(c, "/o/NotFound", NULL, 0, NULL, 0, on_async, &ad, NULL, NULL), DRPC_OK);
    pthread_mutex_lock(&ad.mu);
    while (!ad.done) pthread_cond_wait(&ad.cv, &ad.mu);
    pthread_mutex_unlock(&ad.mu);
    CHECK(ad.status == DRPC_NOT_FOUND);
    CHECK(wait_afters(2));
    CHECK(LOG.code == DRPC_NOT_FOUND);

    /* A stream: after runs once, at its end. */
    log_reset();
    drpc_stream *s = NULL;
    CHECK_RC(drpc_conn_stream(c, "/o/EchoStream", NULL, 0, &s, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_send(s, (const uint8_t *)"12345678", 8, NULL), DRPC_OK);
    drpc_buffer *buf = NULL;
    CHECK_RC(drpc_stream_recv(s, &buf, NULL), DRPC_OK);
    drpc_buffer_free(buf);
    CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_recv(s, &buf, NULL), DRPC_END);
    CHECK(LOG.afters == 2 && LOG.code == 0 && LOG.sent == 8 && LOG.received == 8);
    drpc_stream_free(s);
    CHECK(LOG.afters == 2);
    /* A stream freed unfinished: after reports a cancel. */
    log_reset();
    CHECK_RC(drpc_conn_stream(c, "/o/EchoStream", NULL, 0, &s, NULL), DRPC_OK);
    drpc_stream_free(s);
    CHECK(LOG.afters == 2 && LOG.code == DRPC_CANCELED);

    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
}

/* Channels take the client interceptors of their conn options: once per
 * channel call, metadata changes sent, rejections before anything is sent. */
static void test_channel_interceptors(void) {
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, NULL);
    drpc_conn_options *co = drpc_conn_options_new();
    drpc_interceptor a = interceptor(&CC1), t = {ic_add_token, NULL, NULL, NULL}, b = interceptor(&CC2);
    CHECK_RC(drpc_conn_options_add_interceptor(co, &a), DRPC_OK);
    CHECK_RC(drpc_conn_options_add_interceptor(co, &t), DRPC_OK);
    CHECK_RC(drpc_conn_options_add_interceptor(co, &b), DRPC_OK);
    drpc_channel_options *o = drpc_channel_options_new();
    CHECK_RC(drpc_channel_options_set_conn_options(o, co), DRPC_OK);
    drpc_conn_options_free(co);
    char target[300];
    snprintf(target, sizeof target, "ipv4:%s", addr);
    drpc_channel *ch = NULL;
    CHECK_RC(drpc_channel_new(target, o, &ch, NULL), DRPC_OK);
    drpc_channel_options_free(o);

    log_reset();
    drpc_buffer *resp = NULL;
    CHECK_RC(drpc_channel_unary(ch, "/o/WhoAmI", (const uint8_t *)"hi", 2, NULL, 2000, DRPC_WAIT_FOR_READY, &resp, NULL),
             DRPC_OK);
    CHECK(resp && drpc_buffer_len(resp) == 6 && memcmp(drpc_buffer_data(resp), "-|dave", 6) == 0);
    drpc_buffer_free(resp);
    CHECK(log_is("BxTByHAyAx"));
    CHECK(strcmp(LOG.peer, target) == 0);
    CHECK(LOG.code == 0 && LOG.sent == 2 && LOG.received == 6);

    log_reset();
    drpc_metadata *m = drpc_metadata_new();
    CHECK_RC(drpc_metadata_set(m, "x-no-token", "1"), DRPC_OK);
    CHECK_RC(drpc_channel_unary(ch, "/o/WhoAmI", NULL, 0, m, 0, DRPC_WAIT_DEFAULT, &resp, NULL), DRPC_UNAUTHENTICATED);
    CHECK(log_is("BxTByAyAx"));

    async_done ad = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DRPC_OK};
    CHECK_RC(drpc_channel_unary_async(ch, "/o/WhoAmI", NULL, 0, m, 0, DRPC_WAIT_DEFAULT, on_async, &ad, NULL, NULL),
             DRPC_OK);
    drpc_metadata_free(m);
    pthread_mutex_lock(&ad.mu);
    while (!ad.done) pthread_cond_wait(&ad.cv, &ad.mu);
    pthread_mutex_unlock(&ad.mu);
    CHECK(ad.status == DRPC_UNAUTHENTICATED);

    log_reset();
    drpc_stream *s = NULL;
    CHECK_RC(drpc_channel_stream(ch, "/o/EchoStream", NULL, 0, DRPC_WAIT_DEFAULT, &s, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_send(s, (const uint8_t *)"abc", 3, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
    drpc_buffer *msg = NULL;
    CHECK_RC(drpc_stream_recv(s, &msg, NULL), DRPC_OK);
    drpc_buffer_free(msg);
    CHECK_RC(drpc_stream_recv(s, &msg, NULL), DRPC_END);
    drpc_stream_free(s);
    CHECK(LOG.afters == 2 && LOG.code == 0 && LOG.sent == 3 && LOG.received == 3);

    drpc_channel_free(ch);
    drpc_server_free(srv);
}

/* ------------------------------------------------------------------ */
/* Deadlines and trace context.                                        */

static void cap_deadline(drpc_server *srv) { CHECK_RC(drpc_server_set_max_deadline(srv, 200), DRPC_OK); }
static void ignore_deadlines(drpc_server *srv) { CHECK_RC(drpc_server_set_ignore_deadlines(srv, true), DRPC_OK); }

static int64_t deadline_seen(drpc_conn *c, uint64_t timeout_ms, const char **md, char *tp, size_t tp_len) {
    char *out = NULL;
    CHECK_RC(call(c, "/o/Deadline", "", timeout_ms, md, &out, NULL, 0), DRPC_OK);
    long long d = -3;
    if (out) {
        char *bar = strchr(out, '|');
        d = strtoll(out, NULL, 10);
        if (tp) snprintf(tp, tp_len, "%s", bar ? bar + 1 : "");
    }
    free(out);
    return (int64_t)d;
}

static void test_deadlines(void) {
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, NULL);
    drpc_conn *c = dial_with(addr, NULL);

    /* 100 ms drpc-timeout, set by hand, no client deadline: the sleeping
     * handler is cancelled within 150 ms and the caller sees code 4. */
    const char *md[] = {"drpc-timeout", "100m", NULL};
    char why[128];
    double t0 = now_s();
    CHECK_RC(call(c, "/o/Sleep", "", 0, md, NULL, why, sizeof why), DRPC_DEADLINE_EXCEEDED);
    double took = now_s() - t0;
    CHECK(took < 1.0);
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&SLEEP.mu);
        int done = SLEEP.cancelled;
        pthread_mutex_unlock(&SLEEP.mu);
        if (done) break;
        sleep_ms(10);
    }
    pthread_mutex_lock(&SLEEP.mu);
    CHECK(SLEEP.cancelled);
    CHECK(SLEEP.deadline_us > 0 && SLEEP.deadline_us <= 100000);
    if (SLEEP.waited_s >= 0.150) fprintf(stderr, "  the handler waited %.3f s\n", SLEEP.waited_s);
    CHECK(SLEEP.waited_s < 0.150);
    pthread_mutex_unlock(&SLEEP.mu);

    /* The handler sees the client's timeout; none without one. */
    int64_t d = deadline_seen(c, 3000, NULL, NULL, 0);
    CHECK(d > 2000000 && d <= 3000000);
    CHECK(deadline_seen(c, 0, NULL, NULL, 0) == -1);

    /* A client's drpc-timeout can be turned off. */
    drpc_conn_options *o = drpc_conn_options_new();
    CHECK_RC(drpc_conn_options_set_send_deadline(o, false), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_send_deadline(NULL, false), DRPC_BAD_ARGUMENT);
    drpc_conn *quiet = dial_with(addr, o);
    drpc_conn_options_free(o);
    CHECK(deadline_seen(quiet, 3000, NULL, NULL, 0) == -1);
    drpc_conn_free(quiet);

    /* Trace context: the handler's span is a child of the client's. */
    const char *tpmd[] = {"traceparent", TRACEPARENT, NULL};
    char tp[128] = "";
    CHECK(deadline_seen(c, 0, tpmd, tp, sizeof tp) == -1);
    CHECK(strlen(tp) == 55 && strncmp(tp, TRACEPARENT, 36) == 0 && strcmp(tp + 36, TRACEPARENT + 36) != 0);
    const char *badtp[] = {"traceparent", "00-zz", NULL};
    deadline_seen(c, 0, badtp, tp, sizeof tp);
    CHECK(tp[0] == 0);

    /* Inheritance: the handler's own calls carry its deadline and its span. */
    snprintf(FORWARD_TARGET, sizeof FORWARD_TARGET, "%s", addr);
    char *out = NULL;
    CHECK_RC(call(c, "/o/Forward", "", 4000, tpmd, &out, NULL, 0), DRPC_OK);
    if (out) {
        char sent_timeout[64] = "", sent_tp[64] = "", own[64] = "";
        char *p1 = strchr(out, '|');
        char *p2 = p1 ? strchr(p1 + 1, '|') : NULL;
        CHECK(p1 && p2);
        if (p1 && p2) {
            snprintf(sent_timeout, sizeof sent_timeout, "%.*s", (int)(p1 - out), out);
            snprintf(sent_tp, sizeof sent_tp, "%.*s", (int)(p2 - p1 - 1), p1 + 1);
            snprintf(own, sizeof own, "%s", p2 + 1);
        }
        /* e.g. "3987654u": a positive value below 4 s, in gRPC's grammar. */
        size_t n = strlen(sent_timeout);
        CHECK(n >= 2 && n <= 9);
        if (n >= 2) {
            double v = strtod(sent_timeout, NULL), unit = 0;
            switch (sent_timeout[n - 1]) {
            case 'H': unit = 3600; break;
            case 'M': unit = 60; break;
            case 'S': unit = 1; break;
            case 'm': unit = 1e-3; break;
            case 'u': unit = 1e-6; break;
            case 'n': unit = 1e-9; break;
            }
            CHECK(v * unit > 2.0 && v * unit < 4.0);
        }
        CHECK(strcmp(sent_tp, own) == 0);
        CHECK(strncmp(own, TRACEPARENT, 36) == 0 && strcmp(own, TRACEPARENT) != 0);
    }
    free(out);

    drpc_conn_free(c);
    CHECK_RC(drpc_server_set_max_deadline(srv, 100), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_ignore_deadlines(srv, true), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);

    /* The server's cap, and ignoring deadlines. */
    srv = serve(addr, sizeof addr, cap_deadline);
    c = dial_with(addr, NULL);
    d = deadline_seen(c, 5000, NULL, NULL, 0);
    CHECK(d > 0 && d <= 200000);
    CHECK(deadline_seen(c, 0, NULL, NULL, 0) == -1);
    drpc_conn_free(c);
    drpc_server_free(srv);
    srv = serve(addr, sizeof addr, ignore_deadlines);
    c = dial_with(addr, NULL);
    CHECK(deadline_seen(c, 5000, NULL, NULL, 0) == -1);
    drpc_conn_free(c);
    drpc_server_free(srv);
    CHECK_RC(drpc_server_set_max_deadline(NULL, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_ignore_deadlines(NULL, true), DRPC_BAD_ARGUMENT);
}

/* ------------------------------------------------------------------ */
/* Metrics.                                                            */

static void test_metrics(void) {
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, NULL);
    drpc_metrics m;
    CHECK_RC(drpc_server_metrics(srv, &m), DRPC_OK);
    CHECK(m.streams_opened == 0 && m.connections_opened == 0);
    drpc_conn *c = dial_with(addr, NULL);

    /* The workload: 5 successes, 2 NOT_FOUND, 1 deadline exceeded, 1 stream
     * of 3 messages. */
    for (int i = 0; i < 5; i++) CHECK_RC(call(c, "/o/EchoMeta", "x-none", 0, NULL, NULL, NULL, 0), DRPC_OK);
    for (int i = 0; i < 2; i++) CHECK_RC(call(c, "/o/NotFound", "", 0, NULL, NULL, NULL, 0), DRPC_NOT_FOUND);
    const char *md[] = {"drpc-timeout", "50m", NULL};
    CHECK_RC(call(c, "/o/Sleep", "", 0, md, NULL, NULL, 0), DRPC_DEADLINE_EXCEEDED);
    drpc_stream *s = NULL;
    CHECK_RC(drpc_conn_stream(c, "/o/EchoStream", NULL, 0, &s, NULL), DRPC_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_RC(drpc_stream_send(s, (const uint8_t *)"m", 1, NULL), DRPC_OK);
        drpc_buffer *b = NULL;
        CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
        drpc_buffer_free(b);
    }
    CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_END);
    drpc_stream_free(s);

    /* The server counts a call in its rpc's statistics once its handler
     * returned (the sleeper returns just after its deadline): wait until
     * every stream closed and every call is counted. */
    for (int i = 0; i < 500; i++) {
        CHECK_RC(drpc_server_metrics(srv, &m), DRPC_OK);
        drpc_metrics_snapshot *snap = NULL;
        CHECK_RC(drpc_server_metrics_snapshot(srv, &snap), DRPC_OK);
        uint64_t counted = 0;
        for (size_t k = 0; k < m.rpc_count; k++) {
            drpc_rpc_stats r;
            if (drpc_metrics_snapshot_rpc(snap, k, &r) == DRPC_OK) counted += r.count;
        }
        drpc_metrics_snapshot_free(snap);
        if (m.streams_closed == 9 && counted == 9) break;
        sleep_ms(10);
    }
    CHECK(m.streams_opened == 9);
    CHECK(m.streams_closed == 9);
    CHECK(m.active_streams == 0);
    CHECK(m.streams_failed == 3);
    CHECK(m.failed_by_code[DRPC_NOT_FOUND] == 2);
    CHECK(m.failed_by_code[DRPC_DEADLINE_EXCEEDED] == 1);
    CHECK(m.failed_by_code[0] == 0 && m.failed_other_codes == 0);
    CHECK(m.connections_opened == 1 && m.active_connections == 1);
    CHECK(m.bytes_received > 0 && m.bytes_sent > 0);
    CHECK(m.rpc_count == 7); /* every registered rpc */

    drpc_metrics_snapshot *snap = NULL;
    CHECK_RC(drpc_server_metrics_snapshot(srv, &snap), DRPC_OK);
    drpc_metrics sm;
    CHECK_RC(drpc_metrics_snapshot_counters(snap, &sm), DRPC_OK);
    CHECK(sm.streams_opened == 9 && sm.rpc_count == 7);
    /* Sorted by name; the ones the workload did not call have zeros. */
    const char *names[7] = {"/o/Deadline", "/o/EchoMeta", "/o/EchoStream", "/o/Forward",
                            "/o/NotFound", "/o/Sleep",    "/o/WhoAmI"};
    const uint64_t counts[7] = {0, 5, 1, 0, 2, 1, 0}, failed[7] = {0, 0, 0, 0, 2, 1, 0};
    for (size_t i = 0; i < 7 && i < sm.rpc_count; i++) {
        drpc_rpc_stats r;
        CHECK_RC(drpc_metrics_snapshot_rpc(snap, i, &r), DRPC_OK);
        CHECK(strcmp(r.rpc, names[i]) == 0);
        CHECK(r.count == counts[i] && r.failed == failed[i]);
        CHECK(r.bucket_count >= 2);
        uint64_t total = 0;
        for (size_t k = 0; k < r.bucket_count; k++) total += r.bucket_counts[k];
        CHECK(total == counts[i]);
        for (size_t k = 1; k + 1 < r.bucket_count; k++) CHECK(r.bucket_bounds_us[k] > r.bucket_bounds_us[k - 1]);
        if (i == 5) CHECK(r.latency_sum_us >= 40000); /* the 50 ms sleeper */
    }
    drpc_rpc_stats r;
    CHECK_RC(drpc_metrics_snapshot_rpc(snap, 7, &r), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_metrics_snapshot_rpc(snap, 0, NULL), DRPC_BAD_ARGUMENT);
    drpc_metrics_snapshot_free(snap);
    CHECK_RC(drpc_metrics_snapshot_counters(snap, &sm), DRPC_BAD_ARGUMENT); /* stale */

    /* The client side of the same workload. */
    drpc_metrics cm;
    CHECK_RC(drpc_conn_metrics(c, &cm), DRPC_OK);
    CHECK(cm.streams_opened == 9 && cm.streams_closed == 9 && cm.active_streams == 0);
    CHECK(cm.streams_failed == 3 && cm.failed_by_code[DRPC_NOT_FOUND] == 2 &&
          cm.failed_by_code[DRPC_DEADLINE_EXCEEDED] == 1);
    CHECK(cm.bytes_sent == m.bytes_received && cm.bytes_received == m.bytes_sent);
    CHECK_RC(drpc_conn_metrics_snapshot(c, &snap), DRPC_OK);
    drpc_metrics_snapshot_free(snap);

    /* After shutdown the final values stay readable. */
    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    CHECK_RC(drpc_server_metrics(srv, &m), DRPC_OK);
    CHECK(m.streams_opened == 9 && m.connections_opened == 1 && m.active_connections == 0);
    drpc_server_free(srv);

    /* Wrong and NULL arguments. */
    CHECK_RC(drpc_server_metrics(NULL, &m), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_metrics(srv, &m), DRPC_BAD_ARGUMENT); /* freed */
    CHECK_RC(drpc_conn_metrics((drpc_conn *)srv, &m), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_metrics_snapshot(NULL, &snap), DRPC_BAD_ARGUMENT);
    CHECK(snap == NULL);
    CHECK_RC(drpc_conn_metrics_snapshot(NULL, NULL), DRPC_BAD_ARGUMENT);
    drpc_metrics_snapshot_free(NULL);
}

/* ------------------------------------------------------------------ */
/* Logging.                                                            */

typedef struct {
    pthread_mutex_t mu;
    int errors;
    char last[512];
} log_sink;

static void on_log(void *ud, uint32_t level, const char *target, const char *message) {
    log_sink *l = (log_sink *)ud;
    CHECK(target != NULL && message != NULL);
    CHECK(level >= DRPC_LOG_ERROR && level <= DRPC_LOG_WARN);
    pthread_mutex_lock(&l->mu);
    if (level == DRPC_LOG_ERROR && strstr(message, "/o/NotFound")) {
        l->errors++;
        snprintf(l->last, sizeof l->last, "%s", message);
    }
    pthread_mutex_unlock(&l->mu);
}

static void test_logging(void) {
    static log_sink sink = {PTHREAD_MUTEX_INITIALIZER, 0, {0}};
    CHECK_RC(drpc_set_log_callback(99, on_log, &sink), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_set_log_callback(DRPC_LOG_WARN, on_log, &sink), DRPC_OK);
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, NULL);
    drpc_conn *c = dial_with(addr, NULL);
    CHECK_RC(call(c, "/o/NotFound", "", 0, NULL, NULL, NULL, 0), DRPC_NOT_FOUND);
    /* The handler's failure is logged at ERROR with the rpc and the peer. */
    int seen = 0;
    for (int i = 0; i < 500 && !seen; i++) {
        pthread_mutex_lock(&sink.mu);
        seen = sink.errors;
        pthread_mutex_unlock(&sink.mu);
        if (!seen) sleep_ms(10);
    }
    CHECK(seen == 1);
    pthread_mutex_lock(&sink.mu);
    if (!strstr(sink.last, "127.0.0.1:")) fprintf(stderr, "  logged: %s\n", sink.last);
    CHECK(strstr(sink.last, "127.0.0.1:") != NULL);
    pthread_mutex_unlock(&sink.mu);
    /* Off: nothing more arrives. */
    CHECK_RC(drpc_set_log_callback(DRPC_LOG_ERROR, NULL, NULL), DRPC_OK);
    CHECK_RC(call(c, "/o/NotFound", "", 0, NULL, NULL, NULL, 0), DRPC_NOT_FOUND);
    drpc_conn_free(c);
    drpc_server_free(srv);
    pthread_mutex_lock(&sink.mu);
    CHECK(sink.errors == 1);
    pthread_mutex_unlock(&sink.mu);
}

/* ------------------------------------------------------------------ */
/* NULL and wrong handles everywhere.                                  */

static void test_bad_handles(void) {
    drpc_conn_options *o = drpc_conn_options_new();
    int64_t d = 0;
    const char *s = "x";
    size_t n = 9;
    CHECK(drpc_call_info_rpc(NULL) == NULL);
    CHECK(drpc_call_info_rpc((drpc_call_info *)o) == NULL);
    CHECK(drpc_call_info_peer((drpc_call_info *)o) == NULL);
    CHECK(!drpc_call_info_is_server((drpc_call_info *)o));
    CHECK(drpc_call_info_metadata((drpc_call_info *)o, "k") == NULL);
    CHECK_RC(drpc_call_info_metadata_count((drpc_call_info *)o, &n), DRPC_BAD_ARGUMENT);
    CHECK(n == 0);
    CHECK_RC(drpc_call_info_metadata_entry((drpc_call_info *)o, 0, &s, NULL), DRPC_BAD_ARGUMENT);
    CHECK(s == NULL);
    CHECK_RC(drpc_call_info_set_metadata((drpc_call_info *)o, "k", "v"), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_call_info_deadline((drpc_call_info *)o, &d), DRPC_BAD_ARGUMENT);
    s = "x";
    CHECK_RC(drpc_call_info_traceparent((drpc_call_info *)o, &s), DRPC_BAD_ARGUMENT);
    CHECK(s == NULL);
    CHECK_RC(drpc_call_info_reject((drpc_call_info *)o, 1, "m"), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_call_deadline(NULL, &d), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_call_deadline((drpc_server_call *)o, &d), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_call_traceparent((drpc_server_call *)o, &s), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_deadline((drpc_stream *)o, &d), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_traceparent(NULL, &s), DRPC_BAD_ARGUMENT);
    drpc_conn_options_free(o);
}

/* ------------------------------------------------------------------ */
/* Races.                                                              */

static int ITERS = 100;

static atomic_int counted_befores;
static uint32_t count_before(void *ud, drpc_call_info *call) {
    (void)ud;
    (void)call;
    atomic_fetch_add(&counted_befores, 1);
    return DRPC_OK;
}

typedef struct {
    drpc_server *srv;
    int added;
} adder_arg;

static void *add_until_refused(void *p) {
    adder_arg *a = (adder_arg *)p;
    drpc_interceptor ic = {count_before, NULL, NULL, NULL};
    for (;;) {
        drpc_status rc = drpc_server_add_interceptor(a->srv, &ic);
        if (rc != DRPC_OK) {
            CHECK(rc == DRPC_FAILED_PRECONDITION);
            return NULL;
        }
        /* Bounded, so a slow listen does not make every call run
         * thousands of interceptors. */
        if (++a->added == 200) return NULL;
        sched_yield();
    }
}

/* Interceptors added while the server starts listening: each either joins
 * the chain (and runs) or is refused. */
static void race_add_vs_listen(void) {
    for (int i = 0; i < ITERS; i++) {
        adder_arg a = {drpc_server_new(), 0};
        CHECK_RC(drpc_server_register_unary(a.srv, "/o/WhoAmI", h_whoami, NULL, NULL), DRPC_OK);
        pthread_t t;
        pthread_create(&t, NULL, add_until_refused, &a);
        char *b = NULL;
        CHECK_RC(drpc_server_listen(a.srv, "127.0.0.1:0", &b, NULL), DRPC_OK);
        pthread_join(t, NULL);
        drpc_conn *c = dial_with(b, NULL);
        atomic_store(&counted_befores, 0);
        CHECK_RC(call(c, "/o/WhoAmI", "", 0, NULL, NULL, NULL, 0), DRPC_OK);
        CHECK(atomic_load(&counted_befores) == a.added);
        drpc_conn_free(c);
        drpc_string_free(b);
        drpc_server_free(a.srv);
    }
}

typedef struct {
    drpc_server *srv;
    atomic_int stop;
    int reads;
} reader_arg;

static void *read_metrics(void *p) {
    reader_arg *r = (reader_arg *)p;
    while (!atomic_load(&r->stop)) {
        drpc_metrics m;
        drpc_status rc = drpc_server_metrics(r->srv, &m);
        CHECK(rc == DRPC_OK || rc == DRPC_BAD_ARGUMENT);
        drpc_metrics_snapshot *snap = NULL;
        rc = drpc_server_metrics_snapshot(r->srv, &snap);
        CHECK(rc == DRPC_OK || rc == DRPC_BAD_ARGUMENT);
        if (snap) {
            drpc_rpc_stats st;
            drpc_metrics sm;
            CHECK_RC(drpc_metrics_snapshot_counters(snap, &sm), DRPC_OK);
            for (size_t k = 0; k < sm.rpc_count; k++) CHECK_RC(drpc_metrics_snapshot_rpc(snap, k, &st), DRPC_OK);
            drpc_metrics_snapshot_free(snap);
        }
        r->reads++;
        /* Lets the other threads run: under valgrind, which runs one thread
         * at a time, a reader that never blocks starves the server and the
         * client until the server's handshake timeout closes the
         * connection. */
        sched_yield();
    }
    return NULL;
}

/* Metrics read while calls run and the server is freed under the reader. */
static void race_metrics_vs_free(void) {
    for (int i = 0; i < ITERS; i++) {
        char addr[256];
        reader_arg r = {serve(addr, sizeof addr, NULL), 0, 0};
        pthread_t t;
        pthread_create(&t, NULL, read_metrics, &r);
        drpc_conn *c = dial_with(addr, NULL);
        for (int k = 0; k < 3; k++) CHECK_RC(call(c, "/o/EchoMeta", "k", 0, NULL, NULL, NULL, 0), DRPC_OK);
        drpc_conn_free(c);
        drpc_server_free(r.srv);
        atomic_store(&r.stop, 1);
        pthread_join(t, NULL);
    }
}

/* Call-info handles kept past their call: another thread keeps using them
 * while calls end; once a call ended its handle is refused. */
static _Atomic(drpc_call_info *) kept_info;
static uint32_t keep_before(void *ud, drpc_call_info *call) {
    (void)ud;
    atomic_store(&kept_info, call);
    return DRPC_OK;
}

typedef struct {
    atomic_int stop;
} poker_arg;

static void *poke_kept(void *p) {
    poker_arg *a = (poker_arg *)p;
    while (!atomic_load(&a->stop)) {
        /* Borrowed strings are not read here: the call may end any time. */
        drpc_call_info *info = atomic_load(&kept_info);
        (void)drpc_call_info_rpc(info);
        (void)drpc_call_info_is_server(info);
        int64_t d;
        drpc_status rc = drpc_call_info_deadline(info, &d);
        CHECK(rc == DRPC_OK || rc == DRPC_BAD_ARGUMENT);
        size_t n;
        rc = drpc_call_info_metadata_count(info, &n);
        CHECK(rc == DRPC_OK || rc == DRPC_BAD_ARGUMENT);
        rc = drpc_call_info_set_metadata(info, "k", "v");
        CHECK(rc == DRPC_OK || rc == DRPC_BAD_ARGUMENT || rc == DRPC_FAILED_PRECONDITION);
        sched_yield(); /* see read_metrics */
    }
    return NULL;
}

static void race_stale_call_info(void) {
    char addr[256];
    drpc_server *srv = drpc_server_new();
    register_all(srv);
    drpc_interceptor ic = {keep_before, NULL, NULL, NULL};
    CHECK_RC(drpc_server_add_interceptor(srv, &ic), DRPC_OK);
    char *b = NULL;
    CHECK_RC(drpc_server_listen(srv, "127.0.0.1:0", &b, NULL), DRPC_OK);
    snprintf(addr, sizeof addr, "%s", b);
    drpc_string_free(b);
    drpc_conn *c = dial_with(addr, NULL);
    poker_arg a = {0};
    pthread_t t[2];
    for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, poke_kept, &a);
    for (int i = 0; i < ITERS * 3; i++) CHECK_RC(call(c, "/o/EchoMeta", "k", 0, NULL, NULL, NULL, 0), DRPC_OK);
    atomic_store(&a.stop, 1);
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    /* Every call ended: the last kept handle is stale. */
    CHECK(drpc_call_info_rpc(atomic_load(&kept_info)) == NULL);
    drpc_conn_free(c);
    drpc_server_free(srv);
}

/* Intercepted client streams freed while another thread receives: every
 * before has exactly one after. */
static atomic_int stream_befores, stream_afters;
static uint32_t sb(void *ud, drpc_call_info *call) {
    (void)ud;
    (void)call;
    atomic_fetch_add(&stream_befores, 1);
    return DRPC_OK;
}
static void sa(void *ud, drpc_call_info *call, uint64_t code, uint64_t d, uint64_t s, uint64_t r) {
    (void)ud;
    (void)call;
    (void)d;
    (void)s;
    (void)r;
    CHECK(code == 0 || code == DRPC_CANCELED);
    atomic_fetch_add(&stream_afters, 1);
}

static void *recv_all(void *p) {
    drpc_stream *s = (drpc_stream *)p;
    for (;;) {
        drpc_buffer *m = NULL;
        drpc_status rc = drpc_stream_recv(s, &m, NULL);
        drpc_buffer_free(m);
        if (rc != DRPC_OK) return NULL;
    }
}

static void race_stream_free_vs_recv(void) {
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, NULL);
    drpc_conn_options *o = drpc_conn_options_new();
    drpc_interceptor ic = {sb, NULL, sa, NULL};
    CHECK_RC(drpc_conn_options_add_interceptor(o, &ic), DRPC_OK);
    drpc_conn *c = dial_with(addr, o);
    drpc_conn_options_free(o);
    for (int i = 0; i < ITERS; i++) {
        drpc_stream *s = NULL;
        CHECK_RC(drpc_conn_stream(c, "/o/EchoStream", NULL, 0, &s, NULL), DRPC_OK);
        pthread_t t;
        pthread_create(&t, NULL, recv_all, s);
        drpc_stream_send(s, (const uint8_t *)"a", 1, NULL);
        if (i % 2) drpc_stream_close_send(s, NULL);
        drpc_stream_free(s);
        pthread_join(t, NULL);
    }
    CHECK(atomic_load(&stream_befores) == ITERS);
    CHECK(atomic_load(&stream_afters) == ITERS);
    drpc_conn_free(c);
    drpc_server_free(srv);
}

/* The log callback replaced and turned off while handler failures are
 * being logged on other threads: once drpc_set_log_callback returned, the
 * old callback is not running and never called again. */
static atomic_int log_calls;
static atomic_int log_active; /* callbacks running now */
static void counting_log(void *ud, uint32_t level, const char *target, const char *message) {
    (void)ud;
    (void)level;
    (void)target;
    (void)message;
    atomic_fetch_add(&log_active, 1);
    atomic_fetch_add(&log_calls, 1);
    atomic_fetch_sub(&log_active, 1);
}

typedef struct {
    const char *addr;
    atomic_int stop;
} failer_arg;

static void *fail_calls(void *p) {
    failer_arg *a = (failer_arg *)p;
    drpc_conn *c = dial_with(a->addr, NULL);
    while (!atomic_load(&a->stop)) CHECK_RC(call(c, "/o/NotFound", "", 0, NULL, NULL, NULL, 0), DRPC_NOT_FOUND);
    drpc_conn_free(c);
    return NULL;
}

static void race_log_callback_vs_events(void) {
    char addr[256];
    drpc_server *srv = serve(addr, sizeof addr, NULL);
    failer_arg a = {addr, 0};
    pthread_t t[2];
    for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, fail_calls, &a);
    for (int i = 0; i < ITERS; i++) {
        CHECK_RC(drpc_set_log_callback(DRPC_LOG_ERROR, counting_log, NULL), DRPC_OK);
        sched_yield();
        CHECK_RC(drpc_set_log_callback(DRPC_LOG_OFF, NULL, NULL), DRPC_OK);
        CHECK(atomic_load(&log_active) == 0);
    }
    int calls = atomic_load(&log_calls);
    sleep_ms(50); /* failures keep being logged, to nobody */
    CHECK(atomic_load(&log_calls) == calls);
    atomic_store(&a.stop, 1);
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    drpc_server_free(srv);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} test_def;

int main(int argc, char **argv) {
    if (argc > 1) ITERS = atoi(argv[1]);
    if (ITERS < 1) ITERS = 1;
    static const test_def tests[] = {
        {"server_interceptors", test_server_interceptors},
        {"client_interceptors", test_client_interceptors},
        {"channel_interceptors", test_channel_interceptors},
        {"deadlines_and_trace", test_deadlines},
        {"metrics", test_metrics},
        {"bad_handles", test_bad_handles},
        {"logging", test_logging},
        {"race_add_interceptor_vs_listen", race_add_vs_listen},
        {"race_metrics_vs_free", race_metrics_vs_free},
        {"race_stale_call_info", race_stale_call_info},
        {"race_intercepted_stream_free_vs_recv", race_stream_free_vs_recv},
        {"race_log_callback_vs_events", race_log_callback_vs_events},
    };
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = atomic_load(&check_failures);
        tests[i].fn();
        if (atomic_load(&check_failures) == before) {
            printf("ok %s\n", tests[i].name);
            passed++;
        } else {
            printf("not ok %s\n", tests[i].name);
            failed++;
        }
        fflush(stdout);
    }
    if (drpc_live_handles() == 0) {
        printf("ok no_leaked_handles\n");
        passed++;
    } else {
        printf("not ok no_leaked_handles (%zu live)\n", drpc_live_handles());
        failed++;
    }
    printf("observe: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
