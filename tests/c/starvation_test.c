/*
 * Handlers must not starve each other, and the runtime is configurable.
 * One mode per process, because the configuration is per process:
 *
 *   starvation_test idle      600 idle long-lived streams on non-blocking
 *                             handlers, then 600 on blocking handlers: a
 *                             unary call made meanwhile answers promptly.
 *   starvation_test exhaust   run with DRPC_HANDLER_THREADS=8 and
 *                             DRPC_WORKER_THREADS=2: the environment is
 *                             applied, the threads are named, streaming
 *                             handlers get at most 6 of the 8 threads, unary
 *                             calls keep the other 2, and a call finding no
 *                             thread is refused at once with
 *                             RESOURCE_EXHAUSTED instead of hanging.
 *   starvation_test configure drpc_runtime_configure before first use wins
 *                             over the environment; after it, it is refused.
 *
 * Prints "ok NAME" / "not ok NAME" lines and exits non-zero on failure.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drpc.h"

static int failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                                \
        }                                                                              \
    } while (0)

#define CHECK_RC(expr, want)                                                                 \
    do {                                                                                     \
        drpc_status rc_ = (expr);                                                            \
        if (rc_ != (drpc_status)(want)) {                                                    \
            fprintf(stderr, "  %s:%d: %s returned %s, want %s\n", __FILE__, __LINE__, #expr, \
                    drpc_status_name(rc_), drpc_status_name(want));                          \
            failures++;                                                                      \
        }                                                                                    \
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

static void report(const char *name, int before) {
    printf("%s %s\n", failures == before ? "ok" : "not ok", name);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */

static uint32_t h_echo(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    return drpc_server_call_respond(call, req, len);
}

/* Blocking unary that holds its thread until cancelled (at most 10 s). */
static uint32_t h_hold_unary(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    drpc_server_call_wait_cancelled(call, 10000);
    return DRPC_CANCELED;
}

/* Blocking stream handler of an idle watch: waits for the end. */
static uint32_t h_block_watch(void *ud, drpc_stream *s) {
    (void)ud;
    for (;;) {
        drpc_buffer *b = NULL;
        drpc_status rc = drpc_stream_recv(s, &b, NULL);
        drpc_buffer_free(b);
        if (rc != DRPC_OK) return DRPC_OK;
    }
}

/* Non-blocking handler of an idle watch: holds no thread; finishes when the
 * client closes or cancels. */
static void watch_on_recv(void *ud, drpc_stream *s, drpc_status st, drpc_buffer *m, drpc_error *e) {
    (void)ud;
    drpc_buffer_free(m);
    drpc_error_free(e);
    if (st == DRPC_OK && drpc_stream_recv_async(s, watch_on_recv, NULL) == DRPC_OK) return;
    if (st == DRPC_END) drpc_stream_finish(s, 0, NULL);
    drpc_stream_free(s);
}

static void h_watch(void *ud, drpc_stream *s) {
    (void)ud;
    if (drpc_stream_recv_async(s, watch_on_recv, NULL) != DRPC_OK) drpc_stream_free(s);
}

static drpc_server *start_server(char *addr, size_t n) {
    drpc_server *srv = drpc_server_new();
    CHECK_RC(drpc_server_register_unary(srv, "/s/Echo", h_echo, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/s/HoldUnary", h_hold_unary, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/s/BlockWatch", h_block_watch, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream_async(srv, "/s/Watch", h_watch, NULL, NULL), DRPC_OK);
    char *b = NULL;
    CHECK_RC(drpc_server_listen(srv, "127.0.0.1:0", &b, NULL), DRPC_OK);
    if (b) snprintf(addr, n, "%s", b);
    drpc_string_free(b);
    return srv;
}

/* A unary call's status and duration in seconds. */
static drpc_status timed_unary(drpc_conn *c, const char *rpc, double *secs) {
    double t0 = now_s();
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_unary(c, rpc, (const uint8_t *)"ping", 4, NULL, 5000, &b, &err);
    *secs = now_s() - t0;
    if (rc != DRPC_OK && rc != DRPC_RESOURCE_EXHAUSTED)
        fprintf(stderr, "  %s: %s: %s\n", rpc, drpc_status_name(rc), drpc_error_message(err));
    drpc_buffer_free(b);
    drpc_error_free(err);
    return rc;
}

/* Waits until the server runs `want` handlers (at most 20 s). */
static int wait_active(drpc_server *srv, size_t want) {
    for (int i = 0; i < 2000; i++) {
        if (drpc_server_active_rpcs(srv) == want) return 1;
        sleep_ms(10);
    }
    fprintf(stderr, "  active rpcs %zu, want %zu\n", drpc_server_active_rpcs(srv), want);
    return 0;
}

static void idle_streams(drpc_server *srv, drpc_conn *c, const char *rpc) {
    enum { N = 600 };
    static drpc_stream *streams[N];
    for (int i = 0; i < N; i++) {
        streams[i] = NULL;
        CHECK_RC(drpc_conn_stream(c, rpc, NULL, 0, &streams[i], NULL), DRPC_OK);
    }
    CHECK(wait_active(srv, N));
    double secs = 0;
    for (int i = 0; i < 5; i++) {
        CHECK_RC(timed_unary(c, "/s/Echo", &secs), DRPC_OK);
        /* Before: a queue behind 512 blocking threads, i.e. the deadline. */
        CHECK(secs < 1.0);
    }
    printf("# %d idle streams on %s: unary call answered in %.3f ms\n", N, rpc, secs * 1000);
    for (int i = 0; i < N; i++) {
        if (i % 2) CHECK_RC(drpc_stream_close_send(streams[i], NULL), DRPC_OK);
        drpc_stream_free(streams[i]);
    }
    CHECK(wait_active(srv, 0));
}

static int count_threads_now(const char *name) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[64] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(comm, sizeof comm, f)) {
            comm[strcspn(comm, "\n")] = 0;
            if (strcmp(comm, name) == 0) n++;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* A new thread names itself once it runs: wait up to 5 s for the count. */
static int count_threads(const char *name, int want) {
    int n = -1;
    for (int i = 0; i < 500; i++) {
        n = count_threads_now(name);
        if (n == want) break;
        sleep_ms(10);
    }
    if (n != want) fprintf(stderr, "  %d threads named %s, want %d\n", n, name, want);
    return n;
}

typedef struct {
    int done;
    drpc_status status;
    pthread_mutex_t mu;
} held;

static void on_held(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    (void)call;
    held *h = (held *)ud;
    pthread_mutex_lock(&h->mu);
    h->done = 1;
    h->status = st;
    pthread_mutex_unlock(&h->mu);
    drpc_buffer_free(resp);
    drpc_error_free(err);
}

static void exhaust(void) {
    int before = failures;
    size_t workers = 0, handlers = 0;
    drpc_runtime_settings(&workers, &handlers);
    CHECK(workers == 2 && handlers == 8); /* from the environment */
    CHECK_RC(drpc_runtime_configure(4, 4), DRPC_FAILED_PRECONDITION);
    CHECK(count_threads("drpc-worker", 2) == 2);
    report("environment_applied_and_threads_named", before);

    before = failures;
    char addr[256];
    drpc_server *srv = start_server(addr, sizeof addr);
    drpc_conn *c = NULL;
    CHECK_RC(drpc_conn_dial(addr, NULL, &c, NULL), DRPC_OK);
    enum { STREAM_THREADS = 6 };
    drpc_stream *s[STREAM_THREADS + 1];
    for (int i = 0; i < STREAM_THREADS; i++) CHECK_RC(drpc_conn_stream(c, "/s/BlockWatch", NULL, 0, &s[i], NULL), DRPC_OK);
    CHECK(wait_active(srv, STREAM_THREADS));
    /* The 7th streaming handler finds no thread: refused at once. */
    CHECK_RC(drpc_conn_stream(c, "/s/BlockWatch", NULL, 0, &s[STREAM_THREADS], NULL), DRPC_OK);
    double t0 = now_s();
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    CHECK_RC(drpc_stream_recv(s[STREAM_THREADS], &b, &err), DRPC_RESOURCE_EXHAUSTED);
    CHECK(now_s() - t0 < 1.0);
    if (err) printf("# refused: %s\n", drpc_error_message(err));
    drpc_error_free(err);
    drpc_stream_free(s[STREAM_THREADS]);
    /* Unary calls still have their threads, and non-blocking streams need none. */
    double secs = 0;
    CHECK_RC(timed_unary(c, "/s/Echo", &secs), DRPC_OK);
    CHECK(secs < 1.0);
    drpc_stream *w = NULL;
    CHECK_RC(drpc_conn_stream(c, "/s/Watch", NULL, 0, &w, NULL), DRPC_OK);
    CHECK(wait_active(srv, STREAM_THREADS + 1));
    report("streams_hold_at_most_three_quarters", before);

    /* Two unary handlers holding the last threads: the next unary call is
     * refused at once, and served again once they are done. */
    before = failures;
    held h[2];
    drpc_call *calls[2];
    for (int i = 0; i < 2; i++) {
        h[i].done = 0;
        pthread_mutex_init(&h[i].mu, NULL);
        CHECK_RC(drpc_conn_unary_async(c, "/s/HoldUnary", NULL, 0, NULL, 0, on_held, &h[i], &calls[i], NULL), DRPC_OK);
    }
    CHECK(wait_active(srv, STREAM_THREADS + 3));
    CHECK_RC(timed_unary(c, "/s/Echo", &secs), DRPC_RESOURCE_EXHAUSTED);
    CHECK(secs < 1.0);
    for (int i = 0; i < 2; i++) {
        CHECK_RC(drpc_call_cancel(calls[i]), DRPC_OK);
        CHECK_RC(drpc_call_wait(calls[i], 5000), DRPC_OK);
        CHECK(h[i].done && h[i].status == DRPC_CANCELED);
        drpc_call_free(calls[i]);
        pthread_mutex_destroy(&h[i].mu);
    }
    CHECK(wait_active(srv, STREAM_THREADS + 1));
    CHECK_RC(timed_unary(c, "/s/Echo", &secs), DRPC_OK);
    report("exhausted_pool_refuses_instead_of_hanging", before);

    for (int i = 0; i < STREAM_THREADS; i++) drpc_stream_free(s[i]);
    drpc_stream_free(w);
    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
}

static void configure(void) {
    int before = failures;
    /* The environment says 2 workers; the call wins. */
    CHECK_RC(drpc_runtime_configure(3, 0), DRPC_OK);
    CHECK_RC(drpc_runtime_configure(0, 16), DRPC_OK);
    size_t workers = 0, handlers = 0;
    drpc_runtime_settings(&workers, &handlers);
    CHECK(workers == 3 && handlers == 16);
    CHECK(count_threads("drpc-worker", 3) == 3);
    CHECK_RC(drpc_runtime_configure(5, 5), DRPC_FAILED_PRECONDITION);
    drpc_runtime_settings(&workers, NULL);
    CHECK(workers == 3);
    report("configure_before_first_use", before);
}

static void idle(void) {
    int before = failures;
    size_t workers = 0, handlers = 0;
    drpc_runtime_settings(&workers, &handlers);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    /* Defaults: a worker per CPU (unless the environment says otherwise). */
    if (!getenv("DRPC_WORKER_THREADS")) CHECK((long)workers == cpus);
    if (!getenv("DRPC_HANDLER_THREADS")) CHECK(handlers == 1024);
    report("default_settings", before);

    char addr[256];
    drpc_server *srv = start_server(addr, sizeof addr);
    drpc_conn *c = NULL;
    CHECK_RC(drpc_conn_dial(addr, NULL, &c, NULL), DRPC_OK);
    before = failures;
    idle_streams(srv, c, "/s/Watch");
    report("idle_nonblocking_streams_do_not_delay_unary", before);
    before = failures;
    idle_streams(srv, c, "/s/BlockWatch");
    report("idle_blocking_streams_do_not_delay_unary", before);
    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
}

int main(int argc, char **argv) {
    alarm(300);
    const char *mode = argc > 1 ? argv[1] : "idle";
    if (strcmp(mode, "idle") == 0) {
        idle();
    } else if (strcmp(mode, "exhaust") == 0) {
        exhaust();
    } else if (strcmp(mode, "configure") == 0) {
        configure();
    } else {
        fprintf(stderr, "usage: %s idle|exhaust|configure\n", argv[0]);
        return 2;
    }
    if (drpc_live_handles() != 0) {
        printf("not ok no_leaked_handles (%zu live)\n", drpc_live_handles());
        failures++;
    }
    return failures ? 1 : 0;
}
