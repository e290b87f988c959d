/*
 * bench-c: the C ABI contender of bench/ (see bench/README.md), linking
 * target/release/libdrpc.so through include/drpc.h.
 *
 *   bench-c server --addr 127.0.0.1:0     prints "ADDR host:port", serves until stdin closes
 *   bench-c client --addr A --workload W [--size N] [--concurrency N] [--streams N]
 *                  [--calls N] [--warmup S] [--duration S] [--reps N] [--server-pid PID]
 *
 * Unary latency and counting use the blocking drpc_conn_unary; concurrent
 * unary throughput uses drpc_conn_unary_async (each of C callers restarts its
 * call from the completion callback); streams use the blocking stream
 * functions, one thread per stream.
 */
#define _GNU_SOURCE
#include <drpc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define UNARY "/bench.Bench/Unary"
#define STREAM "/bench.Bench/Stream"
#define BIDI "/bench.Bench/Bidi"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, drpc_status rc, drpc_error *err) {
    fprintf(stderr, "bench-c: %s: %s: %s\n", what, drpc_status_name(rc), err ? drpc_error_message(err) : "");
    exit(1);
}

static uint64_t be64(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | b[i];
    return v;
}

static void put_be64(uint8_t *b, uint64_t v) {
    for (int i = 7; i >= 0; i--) { b[i] = (uint8_t)v; v >>= 8; }
}

static long rss_kb(int pid) {
    char path[64], line[256];
    if (pid) snprintf(path, sizeof path, "/proc/%d/status", pid);
    else snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) { kb = atol(line + 6); break; }
    fclose(f);
    return kb;
}

/* ---- server ---- */

/* The unary echo runs on the runtime thread that read the request (the
   opt-in non-blocking registration, drpc_server_register_unary_async): no
   hand-off to a handler thread and back. */
static void h_unary(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    drpc_server_call_respond(call, req, len);
    drpc_server_call_free(call);
}

static uint32_t h_stats(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud; (void)req; (void)len;
    return drpc_server_call_respond(call, (const uint8_t *)"0", 1);
}

static uint32_t h_stream(void *ud, drpc_stream *s) {
    (void)ud;
    drpc_buffer *req = NULL;
    drpc_status rc = drpc_stream_recv(s, &req, NULL);
    if (rc != DRPC_OK) return rc == DRPC_END ? DRPC_INVALID_ARGUMENT : rc;
    uint64_t size = be64(drpc_buffer_data(req)), ms = be64(drpc_buffer_data(req) + 8);
    drpc_buffer_free(req);
    uint8_t *msg = malloc(size ? size : 1);
    memset(msg, 0xa5, size);
    double end = now() + ms / 1000.0;
    while (now() < end) {
        rc = drpc_stream_send(s, msg, size, NULL);
        if (rc != DRPC_OK) break;
    }
    free(msg);
    return rc;
}

static uint32_t h_bidi(void *ud, drpc_stream *s) {
    (void)ud;
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

static int server(const char *addr) {
    drpc_server *srv = drpc_server_new();
    drpc_error *err = NULL;
    drpc_status rc;
    if ((rc = drpc_server_register_unary_async(srv, UNARY, h_unary, NULL, &err))) die("register", rc, err);
    if ((rc = drpc_server_register_unary(srv, "/bench.Bench/Stats", h_stats, NULL, &err))) die("register", rc, err);
    if ((rc = drpc_server_register_stream(srv, STREAM, h_stream, NULL, &err))) die("register", rc, err);
    if ((rc = drpc_server_register_stream(srv, BIDI, h_bidi, NULL, &err))) die("register", rc, err);
    char *bound = NULL;
    if ((rc = drpc_server_listen(srv, addr, &bound, &err))) die("listen", rc, err);
    printf("ADDR %s\n", bound);
    fflush(stdout);
    drpc_string_free(bound);
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {}
    _exit(0); /* like the other servers: stdin closed = stop now */
}

/* ---- client ---- */

typedef struct {
    const char *addr, *workload;
    size_t size;
    int concurrency, streams, reps, server_pid;
    long calls;
    double warmup, duration;
} params;

static drpc_conn *conn;
static uint8_t *payload;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
    if (!n) return 0;
    size_t i = (size_t)(p / 100 * (n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void unary_call(size_t size) {
    drpc_buffer *resp = NULL;
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_unary(conn, UNARY, payload, size, NULL, 0, &resp, &err);
    if (rc != DRPC_OK) die("unary", rc, err);
    drpc_buffer_free(resp);
}

typedef struct bidi { drpc_stream *s; } bidi;

static drpc_stream *open_stream(const char *rpc) {
    drpc_stream *s = NULL;
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_stream(conn, rpc, NULL, 0, &s, &err);
    if (rc != DRPC_OK) die("stream", rc, err);
    return s;
}

static void rt(drpc_stream *s, size_t size) {
    drpc_error *err = NULL;
    drpc_status rc = drpc_stream_send(s, payload, size, &err);
    if (rc != DRPC_OK) die("send", rc, err);
    drpc_buffer *m = NULL;
    rc = drpc_stream_recv(s, &m, &err);
    if (rc != DRPC_OK) die("recv", rc, err);
    drpc_buffer_free(m);
}

static void finish(drpc_stream *s) {
    drpc_stream_close_send(s, NULL);
    drpc_buffer *m = NULL;
    while (drpc_stream_recv(s, &m, NULL) == DRPC_OK) drpc_buffer_free(m);
    drpc_stream_free(s);
}

static void latency_reps(params *p, void (*fn)(void *), void *arg) {
    double end = now() + p->warmup;
    while (now() < end) fn(arg);
    size_t cap = 1 << 20;
    double *lat = malloc(cap * sizeof *lat);
    for (int rep = 0; rep < p->reps; rep++) {
        size_t n = 0;
        double start = now(), stop = start + p->duration;
        for (;;) {
            double t = now();
            if (t >= stop) break;
            fn(arg);
            if (n < cap) lat[n++] = (now() - t) * 1e6;
        }
        double secs = now() - start;
        qsort(lat, n, sizeof *lat, cmp_double);
        printf("{\"rep\":%d,\"calls\":%zu,\"secs\":%f,\"p50_us\":%f,\"p99_us\":%f}\n", rep, n, secs,
               pct(lat, n, 50), pct(lat, n, 99));
        fflush(stdout);
    }
    free(lat);
}

static size_t g_size;
static void do_unary(void *arg) { (void)arg; unary_call(g_size); }
static void do_rt(void *arg) { rt((drpc_stream *)arg, g_size); }

/* closed-loop asynchronous callers */
static atomic_long async_calls;
static atomic_int async_active;
static double async_end;
static void start_async(void);
static void on_done(void *ud, drpc_call *call, drpc_status st, drpc_buffer *resp, drpc_error *err) {
    (void)call;
    (void)ud;
    if (st != DRPC_OK) die("unary_async", st, err);
    drpc_buffer_free(resp);
    atomic_fetch_add(&async_calls, 1);
    if (now() < async_end) start_async();
    else atomic_fetch_sub(&async_active, 1);
}
static void start_async(void) {
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_unary_async(conn, UNARY, payload, g_size, NULL, 0, on_done, NULL, NULL, &err);
    if (rc != DRPC_OK) die("unary_async start", rc, err);
}

/* mux: one thread per stream */
typedef struct {
    drpc_stream *s;
    double end;
    long n;
    int phase; /* 0 open, 1 ping-pong until end */
} mux_slot;

static void *mux_thread(void *arg) {
    mux_slot *m = arg;
    if (m->phase == 0) {
        m->s = open_stream(BIDI);
        rt(m->s, g_size);
    } else {
        m->n = 0;
        while (now() < m->end) { rt(m->s, g_size); m->n++; }
    }
    return NULL;
}

static void run_mux_phase(mux_slot *slots, int n) {
    pthread_t *t = malloc(n * sizeof *t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], &attr, mux_thread, &slots[i])) { perror("pthread_create"); exit(1); }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    free(t);
}

static int client(params *p) {
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_dial(p->addr, NULL, &conn, &err);
    if (rc != DRPC_OK) die("dial", rc, err);
    g_size = p->size;
    payload = malloc(p->size ? p->size : 1);
    memset(payload, 0x5a, p->size);
    const char *w = p->workload;
    if (!strcmp(w, "unary_lat")) {
        latency_reps(p, do_unary, NULL);
    } else if (!strcmp(w, "unary_tput")) {
        for (int rep = 0; rep <= p->reps; rep++) {
            double start = now();
            async_end = start + (rep ? p->duration : p->warmup);
            atomic_store(&async_calls, 0);
            atomic_store(&async_active, p->concurrency);
            for (int i = 0; i < p->concurrency; i++) start_async();
            while (atomic_load(&async_active) > 0) usleep(200);
            double secs = now() - start;
            if (rep) printf("{\"rep\":%d,\"calls\":%ld,\"secs\":%f,\"conns\":1}\n", rep - 1, atomic_load(&async_calls), secs);
            fflush(stdout);
        }
    } else if (!strcmp(w, "stream")) {
        for (int rep = -1; rep < p->reps; rep++) {
            uint8_t req[16];
            put_be64(req, p->size);
            put_be64(req + 8, (uint64_t)((rep < 0 ? p->warmup : p->duration) * 1000));
            double start = now();
            drpc_stream *s = open_stream(STREAM);
            if ((rc = drpc_stream_send(s, req, 16, &err))) die("send", rc, err);
            if ((rc = drpc_stream_close_send(s, &err))) die("close_send", rc, err);
            long msgs = 0, bytes = 0;
            for (;;) {
                drpc_buffer *m = NULL;
                rc = drpc_stream_recv(s, &m, &err);
                if (rc == DRPC_END) break;
                if (rc != DRPC_OK) die("recv", rc, err);
                msgs++;
                bytes += drpc_buffer_len(m);
                drpc_buffer_free(m);
            }
            drpc_stream_free(s);
            double secs = now() - start;
            if (rep >= 0) printf("{\"rep\":%d,\"msgs\":%ld,\"bytes\":%ld,\"secs\":%f}\n", rep, msgs, bytes, secs);
            fflush(stdout);
        }
    } else if (!strcmp(w, "bidi")) {
        drpc_stream *s = open_stream(BIDI);
        latency_reps(p, do_rt, s);
        finish(s);
    } else if (!strcmp(w, "mux")) {
        unary_call(0);
        usleep(200000);
        long cb = rss_kb(0), sb = rss_kb(p->server_pid);
        mux_slot *slots = calloc(p->streams, sizeof *slots);
        double t0 = now();
        run_mux_phase(slots, p->streams);
        double open_secs = now() - t0;
        usleep(200000);
        long ca = rss_kb(0), sa = rss_kb(p->server_pid);
        printf("{\"event\":\"mem\",\"streams\":%d,\"open_secs\":%f,\"conns\":1,\"client_rss_kb_before\":%ld,"
               "\"client_rss_kb_after\":%ld,\"server_rss_kb_before\":%ld,\"server_rss_kb_after\":%ld}\n",
               p->streams, open_secs, cb, ca, sb, sa);
        fflush(stdout);
        for (int rep = 0; rep <= p->reps; rep++) {
            double start = now(), end = start + (rep ? p->duration : p->warmup);
            for (int i = 0; i < p->streams; i++) { slots[i].phase = 1; slots[i].end = end; }
            run_mux_phase(slots, p->streams);
            long total = 0;
            for (int i = 0; i < p->streams; i++) total += slots[i].n;
            if (rep) printf("{\"rep\":%d,\"calls\":%ld,\"secs\":%f}\n", rep - 1, total, now() - start);
            fflush(stdout);
        }
        for (int i = 0; i < p->streams; i++) finish(slots[i].s);
        free(slots);
    } else if (!strcmp(w, "count")) {
        for (int i = 0; i < 200; i++) unary_call(p->size);
        double start = now();
        for (long i = 0; i < p->calls; i++) unary_call(p->size);
        printf("{\"calls\":%ld,\"secs\":%f}\n", p->calls, now() - start);
    } else {
        fprintf(stderr, "unknown workload %s\n", w);
        return 2;
    }
    fflush(stdout);
    drpc_conn_close(conn);
    drpc_conn_free(conn);
    free(payload);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bench-c {server|client} [--key value]...\n"); return 2; }
    params p = {"127.0.0.1:0", "unary_lat", 0, 1, 1, 3, 0, 1000, 0.5, 1.0};
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i] + 2, *v = argv[i + 1];
        if (!strcmp(k, "addr")) p.addr = v;
        else if (!strcmp(k, "workload")) p.workload = v;
        else if (!strcmp(k, "size")) p.size = strtoul(v, NULL, 10);
        else if (!strcmp(k, "concurrency")) p.concurrency = atoi(v);
        else if (!strcmp(k, "streams")) p.streams = atoi(v);
        else if (!strcmp(k, "reps")) p.reps = atoi(v);
        else if (!strcmp(k, "server-pid")) p.server_pid = atoi(v);
        else if (!strcmp(k, "calls")) p.calls = atol(v);
        else if (!strcmp(k, "warmup")) p.warmup = atof(v);
        else if (!strcmp(k, "duration")) p.duration = atof(v);
    }
    if (!strcmp(argv[1], "server")) return server(p.addr);
    if (!strcmp(argv[1], "client")) return client(&p);
    return 2;
}
