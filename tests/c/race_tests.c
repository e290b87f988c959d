/*
 * Race tests of the libdrpc C API: each scenario is raced ITERS times
 * (argv[1], default 300), meant to run under valgrind (tests/c/run.sh) and
 * AddressSanitizer, which must report nothing. The scenarios are the ones
 * that were use-after-frees or crashes before handles were looked up in a
 * table and every call held its own reference:
 *
 *   stream_free_vs_blocked   drpc_stream_free while other threads are in
 *                            drpc_stream_wait_cancelled / _recv / _cancel /
 *                            _is_finished on the same stream
 *   call_free_in_callback    the completion callback frees its drpc_call
 *                            while another thread is in drpc_call_wait
 *   call_free_vs_wait        drpc_call_free from a third thread while one
 *                            waits and the call is in flight
 *   recv_async_vs_free       drpc_stream_recv_async pending while the stream
 *                            is freed: the callback runs exactly once
 *   callback_driven_streams  many streams driven only by recv/send callbacks
 *                            against a non-blocking echo handler, with
 *                            random cancels and frees
 *   recv_timeout_no_loss     short drpc_stream_recv_timeout loops never lose
 *                            or reorder a message
 *   async_unary_vs_cancel    non-blocking unary handlers answered later from
 *                            another thread, racing the client's cancel and
 *                            drpc_server_call_free
 *   server_free_vs_shutdown  drpc_server_free racing drpc_server_shutdown on
 *                            another thread, with handlers blocked
 *   conn_free_vs_calls       drpc_conn_free while other threads make unary,
 *                            async and streaming calls on the connection:
 *                            calls in flight complete, later ones are refused
 *   wrong_and_stale_handles  every kind of handle passed where another kind
 *                            is expected, and freed handles reused:
 *                            DRPC_BAD_ARGUMENT, never a crash
 *
 * Prints "ok NAME" / "not ok NAME" per scenario and a last line
 * "race: N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
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

#define CHECK_RC(expr, want)                                                                           \
    do {                                                                                               \
        drpc_status rc_ = (expr);                                                                      \
        if (rc_ != (drpc_status)(want)) {                                                              \
            fprintf(stderr, "  %s:%d: %s returned %s, want %s\n", __FILE__, __LINE__, #expr,           \
                    drpc_status_name(rc_), drpc_status_name(want));                                    \
            atomic_fetch_add(&check_failures, 1);                                                      \
        }                                                                                              \
    } while (0)

static int ITERS = 300;
static char ADDR[256];

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* A small xorshift generator: reproducible jitter without rand()'s lock. */
static unsigned long rng_state = 88172645463325252UL;
static unsigned long next_rand(void) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    unsigned long v = rng_state;
    pthread_mutex_unlock(&mu);
    return v;
}

/* A countdown latch. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
} latch;

static void latch_init(latch *l, int count) {
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->count = count;
}
static void latch_down(latch *l) {
    pthread_mutex_lock(&l->mu);
    if (--l->count <= 0) pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}
/* Waits up to timeout_s; returns 1 if the count reached 0. */
static int latch_wait(latch *l, int timeout_s) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_s;
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (l->count > 0 && rc == 0) rc = pthread_cond_timedwait(&l->cv, &l->mu, &deadline);
    int ok = l->count <= 0;
    pthread_mutex_unlock(&l->mu);
    return ok;
}
static void latch_destroy(latch *l) {
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
}

/* ------------------------------------------------------------------ */
/* Handlers.                                                           */

/* Blocking: receives until the stream ends or fails. */
static uint32_t h_hold(void *ud, drpc_stream *s) {
    (void)ud;
    for (;;) {
        drpc_buffer *b = NULL;
        drpc_status rc = drpc_stream_recv(s, &b, NULL);
        drpc_buffer_free(b);
        if (rc != DRPC_OK) return DRPC_OK;
    }
}

static uint32_t h_echo(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    return drpc_server_call_respond(call, req, len);
}

/* Blocking: receives "COUNT" and sends COUNT messages "0", "1", ... */
static uint32_t h_flood(void *ud, drpc_stream *s) {
    (void)ud;
    drpc_buffer *b = NULL;
    drpc_status rc = drpc_stream_recv(s, &b, NULL);
    if (rc != DRPC_OK) return DRPC_INVALID_ARGUMENT;
    char req[32] = {0};
    size_t n = drpc_buffer_len(b);
    memcpy(req, drpc_buffer_data(b), n < 31 ? n : 31);
    drpc_buffer_free(b);
    int count = atoi(req);
    for (int i = 0; i < count && rc == DRPC_OK; i++) {
        char msg[16];
        int len = snprintf(msg, sizeof msg, "%d", i);
        rc = drpc_stream_send(s, (const uint8_t *)msg, (size_t)len, NULL);
    }
    return rc;
}

/* Non-blocking echo: recv_async -> send_async -> recv_async ... */
static void aecho_on_recv(void *ud, drpc_stream *s, drpc_status st, drpc_buffer *m, drpc_error *e);

static void aecho_on_sent(void *ud, drpc_stream *s, drpc_status st, drpc_error *e) {
    if (st == DRPC_OK && drpc_stream_recv_async(s, aecho_on_recv, ud) == DRPC_OK) return;
    drpc_error_free(e);
    drpc_stream_free(s);
}

static void aecho_on_recv(void *ud, drpc_stream *s, drpc_status st, drpc_buffer *m, drpc_error *e) {
    if (st == DRPC_OK) {
        drpc_status rc = drpc_stream_send_async(s, drpc_buffer_data(m), drpc_buffer_len(m), aecho_on_sent, ud);
        drpc_buffer_free(m);
        if (rc == DRPC_OK) return;
    } else if (st == DRPC_END) {
        CHECK_RC(drpc_stream_finish(s, 0, NULL), DRPC_OK);
    }
    drpc_error_free(e);
    drpc_stream_free(s);
}

static void h_async_echo(void *ud, drpc_stream *s) {
    /* Blocking here is refused, not a stalled runtime. */
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_FAILED_PRECONDITION);
    if (drpc_stream_recv_async(s, aecho_on_recv, ud) != DRPC_OK) drpc_stream_free(s);
}

/* Non-blocking unary: the call is handed to a responder thread. */
typedef struct pending {
    drpc_server_call *call;
    struct pending *next;
} pending;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pending *head;
    int stop;
} Q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0};

static void h_later(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    if (len == 1 && req[0] == 'n') { /* released unanswered: INTERNAL */
        drpc_server_call_free(call);
        return;
    }
    if (len == 1 && req[0] == 'i') { /* answered inside the handler */
        CHECK_RC(drpc_server_call_respond(call, req, len), DRPC_OK);
        drpc_server_call_free(call);
        return;
    }
    pending *p = (pending *)malloc(sizeof *p);
    p->call = call;
    pthread_mutex_lock(&Q.mu);
    p->next = Q.head;
    Q.head = p;
    pthread_cond_signal(&Q.cv);
    pthread_mutex_unlock(&Q.mu);
}

static void *responder(void *arg) {
    (void)arg;
    pthread_mutex_lock(&Q.mu);
    for (;;) {
        while (!Q.head && !Q.stop) pthread_cond_wait(&Q.cv, &Q.mu);
        if (!Q.head) break;
        pending *p = Q.head;
        Q.head = p->next;
        pthread_mutex_unlock(&Q.mu);
        if (next_rand() % 4 == 0) sleep_us((long)(next_rand() % 500));
        drpc_status rc = drpc_server_call_respond(p->call, (const uint8_t *)"later", 5);
        CHECK(rc == DRPC_OK);
        CHECK_RC(drpc_server_call_respond(p->call, NULL, 0), DRPC_FAILED_PRECONDITION);
        drpc_server_call_free(p->call);
        /* The freed call is refused, not read. */
        CHECK_RC(drpc_server_call_respond(p->call, NULL, 0), DRPC_BAD_ARGUMENT);
        free(p);
        pthread_mutex_lock(&Q.mu);
    }
    pthread_mutex_unlock(&Q.mu);
    return NULL;
}

static drpc_server *start_server(char *bound, size_t n) {
    drpc_server *srv = drpc_server_new();
    CHECK_RC(drpc_server_register_stream(srv, "/r/Hold", h_hold, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/r/Echo", h_echo, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/r/Flood", h_flood, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream_async(srv, "/r/AsyncEcho", h_async_echo, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary_async(srv, "/r/Later", h_later, NULL, NULL), DRPC_OK);
    char *b = NULL;
    CHECK_RC(drpc_server_listen(srv, "127.0.0.1:0", &b, NULL), DRPC_OK);
    if (bound && b) snprintf(bound, n, "%s", b);
    drpc_string_free(b);
    return srv;
}

static drpc_conn *dial(void) {
    drpc_conn *c = NULL;
    CHECK_RC(drpc_conn_dial(ADDR, NULL, &c, NULL), DRPC_OK);
    return c;
}

/* ------------------------------------------------------------------ */
/* Scenarios.                                                          */

typedef struct {
    drpc_stream *s;
    latch *started;
    drpc_status rc;
    int flag;
} stream_arg;

static void *t_wait_cancelled(void *p) {
    stream_arg *a = (stream_arg *)p;
    latch_down(a->started);
    a->flag = drpc_stream_wait_cancelled(a->s, 0);
    return NULL;
}

static void *t_recv(void *p) {
    stream_arg *a = (stream_arg *)p;
    latch_down(a->started);
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    a->rc = drpc_stream_recv(a->s, &b, &err);
    CHECK(b == NULL);
    CHECK((err == NULL) == (a->rc == DRPC_OK));
    drpc_error_free(err);
    return NULL;
}

/* Hammers the non-blocking functions until the handle is refused. */
static void *t_poke(void *p) {
    stream_arg *a = (stream_arg *)p;
    latch_down(a->started);
    for (;;) {
        (void)drpc_stream_is_finished(a->s);
        (void)drpc_stream_is_cancelled(a->s);
        (void)drpc_stream_rpc(a->s);
        drpc_status rc = drpc_stream_cancel(a->s);
        if (rc == DRPC_BAD_ARGUMENT) break;
        CHECK(rc == DRPC_OK);
        sched_yield();
    }
    return NULL;
}

static void stream_free_vs_blocked(drpc_conn *c) {
    int blocked = 0, late = 0;
    for (int i = 0; i < ITERS; i++) {
        drpc_stream *s = NULL;
        CHECK_RC(drpc_conn_stream(c, "/r/Hold", NULL, 0, &s, NULL), DRPC_OK);
        latch started;
        latch_init(&started, 3);
        stream_arg a[3] = {{s, &started, DRPC_OK, 0}, {s, &started, DRPC_OK, 0}, {s, &started, DRPC_OK, 0}};
        pthread_t t[3];
        pthread_create(&t[0], NULL, t_wait_cancelled, &a[0]);
        pthread_create(&t[1], NULL, t_recv, &a[1]);
        pthread_create(&t[2], NULL, t_poke, &a[2]);
        latch_wait(&started, 60);
        if (i % 3) sleep_us((long)(next_rand() % 300));
        drpc_stream_free(s);
        for (int k = 0; k < 3; k++) pthread_join(t[k], NULL);
        /* Blocked before the free: cancelled; started after it: refused. */
        CHECK(a[1].rc == DRPC_CANCELED || a[1].rc == DRPC_BAD_ARGUMENT);
        blocked += a[1].rc == DRPC_CANCELED;
        late += a[1].rc == DRPC_BAD_ARGUMENT;
        /* After the free the handle is refused everywhere. */
        CHECK_RC(drpc_stream_cancel(s), DRPC_BAD_ARGUMENT);
        CHECK(!drpc_stream_is_finished(s));
        CHECK(!drpc_stream_wait_cancelled(s, 0));
        drpc_stream_free(s); /* a second free is ignored */
        latch_destroy(&started);
    }
    /* The race must really have been run: most frees hit a blocked recv. */
    printf("# stream_free_vs_blocked: recv blocked at the free %d times, started after it %d times\n", blocked, late);
    CHECK(blocked >= ITERS / 4);
}

typedef struct {
    latch done;
    atomic_int calls;
    drpc_call *given;
} cb_state;

static void on_done_free(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    cb_state *c = (cb_state *)ud;
    CHECK(st == DRPC_OK || st == DRPC_CANCELED);
    c->given = call;
    atomic_fetch_add(&c->calls, 1);
    drpc_call_free(call); /* frees its own handle while another thread waits */
    drpc_buffer_free(resp);
    drpc_error_free(err);
    latch_down(&c->done);
}

typedef struct {
    drpc_call *call;
    drpc_status rc;
    latch *started;
} wait_arg;

static void *t_call_wait(void *p) {
    wait_arg *w = (wait_arg *)p;
    latch_down(w->started);
    w->rc = drpc_call_wait(w->call, 0);
    return NULL;
}

static void call_free_in_callback(drpc_conn *c) {
    int outcome[3] = {0, 0, 0};
    for (int i = 0; i < ITERS; i++) {
        cb_state st;
        latch_init(&st.done, 1);
        atomic_init(&st.calls, 0);
        st.given = NULL;
        drpc_call *call = NULL;
        CHECK_RC(drpc_conn_unary_async(c, "/r/Echo", (const uint8_t *)"x", 1, NULL, 0, on_done_free, &st, &call,
                                       NULL),
                 DRPC_OK);
        latch started;
        latch_init(&started, 1);
        wait_arg w = {call, DRPC_OK, &started};
        pthread_t t;
        pthread_create(&t, NULL, t_call_wait, &w);
        if (i % 2) drpc_call_cancel(call); /* may already be freed: refused */
        pthread_join(t, NULL);
        CHECK(latch_wait(&st.done, 60));
        CHECK(atomic_load(&st.calls) == 1);
        CHECK(st.given == call);
        /* OK if the callback returned first, CANCELED if the free woke the
         * waiter, BAD_ARGUMENT if the handle was gone before the wait. */
        CHECK(w.rc == DRPC_OK || w.rc == DRPC_CANCELED || w.rc == DRPC_BAD_ARGUMENT);
        outcome[w.rc == DRPC_OK ? 0 : w.rc == DRPC_CANCELED ? 1 : 2]++;
        CHECK_RC(drpc_call_wait(call, 0), DRPC_BAD_ARGUMENT);
        CHECK(!drpc_call_is_done(call));
        latch_destroy(&started);
        latch_destroy(&st.done);
    }
    printf("# call_free_in_callback: waiter saw OK %d, CANCELED %d, BAD_ARGUMENT %d times\n", outcome[0], outcome[1],
           outcome[2]);
    /* Waiters woken by the callback's free must have happened. */
    CHECK(outcome[1] > 0);
}

static void on_done_keep(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    (void)call;
    cb_state *c = (cb_state *)ud;
    CHECK(st == DRPC_OK || st == DRPC_CANCELED);
    atomic_fetch_add(&c->calls, 1);
    drpc_buffer_free(resp);
    drpc_error_free(err);
    latch_down(&c->done);
}

static void call_free_vs_wait(drpc_conn *c) {
    for (int i = 0; i < ITERS; i++) {
        cb_state st;
        latch_init(&st.done, 1);
        atomic_init(&st.calls, 0);
        drpc_call *call = NULL;
        CHECK_RC(drpc_conn_unary_async(c, "/r/Echo", NULL, 0, NULL, 0, on_done_keep, &st, &call, NULL), DRPC_OK);
        latch started;
        latch_init(&started, 2);
        wait_arg w1 = {call, DRPC_OK, &started}, w2 = {call, DRPC_OK, &started};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, t_call_wait, &w1);
        pthread_create(&t2, NULL, t_call_wait, &w2);
        latch_wait(&started, 60);
        if (i % 2) sleep_us((long)(next_rand() % 200));
        drpc_call_free(call);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        CHECK(w1.rc == DRPC_OK || w1.rc == DRPC_CANCELED || w1.rc == DRPC_BAD_ARGUMENT);
        CHECK(w2.rc == DRPC_OK || w2.rc == DRPC_CANCELED || w2.rc == DRPC_BAD_ARGUMENT);
        /* Freeing does not cancel: the callback still runs, once. */
        CHECK(latch_wait(&st.done, 60));
        CHECK(atomic_load(&st.calls) == 1);
        latch_destroy(&started);
        latch_destroy(&st.done);
    }
}

typedef struct {
    latch done;
    atomic_int calls;
    drpc_status status;
} recv_state;

static void on_recv_once(void *ud, drpc_stream *s, drpc_status st, drpc_buffer *m, drpc_error *e) {
    (void)s;
    recv_state *r = (recv_state *)ud;
    r->status = st;
    atomic_fetch_add(&r->calls, 1);
    drpc_buffer_free(m);
    drpc_error_free(e);
    latch_down(&r->done);
}

static void recv_async_vs_free(drpc_conn *c) {
    for (int i = 0; i < ITERS; i++) {
        drpc_stream *s = NULL;
        CHECK_RC(drpc_conn_stream(c, i % 2 ? "/r/Hold" : "/r/AsyncEcho", NULL, 0, &s, NULL), DRPC_OK);
        recv_state r;
        latch_init(&r.done, 1);
        atomic_init(&r.calls, 0);
        r.status = DRPC_OK;
        CHECK_RC(drpc_stream_recv_async(s, on_recv_once, &r), DRPC_OK);
        /* One receive at a time. */
        CHECK_RC(drpc_stream_recv_async(s, on_recv_once, &r), DRPC_FAILED_PRECONDITION);
        drpc_buffer *b = NULL;
        CHECK_RC(drpc_stream_recv_timeout(s, 0, &b, NULL), DRPC_FAILED_PRECONDITION);
        if (i % 3 == 0) sleep_us((long)(next_rand() % 300));
        drpc_stream_free(s);
        CHECK(latch_wait(&r.done, 60));
        CHECK(atomic_load(&r.calls) == 1);
        CHECK(r.status == DRPC_CANCELED);
        latch_destroy(&r.done);
    }
}

/* One client stream driven only by callbacks: sends MSGS messages one at a
 * time, checks each echo, then closes and expects the clean end. */
enum { STREAMS = 16, MSGS = 8 };

typedef struct {
    drpc_stream *s;
    int sent, received, cancel_at;
    latch *all_done;
    atomic_int *failures;
} driven;

static void drv_on_recv(void *ud, drpc_stream *s, drpc_status st, drpc_buffer *m, drpc_error *e);

static void drv_finish(driven *d, drpc_stream *s) {
    drpc_stream_free(s);
    latch_down(d->all_done);
}

static void drv_on_sent(void *ud, drpc_stream *s, drpc_status st, drpc_error *e) {
    driven *d = (driven *)ud;
    if (st != DRPC_OK) {
        /* Only a stream this test cancelled may fail. */
        if (d->cancel_at < 0) atomic_fetch_add(d->failures, 1);
        drpc_error_free(e);
        drv_finish(d, s);
        return;
    }
    if (drpc_stream_recv_async(s, drv_on_recv, d) != DRPC_OK) {
        atomic_fetch_add(d->failures, 1);
        drv_finish(d, s);
    }
}

static void drv_send_next(driven *d, drpc_stream *s) {
    char msg[32];
    int len = snprintf(msg, sizeof msg, "m%d", d->sent);
    d->sent++;
    if (drpc_stream_send_async(s, (const uint8_t *)msg, (size_t)len, drv_on_sent, d) != DRPC_OK) {
        atomic_fetch_add(d->failures, 1);
        drv_finish(d, s);
    }
}

static void drv_on_recv(void *ud, drpc_stream *s, drpc_status st, drpc_buffer *m, drpc_error *e) {
    driven *d = (driven *)ud;
    if (st == DRPC_END) {
        if (d->received != MSGS) atomic_fetch_add(d->failures, 1);
        drv_finish(d, s);
        return;
    }
    if (st != DRPC_OK) {
        if (d->cancel_at < 0) atomic_fetch_add(d->failures, 1);
        drpc_error_free(e);
        drv_finish(d, s);
        return;
    }
    char want[32];
    int len = snprintf(want, sizeof want, "m%d", d->received);
    if (drpc_buffer_len(m) != (size_t)len || memcmp(drpc_buffer_data(m), want, (size_t)len) != 0)
        atomic_fetch_add(d->failures, 1);
    drpc_buffer_free(m);
    d->received++;
    if (d->received == d->cancel_at) {
        /* Cancelling from a callback; the pending receive reports it. */
        drpc_stream_cancel(s);
        drpc_status rc = drpc_stream_recv_async(s, drv_on_recv, d);
        if (rc != DRPC_OK) drv_finish(d, s);
        return;
    }
    if (d->sent < MSGS) {
        drv_send_next(d, s);
    } else {
        if (drpc_stream_close_send(s, NULL) != DRPC_OK || drpc_stream_recv_async(s, drv_on_recv, d) != DRPC_OK) {
            atomic_fetch_add(d->failures, 1);
            drv_finish(d, s);
        }
    }
}

static void callback_driven_streams(drpc_conn *c) {
    int rounds = ITERS / 10 > 0 ? ITERS / 10 : 1;
    for (int round = 0; round < rounds; round++) {
        latch all;
        latch_init(&all, STREAMS);
        atomic_int failures;
        atomic_init(&failures, 0);
        driven d[STREAMS];
        for (int k = 0; k < STREAMS; k++) {
            d[k].s = NULL;
            d[k].sent = d[k].received = 0;
            d[k].cancel_at = (k % 5 == 4) ? 1 + (int)(next_rand() % (MSGS - 1)) : -1;
            d[k].all_done = &all;
            d[k].failures = &failures;
            CHECK_RC(drpc_conn_stream(c, "/r/AsyncEcho", NULL, 0, &d[k].s, NULL), DRPC_OK);
        }
        /* This thread only starts them; callbacks on the runtime do the rest. */
        for (int k = 0; k < STREAMS; k++) drv_send_next(&d[k], d[k].s);
        CHECK(latch_wait(&all, 120));
        CHECK(atomic_load(&failures) == 0);
        for (int k = 0; k < STREAMS; k++)
            if (d[k].cancel_at < 0) CHECK(d[k].received == MSGS);
        latch_destroy(&all);
    }
}

static void recv_timeout_no_loss(drpc_conn *c) {
    int rounds = ITERS / 10 > 0 ? ITERS / 10 : 1;
    for (int round = 0; round < rounds; round++) {
        drpc_stream *s = NULL;
        CHECK_RC(drpc_conn_stream(c, "/r/Flood", NULL, 0, &s, NULL), DRPC_OK);
        const int count = 200;
        char req[16];
        int len = snprintf(req, sizeof req, "%d", count);
        CHECK_RC(drpc_stream_send(s, (const uint8_t *)req, (size_t)len, NULL), DRPC_OK);
        CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
        int next = 0, timeouts = 0;
        for (;;) {
            drpc_buffer *b = NULL;
            drpc_error *err = NULL;
            drpc_status rc = drpc_stream_recv_timeout(s, (uint64_t)(next % 2), &b, &err);
            if (rc == DRPC_TIMEOUT) {
                CHECK(b == NULL && err == NULL);
                timeouts++;
                continue;
            }
            if (rc == DRPC_END) break;
            CHECK_RC(rc, DRPC_OK);
            drpc_error_free(err);
            if (rc != DRPC_OK) break;
            char want[16];
            int wl = snprintf(want, sizeof want, "%d", next);
            CHECK(drpc_buffer_len(b) == (size_t)wl && memcmp(drpc_buffer_data(b), want, (size_t)wl) == 0);
            drpc_buffer_free(b);
            next++;
        }
        CHECK(next == count);
        (void)timeouts;
        drpc_stream_free(s);
    }
}

static void on_later(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    cb_state *c = (cb_state *)ud;
    (void)call;
    CHECK(st == DRPC_OK || st == DRPC_CANCELED);
    if (st == DRPC_OK) CHECK(drpc_buffer_len(resp) == 5 && memcmp(drpc_buffer_data(resp), "later", 5) == 0);
    atomic_fetch_add(&c->calls, 1);
    drpc_buffer_free(resp);
    drpc_error_free(err);
    latch_down(&c->done);
}

static void async_unary_vs_cancel(drpc_conn *c) {
    pthread_t t;
    pthread_create(&t, NULL, responder, NULL);
    enum { BATCH = 10 };
    int rounds = ITERS / BATCH > 0 ? ITERS / BATCH : 1;
    for (int round = 0; round < rounds; round++) {
        cb_state st;
        latch_init(&st.done, BATCH);
        atomic_init(&st.calls, 0);
        drpc_call *calls[BATCH];
        for (int k = 0; k < BATCH; k++)
            CHECK_RC(drpc_conn_unary_async(c, "/r/Later", (const uint8_t *)"xy", 2, NULL, 0, on_later, &st, &calls[k],
                                           NULL),
                     DRPC_OK);
        for (int k = 0; k < BATCH; k += 2) {
            if (next_rand() % 2) sleep_us((long)(next_rand() % 200));
            CHECK_RC(drpc_call_cancel(calls[k]), DRPC_OK);
        }
        CHECK(latch_wait(&st.done, 60));
        CHECK(atomic_load(&st.calls) == BATCH);
        for (int k = 0; k < BATCH; k++) drpc_call_free(calls[k]);
        latch_destroy(&st.done);
    }
    pthread_mutex_lock(&Q.mu);
    Q.stop = 1;
    pthread_cond_broadcast(&Q.cv);
    pthread_mutex_unlock(&Q.mu);
    pthread_join(t, NULL);
    /* Released unanswered, and answered inside the handler. */
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    CHECK_RC(drpc_conn_unary(c, "/r/Later", (const uint8_t *)"n", 1, NULL, 5000, &b, &err), DRPC_INTERNAL);
    drpc_error_free(err);
    CHECK_RC(drpc_conn_unary(c, "/r/Later", (const uint8_t *)"i", 1, NULL, 5000, &b, NULL), DRPC_OK);
    CHECK(drpc_buffer_len(b) == 1);
    drpc_buffer_free(b);
}

typedef struct {
    drpc_conn *c;
    latch *started;
    int kind, ok, bad;
} conn_arg;

static void on_done_quiet(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    (void)ud;
    (void)call;
    CHECK(st == DRPC_OK);
    drpc_buffer_free(resp);
    drpc_error_free(err);
}

/* Makes calls of one kind until the connection handle is refused. */
static void *t_conn_calls(void *p) {
    conn_arg *a = (conn_arg *)p;
    latch_down(a->started);
    for (;;) {
        drpc_status rc;
        if (a->kind == 0) {
            drpc_buffer *b = NULL;
            rc = drpc_conn_unary(a->c, "/r/Echo", (const uint8_t *)"u", 1, NULL, 0, &b, NULL);
            CHECK(rc != DRPC_OK || drpc_buffer_len(b) == 1);
            drpc_buffer_free(b);
        } else if (a->kind == 1) {
            drpc_call *call = NULL;
            rc = drpc_conn_unary_async(a->c, "/r/Echo", NULL, 0, NULL, 0, on_done_quiet, NULL, &call, NULL);
            if (rc == DRPC_OK) {
                CHECK_RC(drpc_call_wait(call, 0), DRPC_OK);
                drpc_call_free(call);
            }
        } else {
            drpc_stream *s = NULL;
            rc = drpc_conn_stream(a->c, "/r/AsyncEcho", NULL, 0, &s, NULL);
            if (rc == DRPC_OK) {
                drpc_buffer *b = NULL;
                CHECK_RC(drpc_stream_send(s, (const uint8_t *)"s", 1, NULL), DRPC_OK);
                CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
                drpc_buffer_free(b);
                drpc_stream_free(s);
            }
        }
        (void)drpc_conn_is_closed(a->c);
        if (rc == DRPC_BAD_ARGUMENT) break;
        CHECK_RC(rc, DRPC_OK);
        if (rc != DRPC_OK) break;
        a->ok++;
    }
    return NULL;
}

static void conn_free_vs_calls(void) {
    int rounds = ITERS / 3 > 0 ? ITERS / 3 : 1;
    for (int i = 0; i < rounds; i++) {
        drpc_conn *c = dial();
        latch started;
        latch_init(&started, 3);
        conn_arg a[3];
        pthread_t t[3];
        for (int k = 0; k < 3; k++) {
            a[k] = (conn_arg){c, &started, k, 0, 0};
            pthread_create(&t[k], NULL, t_conn_calls, &a[k]);
        }
        latch_wait(&started, 60);
        sleep_us((long)(next_rand() % 2000));
        drpc_conn_free(c);
        for (int k = 0; k < 3; k++) pthread_join(t[k], NULL);
        latch_destroy(&started);
    }
}

typedef struct {
    drpc_server *srv;
    latch *started;
    drpc_status rc;
} srv_arg;

static void *t_shutdown(void *p) {
    srv_arg *a = (srv_arg *)p;
    latch_down(a->started);
    a->rc = drpc_server_shutdown(a->srv, 0, NULL);
    return NULL;
}

static void *t_active(void *p) {
    srv_arg *a = (srv_arg *)p;
    latch_down(a->started);
    /* FAILED_PRECONDITION while listening or shut down; refused once freed. */
    for (;;) {
        (void)drpc_server_active_rpcs(a->srv);
        drpc_status rc = drpc_server_set_max_message_size(a->srv, 1024);
        if (rc == DRPC_BAD_ARGUMENT) break;
        CHECK(rc == DRPC_FAILED_PRECONDITION);
        sched_yield();
    }
    return NULL;
}

static void server_free_vs_shutdown(void) {
    int rounds = ITERS / 3 > 0 ? ITERS / 3 : 1;
    for (int i = 0; i < rounds; i++) {
        char addr[256];
        drpc_server *srv = start_server(addr, sizeof addr);
        drpc_conn *c = NULL;
        CHECK_RC(drpc_conn_dial(addr, NULL, &c, NULL), DRPC_OK);
        drpc_stream *s = NULL;
        CHECK_RC(drpc_conn_stream(c, "/r/Hold", NULL, 0, &s, NULL), DRPC_OK);
        latch started;
        latch_init(&started, 2);
        srv_arg a = {srv, &started, DRPC_OK}, b = {srv, &started, DRPC_OK};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, t_shutdown, &a);
        pthread_create(&t2, NULL, t_active, &b);
        latch_wait(&started, 60);
        if (i % 2) sleep_us((long)(next_rand() % 300));
        drpc_server_free(srv);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        CHECK(a.rc == DRPC_OK || a.rc == DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_server_shutdown(srv, 0, NULL), DRPC_BAD_ARGUMENT);
        /* The client sees its stream end. */
        drpc_buffer *m = NULL;
        drpc_status rc = drpc_stream_recv(s, &m, NULL);
        CHECK(rc != DRPC_OK);
        drpc_stream_free(s);
        drpc_conn_free(c);
        latch_destroy(&started);
    }
}

static void on_never(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    (void)ud;
    (void)call;
    (void)st;
    drpc_buffer_free(resp);
    drpc_error_free(err);
}

static void wrong_and_stale_handles(drpc_conn *c, drpc_server *srv) {
    for (int i = 0; i < ITERS; i++) {
        drpc_stream *s = NULL;
        CHECK_RC(drpc_conn_stream(c, "/r/Hold", NULL, 0, &s, NULL), DRPC_OK);
        drpc_metadata *md = drpc_metadata_new();
        drpc_conn_options *opts = drpc_conn_options_new();
        drpc_buffer *buf = NULL;
        CHECK_RC(drpc_conn_unary(c, "/r/Echo", (const uint8_t *)"abc", 3, NULL, 0, &buf, NULL), DRPC_OK);
        drpc_error *err = NULL;
        CHECK_RC(drpc_conn_unary(c, "/r/Missing", NULL, 0, NULL, 0, NULL, &err), DRPC_BAD_ARGUMENT);
        drpc_call *call = NULL;
        CHECK_RC(drpc_conn_unary_async(c, "/r/Echo", NULL, 0, NULL, 0, on_never, NULL, &call, NULL), DRPC_OK);

        /* A drpc_conn * (and every other kind) where a stream belongs. */
        CHECK_RC(drpc_stream_send((drpc_stream *)c, (const uint8_t *)"x", 1, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_stream_send((drpc_stream *)srv, (const uint8_t *)"x", 1, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_stream_send((drpc_stream *)md, NULL, 0, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_stream_send((drpc_stream *)buf, NULL, 0, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_stream_send((drpc_stream *)err, NULL, 0, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_stream_cancel((drpc_stream *)call), DRPC_BAD_ARGUMENT);
        drpc_buffer *m = NULL;
        CHECK_RC(drpc_stream_recv((drpc_stream *)opts, &m, NULL), DRPC_BAD_ARGUMENT);
        CHECK(!drpc_stream_is_finished((drpc_stream *)c));
        CHECK(drpc_stream_rpc((drpc_stream *)c) == NULL);
        /* And the other way round. */
        drpc_error *e2 = NULL;
        CHECK_RC(drpc_conn_unary((drpc_conn *)s, "/r/Echo", NULL, 0, NULL, 0, &m, &e2), DRPC_BAD_ARGUMENT);
        CHECK(drpc_error_code(e2) == DRPC_BAD_ARGUMENT && strstr(drpc_error_message(e2), "drpc_stream") != NULL);
        drpc_error_free(e2);
        CHECK_RC(drpc_conn_unary((drpc_conn *)c, "/r/Echo", NULL, 0, (drpc_metadata *)opts, 0, &m, NULL),
                 DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_conn_dial(ADDR, (drpc_conn_options *)md, (drpc_conn **)&m, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_call_wait((drpc_call *)srv, 1), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_server_listen((drpc_server *)c, "127.0.0.1:0", NULL, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_server_call_respond((drpc_server_call *)s, NULL, 0), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_metadata_set((drpc_metadata *)opts, "k", "v"), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_conn_options_set_sequential((drpc_conn_options *)md, true), DRPC_BAD_ARGUMENT);
        /* Real pointers of one kind where another (or a handle) belongs. */
        CHECK(drpc_buffer_len((drpc_buffer *)err) == 0 && drpc_buffer_data((drpc_buffer *)c) == NULL);
        CHECK(drpc_error_code((drpc_error *)buf) == DRPC_BAD_ARGUMENT);
        CHECK(drpc_error_code((drpc_error *)s) == DRPC_BAD_ARGUMENT);
        CHECK(strcmp(drpc_error_message((drpc_error *)md), "") == 0);
        /* Freeing with the wrong kind is ignored: everything still works. */
        drpc_stream_free((drpc_stream *)c);
        drpc_conn_free((drpc_conn *)s);
        drpc_server_free((drpc_server *)call);
        drpc_call_free((drpc_call *)srv);
        drpc_metadata_free((drpc_metadata *)opts);
        drpc_conn_options_free((drpc_conn_options *)md);
        drpc_buffer_free((drpc_buffer *)err);
        drpc_error_free((drpc_error *)buf);
        drpc_buffer_free((drpc_buffer *)s);
        drpc_string_free((char *)c);
        CHECK_RC(drpc_stream_send(s, (const uint8_t *)"y", 1, NULL), DRPC_OK);
        CHECK_RC(drpc_metadata_set(md, "k", "v"), DRPC_OK);
        CHECK_RC(drpc_conn_options_set_sequential(opts, false), DRPC_OK);
        CHECK(drpc_buffer_len(buf) == 3 && drpc_error_code(err) == DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_call_wait(call, 0), DRPC_OK);
        /* Freed handles are refused. */
        drpc_stream_free(s);
        drpc_metadata_free(md);
        drpc_conn_options_free(opts);
        drpc_call_free(call);
        CHECK_RC(drpc_stream_send(s, NULL, 0, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_stream_recv_async(s, on_recv_once, NULL), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_metadata_set(md, "k", "v"), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_conn_options_set_sequential(opts, true), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_call_wait(call, 0), DRPC_BAD_ARGUMENT);
        CHECK_RC(drpc_conn_unary(c, "/r/Echo", NULL, 0, md, 0, &m, NULL), DRPC_BAD_ARGUMENT);
        drpc_stream_free(s);
        drpc_call_free(call);
        drpc_buffer_free(buf);
        drpc_error_free(err);
    }
    /* A freed connection. */
    drpc_conn *c2 = dial();
    drpc_conn_free(c2);
    drpc_buffer *m = NULL;
    CHECK_RC(drpc_conn_unary(c2, "/r/Echo", NULL, 0, NULL, 0, &m, NULL), DRPC_BAD_ARGUMENT);
    CHECK(!drpc_conn_is_closed(c2));
    drpc_conn_free(c2);
}

typedef struct {
    const char *name;
    void (*fn)(drpc_conn *, drpc_server *);
} scenario;

static void run_stream_free(drpc_conn *c, drpc_server *s) { (void)s; stream_free_vs_blocked(c); }
static void run_call_cb(drpc_conn *c, drpc_server *s) { (void)s; call_free_in_callback(c); }
static void run_call_wait(drpc_conn *c, drpc_server *s) { (void)s; call_free_vs_wait(c); }
static void run_recv_async(drpc_conn *c, drpc_server *s) { (void)s; recv_async_vs_free(c); }
static void run_driven(drpc_conn *c, drpc_server *s) { (void)s; callback_driven_streams(c); }
static void run_timeout(drpc_conn *c, drpc_server *s) { (void)s; recv_timeout_no_loss(c); }
static void run_async_unary(drpc_conn *c, drpc_server *s) { (void)s; async_unary_vs_cancel(c); }
static void run_server_free(drpc_conn *c, drpc_server *s) { (void)c; (void)s; server_free_vs_shutdown(); }
static void run_wrong(drpc_conn *c, drpc_server *s) { wrong_and_stale_handles(c, s); }
static void run_conn_free(drpc_conn *c, drpc_server *s) { (void)c; (void)s; conn_free_vs_calls(); }

int main(int argc, char **argv) {
    if (argc > 1) ITERS = atoi(argv[1]);
    if (ITERS <= 0) ITERS = 1;
    alarm(1500); /* a hang is a failure, not a stuck CI job */
    static const scenario all[] = {
        {"stream_free_vs_blocked", run_stream_free},
        {"call_free_in_callback", run_call_cb},
        {"call_free_vs_wait", run_call_wait},
        {"recv_async_vs_free", run_recv_async},
        {"callback_driven_streams", run_driven},
        {"recv_timeout_no_loss", run_timeout},
        {"async_unary_vs_cancel", run_async_unary},
        {"server_free_vs_shutdown", run_server_free},
        {"conn_free_vs_calls", run_conn_free},
        {"wrong_and_stale_handles", run_wrong},
    };
    drpc_server *srv = start_server(ADDR, sizeof ADDR);
    drpc_conn *c = dial();
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (argc > 2 && strcmp(argv[2], all[i].name) != 0) continue;
        int before = atomic_load(&check_failures);
        all[i].fn(c, srv);
        if (atomic_load(&check_failures) == before) {
            printf("ok %s\n", all[i].name);
            passed++;
        } else {
            printf("not ok %s\n", all[i].name);
            failed++;
        }
        fflush(stdout);
    }
    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
    if (drpc_live_handles() != 0) {
        printf("not ok no_leaked_handles (%zu live)\n", drpc_live_handles());
        failed++;
    } else {
        printf("ok no_leaked_handles\n");
        passed++;
    }
    printf("race: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
