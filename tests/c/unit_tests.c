/*
 * Unit tests of the libdrpc C API: every exported function, including its
 * error paths (NULL and invalid arguments, wrong states), against an
 * in-process server. Each test prints "ok NAME" or "not ok NAME" with the
 * failed checks; the last line is "unit: N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drpc.h"

static int check_failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                        \
        }                                                                            \
    } while (0)

#define CHECK_RC(expr, want)                                                                              \
    do {                                                                                                  \
        drpc_status rc_ = (expr);                                                                         \
        if (rc_ != (drpc_status)(want)) {                                                                 \
            fprintf(stderr, "  %s:%d: %s returned %s (%u), want %s (%u)\n", __FILE__, __LINE__, #expr,          \
                    drpc_status_name(rc_), (unsigned)rc_, drpc_status_name(want), (unsigned)(want));       \
            check_failures++;                                                                             \
        }                                                                                                 \
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
/* The test server.                                                    */

typedef struct {
    pthread_mutex_t mu;
    int active, peak;
    int cancelled_seen;
    int respond_twice_rc;
    int blocking_rc;
    char addr[256];
} server_state;

static server_state S = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, {0}};

static uint32_t h_echo(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    CHECK(ud == &S);
    drpc_server_call_free(call); /* a no-op on a blocking handler's call */
    CHECK(strcmp(drpc_server_call_rpc(call), "/t/Echo") == 0);
    CHECK(!drpc_server_call_is_cancelled(call));
    return drpc_server_call_respond(call, req, len);
}

/* Responds with the value of the metadata key named by the request. */
static uint32_t h_meta(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    char key[64] = {0};
    memcpy(key, req, len < 63 ? len : 63);
    const char *v = drpc_server_call_metadata(call, key);
    if (!v) return DRPC_NOT_FOUND;
    return drpc_server_call_respond(call, (const uint8_t *)v, strlen(v));
}

static uint32_t h_fail(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    CHECK_RC(drpc_server_call_fail(call, 1234, "custom\tmessage"), DRPC_OK);
    CHECK_RC(drpc_server_call_respond(call, NULL, 0), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_call_fail(call, 1, "again"), DRPC_FAILED_PRECONDITION);
    return DRPC_OK; /* the recorded failure wins */
}

static uint32_t h_code(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)call;
    (void)req;
    (void)len;
    return DRPC_NOT_FOUND;
}

static uint32_t h_noresp(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)call;
    (void)req;
    (void)len;
    return DRPC_OK;
}

static uint32_t h_garbage(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)call;
    (void)req;
    (void)len;
    return 777;
}

/* Waits up to 5 s for cancellation; then answers. */
static uint32_t h_sleep(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    if (drpc_server_call_wait_cancelled(call, 5000)) {
        CHECK(drpc_server_call_is_cancelled(call));
        pthread_mutex_lock(&S.mu);
        S.cancelled_seen++;
        pthread_mutex_unlock(&S.mu);
        return DRPC_CANCELED;
    }
    return drpc_server_call_respond(call, (const uint8_t *)"late", 4);
}

/* Sleeps 200 ms (cancel-aware), then answers: for graceful shutdown. */
static uint32_t h_short(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    if (drpc_server_call_wait_cancelled(call, 200)) return DRPC_CANCELED;
    S.respond_twice_rc = drpc_server_call_respond(call, (const uint8_t *)"done", 4);
    return DRPC_OK;
}

/* Tracks how many handlers run at once. */
static uint32_t h_conc(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    pthread_mutex_lock(&S.mu);
    if (++S.active > S.peak) S.peak = S.active;
    pthread_mutex_unlock(&S.mu);
    sleep_ms(60);
    pthread_mutex_lock(&S.mu);
    S.active--;
    pthread_mutex_unlock(&S.mu);
    return drpc_server_call_respond(call, NULL, 0);
}

/* A handler that makes a blocking client call to its own server. */
static uint32_t h_blocking(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    drpc_conn *c = NULL;
    drpc_status rc = drpc_conn_dial(S.addr, NULL, &c, NULL);
    if (rc != DRPC_OK) return rc;
    drpc_buffer *b = NULL;
    rc = drpc_conn_unary(c, "/t/Echo", req, len, NULL, 0, &b, NULL);
    if (rc == DRPC_OK) rc = drpc_server_call_respond(call, drpc_buffer_data(b), drpc_buffer_len(b));
    drpc_buffer_free(b);
    drpc_conn_close(c);
    drpc_conn_free(c);
    return rc;
}

static drpc_server *MAIN_SERVER;

/* Shutting down its own server from a handler is refused, not a deadlock. */
static uint32_t h_shutdown_self(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    drpc_error *err = NULL;
    drpc_status rc = drpc_server_shutdown(MAIN_SERVER, 0, &err);
    CHECK(rc == DRPC_FAILED_PRECONDITION && drpc_error_code(err) == DRPC_FAILED_PRECONDITION);
    drpc_error_free(err);
    return drpc_server_call_respond(call, NULL, 0);
}

static uint32_t h_echo_stream(void *ud, drpc_stream *s) {
    CHECK(ud == &S);
    CHECK(strcmp(drpc_stream_rpc(s), "/t/EchoStream") == 0);
    const char *tag = drpc_stream_metadata(s, "tag");
    for (;;) {
        drpc_buffer *b = NULL;
        drpc_status rc = drpc_stream_recv(s, &b, NULL);
        if (rc == DRPC_END) break;
        if (rc != DRPC_OK) return rc;
        rc = drpc_stream_send(s, drpc_buffer_data(b), drpc_buffer_len(b), NULL);
        drpc_buffer_free(b);
        if (rc != DRPC_OK) return rc;
    }
    if (tag) drpc_stream_send(s, (const uint8_t *)tag, strlen(tag), NULL);
    CHECK_RC(drpc_stream_finish(s, 0, NULL), DRPC_BAD_ARGUMENT); /* non-blocking handlers only */
    drpc_stream_free(s); /* a no-op on a blocking handler's stream */
    return DRPC_OK;
}

static uint32_t h_stream_fail(void *ud, drpc_stream *s) {
    (void)ud;
    drpc_stream_send(s, (const uint8_t *)"x", 1, NULL);
    CHECK_RC(drpc_stream_fail(NULL, 7, "denied"), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_fail(s, 7, "denied"), DRPC_OK);
    return DRPC_OK;
}

static uint32_t h_stream_code(void *ud, drpc_stream *s) {
    (void)ud;
    (void)s;
    return DRPC_ABORTED;
}

static uint32_t h_stream_wait(void *ud, drpc_stream *s) {
    (void)ud;
    if (drpc_stream_wait_cancelled(s, 5000)) {
        CHECK(drpc_stream_is_cancelled(s));
        pthread_mutex_lock(&S.mu);
        S.cancelled_seen++;
        pthread_mutex_unlock(&S.mu);
        return DRPC_CANCELED;
    }
    return DRPC_OK;
}

/* Appends "key=value;" for every metadata entry to out (at most n bytes). */
static void list_entries(drpc_status (*entry)(const void *, size_t, const char **, const char **), const void *h,
                         size_t count, char *out, size_t n) {
    out[0] = 0;
    for (size_t i = 0; i < count; i++) {
        const char *k = NULL, *v = NULL;
        CHECK_RC(entry(h, i, &k, &v), DRPC_OK);
        if (!k || !v) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s=%s;", k, v);
    }
}

static drpc_status call_entry(const void *h, size_t i, const char **k, const char **v) {
    return drpc_server_call_metadata_entry((const drpc_server_call *)h, i, k, v);
}

static drpc_status stream_entry(const void *h, size_t i, const char **k, const char **v) {
    return drpc_stream_metadata_entry((const drpc_stream *)h, i, k, v);
}

/* Responds with every metadata entry as "k=v;k=v;", checking the error
 * paths of the listing functions on the way. */
static uint32_t h_meta_list(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    size_t count = 99;
    CHECK_RC(drpc_server_call_metadata_count(NULL, &count), DRPC_BAD_ARGUMENT);
    CHECK(count == 0);
    CHECK_RC(drpc_server_call_metadata_count(call, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_call_metadata_count(call, &count), DRPC_OK);
    const char *k = "x", *v = "x";
    CHECK_RC(drpc_server_call_metadata_entry(call, count, &k, &v), DRPC_BAD_ARGUMENT);
    CHECK(k == NULL && v == NULL);
    k = v = "x";
    CHECK_RC(drpc_server_call_metadata_entry(NULL, 0, &k, &v), DRPC_BAD_ARGUMENT);
    CHECK(k == NULL && v == NULL);
    CHECK_RC(drpc_server_call_metadata_entry(call, 0, NULL, NULL), DRPC_BAD_ARGUMENT);
    if (count > 0) {
        /* Either out pointer alone is fine. */
        k = v = NULL;
        CHECK_RC(drpc_server_call_metadata_entry(call, 0, &k, NULL), DRPC_OK);
        CHECK_RC(drpc_server_call_metadata_entry(call, 0, NULL, &v), DRPC_OK);
        CHECK(k != NULL && v != NULL && drpc_server_call_metadata(call, k) == v);
    }
    char out[1024];
    list_entries(call_entry, call, count, out, sizeof out);
    return drpc_server_call_respond(call, (const uint8_t *)out, strlen(out));
}

/* The streaming twin of h_meta_list: sends the listing as one message. */
static uint32_t h_meta_list_stream(void *ud, drpc_stream *s) {
    (void)ud;
    size_t count = 99;
    CHECK_RC(drpc_stream_metadata_count(NULL, &count), DRPC_BAD_ARGUMENT);
    CHECK(count == 0);
    CHECK_RC(drpc_stream_metadata_count(s, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_metadata_count(s, &count), DRPC_OK);
    const char *k = "x", *v = "x";
    CHECK_RC(drpc_stream_metadata_entry(s, count, &k, &v), DRPC_BAD_ARGUMENT);
    CHECK(k == NULL && v == NULL);
    CHECK_RC(drpc_stream_metadata_entry(NULL, 0, &k, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_metadata_entry(s, 0, NULL, NULL), DRPC_BAD_ARGUMENT);
    char out[1024];
    list_entries(stream_entry, s, count, out, sizeof out);
    return drpc_stream_send(s, (const uint8_t *)out, strlen(out), NULL);
}

/* Receives "COUNT SIZE" and sends COUNT messages of SIZE bytes, message i
 * filled with the byte i % 251. */
static uint32_t h_flood(void *ud, drpc_stream *s) {
    (void)ud;
    drpc_buffer *b = NULL;
    drpc_status rc = drpc_stream_recv(s, &b, NULL);
    if (rc != DRPC_OK) return rc == DRPC_END ? DRPC_INVALID_ARGUMENT : rc;
    char req[64] = {0};
    size_t n = drpc_buffer_len(b);
    memcpy(req, drpc_buffer_data(b), n < 63 ? n : 63);
    drpc_buffer_free(b);
    unsigned count = 0, size = 0;
    if (sscanf(req, "%u %u", &count, &size) != 2 || size == 0) return DRPC_INVALID_ARGUMENT;
    uint8_t *msg = (uint8_t *)malloc(size);
    for (unsigned i = 0; i < count && rc == DRPC_OK; i++) {
        memset(msg, (int)(i % 251), size);
        rc = drpc_stream_send(s, msg, size, NULL);
    }
    free(msg);
    return rc;
}

/* Non-blocking unary: fails with the code given as the request, at once. */
static void h_async_fail(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    CHECK(ud == &S);
    char code[16] = {0};
    memcpy(code, req, len < 15 ? len : 15);
    /* Blocking is refused on a runtime thread. */
    CHECK(!drpc_server_call_wait_cancelled(call, 10));
    CHECK_RC(drpc_server_call_fail(call, strtoull(code, NULL, 10), "async failure"), DRPC_OK);
    CHECK_RC(drpc_server_call_respond(call, NULL, 0), DRPC_FAILED_PRECONDITION);
    CHECK(strcmp(drpc_server_call_rpc(call), "/t/AsyncFail") == 0);
    drpc_server_call_free(call);
    CHECK(drpc_server_call_rpc(call) == NULL);
}

/* Non-blocking stream: sends "hello", then finishes with the code in the
 * metadata key "code" (0 if absent), twice (the second is refused). */
static void h_async_stream(void *ud, drpc_stream *s) {
    CHECK(ud == &S);
    const char *code = drpc_stream_metadata(s, "code");
    CHECK_RC(drpc_stream_send_async(s, (const uint8_t *)"hello", 5, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_finish(s, code ? strtoull(code, NULL, 10) : 0, "async end"), DRPC_OK);
    CHECK_RC(drpc_stream_finish(s, 0, NULL), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_stream_send_async(s, (const uint8_t *)"late", 4, NULL, NULL), DRPC_FAILED_PRECONDITION);
    drpc_stream_free(s);
}

static drpc_server *new_server(void) {
    drpc_server *srv = drpc_server_new();
    CHECK(srv != NULL);
    drpc_error *err = NULL;
    CHECK_RC(drpc_server_register_unary(srv, "/t/Echo", h_echo, &S, &err), DRPC_OK);
    CHECK(err == NULL);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Meta", h_meta, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/MetaList", h_meta_list, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Fail", h_fail, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Code", h_code, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/NoResp", h_noresp, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Garbage", h_garbage, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Sleep", h_sleep, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Short", h_short, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Conc", h_conc, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/Blocking", h_blocking, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(srv, "/t/ShutdownSelf", h_shutdown_self, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/t/EchoStream", h_echo_stream, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/t/MetaListStream", h_meta_list_stream, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/t/Flood", h_flood, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/t/StreamFail", h_stream_fail, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/t/StreamCode", h_stream_code, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/t/StreamWait", h_stream_wait, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary_async(srv, "/t/AsyncFail", h_async_fail, &S, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream_async(srv, "/t/AsyncStream", h_async_stream, &S, NULL), DRPC_OK);
    /* One name, one handler, whatever the kinds. */
    CHECK_RC(drpc_server_register_unary_async(srv, "/t/Echo", h_async_fail, &S, NULL), DRPC_ALREADY_EXISTS);
    CHECK_RC(drpc_server_register_stream_async(srv, "/t/AsyncFail", h_async_stream, &S, NULL), DRPC_ALREADY_EXISTS);
    CHECK_RC(drpc_server_register_unary_async(srv, "/t/X", NULL, &S, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_register_stream_async(srv, "/t/X", NULL, &S, NULL), DRPC_BAD_ARGUMENT);
    return srv;
}

static void listen_server(drpc_server *srv, const char *addr, char *bound, size_t bound_len) {
    drpc_error *err = NULL;
    char *b = NULL;
    CHECK_RC(drpc_server_listen(srv, addr, &b, &err), DRPC_OK);
    CHECK(err == NULL);
    CHECK(b != NULL);
    if (b) snprintf(bound, bound_len, "%s", b);
    drpc_string_free(b);
}

static drpc_server *start_server(const char *addr, char *bound, size_t bound_len) {
    drpc_server *srv = new_server();
    listen_server(srv, addr, bound, bound_len);
    return srv;
}

static drpc_conn *dial(const char *addr, int sequential) {
    drpc_conn_options *o = drpc_conn_options_new();
    CHECK_RC(drpc_conn_options_set_sequential(o, sequential != 0), DRPC_OK);
    drpc_conn *c = NULL;
    drpc_error *err = NULL;
    CHECK_RC(drpc_conn_dial(addr, o, &c, &err), DRPC_OK);
    if (err) fprintf(stderr, "  dial %s: %s\n", addr, drpc_error_message(err));
    drpc_error_free(err);
    drpc_conn_options_free(o);
    return c;
}

/* A blocking unary call returning the status and, in *out, the response
 * as a NUL-terminated malloc'ed string (NULL on failure). */
static drpc_status call_str(drpc_conn *c, const char *rpc, const char *req, uint64_t timeout, char **out,
                            drpc_error **err) {
    drpc_buffer *b = NULL;
    drpc_status rc = drpc_conn_unary(c, rpc, (const uint8_t *)req, req ? strlen(req) : 0, NULL, timeout, &b, err);
    if (out) {
        *out = NULL;
        if (b) {
            size_t n = drpc_buffer_len(b);
            *out = (char *)malloc(n + 1);
            if (n) memcpy(*out, drpc_buffer_data(b), n);
            (*out)[n] = 0;
        }
    }
    drpc_buffer_free(b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Tests.                                                              */

static char ADDR[256];

static void test_version_and_names(void) {
    const char *v = drpc_version();
    CHECK(v != NULL && strlen(v) >= 5 && strchr(v, '.') != NULL);
    CHECK(strcmp(drpc_status_name(DRPC_OK), "OK") == 0);
    CHECK(strcmp(drpc_status_name(DRPC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED") == 0);
    CHECK(strcmp(drpc_status_name(DRPC_UNAUTHENTICATED), "UNAUTHENTICATED") == 0);
    CHECK(strcmp(drpc_status_name(DRPC_BAD_ARGUMENT), "BAD_ARGUMENT") == 0);
    CHECK(strcmp(drpc_status_name(DRPC_END), "END") == 0);
    CHECK(strcmp(drpc_status_name(17), "?") == 0);
    CHECK(strcmp(drpc_status_name(0xFFFFFFFFu), "?") == 0);
}

static void test_null_getters_and_frees(void) {
    CHECK(drpc_error_code(NULL) == DRPC_BAD_ARGUMENT);
    CHECK(drpc_error_wire_code(NULL) == 0);
    CHECK(strcmp(drpc_error_message(NULL), "") == 0);
    CHECK(drpc_error_message_len(NULL) == 0);
    CHECK(drpc_buffer_data(NULL) == NULL);
    CHECK(drpc_buffer_len(NULL) == 0);
    CHECK(!drpc_conn_is_closed(NULL));
    CHECK(!drpc_call_is_done(NULL));
    CHECK(!drpc_stream_is_finished(NULL));
    CHECK(!drpc_stream_is_cancelled(NULL));
    CHECK(!drpc_stream_wait_cancelled(NULL, 1));
    CHECK(drpc_stream_rpc(NULL) == NULL);
    CHECK(drpc_stream_metadata(NULL, "k") == NULL);
    CHECK(drpc_server_active_rpcs(NULL) == 0);
    CHECK(drpc_server_call_rpc(NULL) == NULL);
    CHECK(drpc_server_call_metadata(NULL, "k") == NULL);
    CHECK(!drpc_server_call_is_cancelled(NULL));
    CHECK(!drpc_server_call_wait_cancelled(NULL, 1));
    CHECK_RC(drpc_server_call_respond(NULL, NULL, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_call_fail(NULL, 2, "x"), DRPC_BAD_ARGUMENT);
    size_t count = 7;
    const char *k = "x", *v = "x";
    CHECK_RC(drpc_server_call_metadata_count(NULL, &count), DRPC_BAD_ARGUMENT);
    CHECK(count == 0);
    CHECK_RC(drpc_server_call_metadata_count(NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_call_metadata_entry(NULL, 0, &k, &v), DRPC_BAD_ARGUMENT);
    CHECK(k == NULL && v == NULL);
    count = 7;
    CHECK_RC(drpc_stream_metadata_count(NULL, &count), DRPC_BAD_ARGUMENT);
    CHECK(count == 0);
    k = v = "x";
    CHECK_RC(drpc_stream_metadata_entry(NULL, 0, &k, &v), DRPC_BAD_ARGUMENT);
    CHECK(k == NULL && v == NULL);
    drpc_error_free(NULL);
    drpc_buffer_free(NULL);
    drpc_string_free(NULL);
    drpc_conn_options_free(NULL);
    drpc_metadata_free(NULL);
    drpc_conn_free(NULL);
    drpc_call_free(NULL);
    drpc_stream_free(NULL);
    drpc_server_free(NULL);
}

static void test_options_and_metadata(void) {
    drpc_conn_options *o = drpc_conn_options_new();
    CHECK(o != NULL);
    CHECK_RC(drpc_conn_options_set_sequential(NULL, true), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_sequential(o, true), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_max_message_size(NULL, 10), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_max_message_size(o, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_max_message_size(o, 1 << 20), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_flow_control(NULL, true), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_flow_control(o, true), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_flow_control(o, false), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_flow_control_window(NULL, 1 << 20, 1 << 18), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, 0, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, 100, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, 100, 101), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, (uint64_t)1 << 49, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, UINT64_MAX, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, 100, 100), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, (uint64_t)1 << 48, 1), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_flow_control(o, true), DRPC_OK); /* keeps the window */
    CHECK_RC(drpc_conn_options_set_max_concurrent_streams(NULL, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_max_concurrent_streams(o, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_max_concurrent_streams(o, 5), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_memory_budget(NULL, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_memory_budget(o, 32 << 20), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_connection_memory(o, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_options_set_connection_memory(o, 8 << 20), DRPC_OK);
    CHECK_RC(drpc_conn_options_set_read_timeout(o, 5000), DRPC_OK);
    drpc_conn_options_free(o);

    drpc_metadata *md = drpc_metadata_new();
    CHECK(md != NULL);
    CHECK_RC(drpc_metadata_set(NULL, "k", "v"), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_metadata_set(md, NULL, "v"), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_metadata_set(md, "k", NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_metadata_set(md, "\xff\xfe", "v"), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_metadata_set(md, "k", "v1"), DRPC_OK);
    CHECK_RC(drpc_metadata_set(md, "k", "v2"), DRPC_OK);
    drpc_metadata_free(md);
}

static void test_dial_errors(void) {
    drpc_conn *c = (drpc_conn *)0x1;
    drpc_error *err = NULL;
    CHECK_RC(drpc_conn_dial(NULL, NULL, &c, &err), DRPC_BAD_ARGUMENT);
    CHECK(c == NULL);
    CHECK(err != NULL);
    CHECK(drpc_error_code(err) == DRPC_BAD_ARGUMENT);
    CHECK(drpc_error_wire_code(err) == 3);
    CHECK(strstr(drpc_error_message(err), "addr") != NULL);
    CHECK(drpc_error_message_len(err) == strlen(drpc_error_message(err)));
    drpc_error_free(err);
    CHECK_RC(drpc_conn_dial("127.0.0.1:1", NULL, NULL, NULL), DRPC_BAD_ARGUMENT);
    /* Nothing listens on port 1 of loopback. */
    err = NULL;
    CHECK_RC(drpc_conn_dial("127.0.0.1:1", NULL, &c, &err), DRPC_UNAVAILABLE);
    CHECK(c == NULL);
    CHECK(drpc_error_code(err) == DRPC_UNAVAILABLE);
    drpc_error_free(err);
    CHECK_RC(drpc_conn_dial("not an address", NULL, &c, NULL), DRPC_UNAVAILABLE);
    CHECK_RC(drpc_conn_dial("unix:/nonexistent/drpc.sock", NULL, &c, NULL), DRPC_UNAVAILABLE);
    CHECK(c == NULL);
    CHECK_RC(drpc_conn_close(NULL), DRPC_BAD_ARGUMENT);
}

static void test_server_errors(void) {
    drpc_error *err = NULL;
    CHECK_RC(drpc_server_register_unary(NULL, "/a", h_echo, NULL, &err), DRPC_BAD_ARGUMENT);
    CHECK(drpc_error_code(err) == DRPC_BAD_ARGUMENT);
    drpc_error_free(err);
    drpc_server *srv = drpc_server_new();
    CHECK_RC(drpc_server_register_unary(srv, NULL, h_echo, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_register_unary(srv, "/a", NULL, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_register_stream(srv, "/s", NULL, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_register_stream(NULL, "/s", h_echo_stream, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_register_unary(srv, "/a", h_echo, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_stream(srv, "/a", h_echo_stream, NULL, &err), DRPC_ALREADY_EXISTS);
    CHECK(drpc_error_code(err) == DRPC_ALREADY_EXISTS);
    drpc_error_free(err);
    CHECK_RC(drpc_server_set_max_message_size(NULL, 10), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_max_message_size(srv, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_max_message_size(srv, 1 << 20), DRPC_OK);
    CHECK_RC(drpc_server_set_flow_control(NULL, true), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_flow_control(srv, true), DRPC_OK);
    CHECK_RC(drpc_server_set_flow_control(srv, false), DRPC_OK);
    CHECK_RC(drpc_server_set_flow_control_window(NULL, 1 << 20, 1 << 18), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_flow_control_window(srv, 0, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_flow_control_window(srv, 1000, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_flow_control_window(srv, 1000, 1001), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_flow_control_window(srv, UINT64_MAX, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_flow_control_window(srv, 1 << 20, 1 << 18), DRPC_OK);
    CHECK_RC(drpc_server_set_flow_control(srv, false), DRPC_OK);
    CHECK_RC(drpc_server_set_max_concurrent_streams(NULL, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_max_concurrent_streams(srv, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_max_concurrent_streams(srv, 100), DRPC_OK);
    CHECK_RC(drpc_server_set_memory_budget(NULL, 1), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_memory_budget(srv, 64 << 20), DRPC_OK);
    CHECK_RC(drpc_server_set_connection_memory(srv, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_connection_memory(srv, 8 << 20), DRPC_OK);
    CHECK_RC(drpc_server_set_timeouts(srv, 2000, 60000, 5000), DRPC_OK);
    CHECK_RC(drpc_server_listen(NULL, "127.0.0.1:0", NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_listen(srv, NULL, NULL, NULL), DRPC_BAD_ARGUMENT);
    char *bound = (char *)0x1;
    CHECK_RC(drpc_server_listen(srv, "256.1.1.1:0", &bound, NULL), DRPC_UNAVAILABLE);
    CHECK(bound == NULL);
    CHECK_RC(drpc_server_listen(srv, "127.0.0.1:0", NULL, NULL), DRPC_OK); /* bound_out may be NULL */
    CHECK_RC(drpc_server_register_unary(srv, "/b", h_echo, NULL, NULL), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_max_message_size(srv, 10), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_flow_control(srv, true), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_flow_control_window(srv, 1 << 20, 1 << 18), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_flow_control_window(srv, 0, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_max_concurrent_streams(srv, 10), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_max_concurrent_streams(srv, 0), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_set_memory_budget(srv, 1 << 20), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_timeouts(srv, 1, 1, 1), DRPC_FAILED_PRECONDITION);
    CHECK(drpc_server_active_rpcs(srv) == 0);
    CHECK_RC(drpc_server_shutdown(NULL, 0, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_server_shutdown(srv, 0, NULL), DRPC_OK);
    CHECK_RC(drpc_server_shutdown(srv, 0, NULL), DRPC_OK); /* idempotent */
    CHECK_RC(drpc_server_listen(srv, "127.0.0.1:0", NULL, NULL), DRPC_FAILED_PRECONDITION);
    CHECK_RC(drpc_server_set_flow_control(srv, false), DRPC_FAILED_PRECONDITION);
    drpc_server_free(srv);
    /* A server that never listened. */
    drpc_server_free(drpc_server_new());
}

static void test_unary(void) {
    drpc_conn *c = dial(ADDR, 0);
    char *out = NULL;
    drpc_error *err = NULL;
    CHECK_RC(call_str(c, "/t/Echo", "hello", 0, &out, &err), DRPC_OK);
    CHECK(err == NULL);
    CHECK(out && strcmp(out, "hello") == 0);
    free(out);
    /* Empty request, NULL data. */
    drpc_buffer *b = (drpc_buffer *)0x1;
    CHECK_RC(drpc_conn_unary(c, "/t/Echo", NULL, 0, NULL, 0, &b, NULL), DRPC_OK);
    CHECK(b != NULL && drpc_buffer_len(b) == 0);
    drpc_buffer_free(b);
    /* Bad arguments. */
    CHECK_RC(drpc_conn_unary(NULL, "/t/Echo", NULL, 0, NULL, 0, &b, NULL), DRPC_BAD_ARGUMENT);
    CHECK(b == NULL);
    CHECK_RC(drpc_conn_unary(c, NULL, NULL, 0, NULL, 0, &b, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_unary(c, "/t/Echo", NULL, 5, NULL, 0, &b, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_unary(c, "/t/Echo", NULL, 0, NULL, 0, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_unary(c, "/t/\xff", NULL, 0, NULL, 0, &b, NULL), DRPC_BAD_ARGUMENT);
    /* Metadata. */
    drpc_metadata *md = drpc_metadata_new();
    drpc_metadata_set(md, "x-key", "value/\xe4\xb8\x96");
    b = NULL;
    CHECK_RC(drpc_conn_unary(c, "/t/Meta", (const uint8_t *)"x-key", 5, md, 0, &b, NULL), DRPC_OK);
    CHECK(drpc_buffer_len(b) == 9 && memcmp(drpc_buffer_data(b), "value/\xe4\xb8\x96", 9) == 0);
    drpc_buffer_free(b);
    drpc_metadata_free(md);
    CHECK_RC(call_str(c, "/t/Meta", "missing", 0, NULL, NULL), DRPC_NOT_FOUND);
    /* Handler outcomes. */
    err = NULL;
    CHECK_RC(call_str(c, "/t/Fail", "", 0, NULL, &err), DRPC_UNKNOWN);
    CHECK(drpc_error_wire_code(err) == 1234);
    CHECK(strcmp(drpc_error_message(err), "custom\tmessage") == 0);
    drpc_error_free(err);
    err = NULL;
    CHECK_RC(call_str(c, "/t/Code", "", 0, NULL, &err), DRPC_NOT_FOUND);
    CHECK(drpc_error_code(err) == DRPC_NOT_FOUND);
    drpc_error_free(err);
    CHECK_RC(call_str(c, "/t/NoResp", "", 0, NULL, NULL), DRPC_INTERNAL);
    CHECK_RC(call_str(c, "/t/Garbage", "", 0, NULL, NULL), DRPC_INTERNAL);
    err = NULL;
    CHECK_RC(call_str(c, "/t/Nope", "", 0, NULL, &err), DRPC_UNIMPLEMENTED);
    CHECK(strstr(drpc_error_message(err), "/t/Nope") != NULL);
    drpc_error_free(err);
    /* Timeout: the handler sees the cancellation. */
    int before = S.cancelled_seen;
    double t0 = now_s();
    CHECK_RC(call_str(c, "/t/Sleep", "", 100, NULL, NULL), DRPC_DEADLINE_EXCEEDED);
    CHECK(now_s() - t0 < 1.0);
    for (int i = 0; i < 100 && S.cancelled_seen == before; i++) sleep_ms(20);
    CHECK(S.cancelled_seen > before);
    /* A handler that blocks on a client call of its own. */
    CHECK_RC(call_str(c, "/t/Blocking", "nested", 0, &out, NULL), DRPC_OK);
    CHECK(out && strcmp(out, "nested") == 0);
    free(out);
    CHECK_RC(call_str(c, "/t/ShutdownSelf", "", 0, NULL, NULL), DRPC_OK);
    CHECK_RC(call_str(c, "/t/Echo", "still serving", 0, NULL, NULL), DRPC_OK);
    drpc_conn_close(c);
    drpc_conn_free(c);
}

static void test_max_message_size(void) {
    drpc_conn_options *o = drpc_conn_options_new();
    drpc_conn_options_set_max_message_size(o, 1024);
    drpc_conn *c = NULL;
    CHECK_RC(drpc_conn_dial(ADDR, o, &c, NULL), DRPC_OK);
    drpc_conn_options_free(o);
    uint8_t *big = (uint8_t *)calloc(2000, 1);
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_conn_unary(c, "/t/Echo", big, 2000, NULL, 0, &b, NULL), DRPC_RESOURCE_EXHAUSTED);
    CHECK_RC(drpc_conn_unary(c, "/t/Echo", big, 1000, NULL, 0, &b, NULL), DRPC_OK);
    drpc_buffer_free(b);
    free(big);
    drpc_conn_close(c);
    drpc_conn_free(c);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    drpc_status status;
    drpc_buffer *resp;
    drpc_error *err;
    drpc_status blocking_rc; /* a blocking call made inside the callback */
    drpc_conn *conn;
    drpc_call *call; /* the handle the callback was given */
} async_state;

static void async_init(async_state *a, drpc_conn *c) {
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->done = 0;
    a->status = DRPC_OK;
    a->resp = NULL;
    a->err = NULL;
    a->blocking_rc = DRPC_OK;
    a->conn = c;
    a->call = NULL;
}

static void on_done(void *ud, drpc_call *call, drpc_status status, drpc_buffer *resp, drpc_error *err) {
    async_state *a = (async_state *)ud;
    a->call = call;
    if (a->conn) {
        /* Blocking from a completion callback is refused, not deadlocked. */
        drpc_buffer *b = NULL;
        a->blocking_rc = drpc_conn_unary(a->conn, "/t/Echo", NULL, 0, NULL, 0, &b, NULL);
        drpc_buffer_free(b);
    }
    pthread_mutex_lock(&a->mu);
    a->status = status;
    a->resp = resp;
    a->err = err;
    a->done = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void async_wait(async_state *a) {
    pthread_mutex_lock(&a->mu);
    while (!a->done) pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

static void async_destroy(async_state *a) {
    drpc_buffer_free(a->resp);
    drpc_error_free(a->err);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
}

static void test_unary_async(void) {
    drpc_conn *c = dial(ADDR, 0);
    /* Success, plus a blocking call from inside the callback. */
    async_state a;
    async_init(&a, c);
    drpc_call *call = NULL;
    CHECK_RC(drpc_conn_unary_async(c, "/t/Echo", (const uint8_t *)"abc", 3, NULL, 0, on_done, &a, &call, NULL),
             DRPC_OK);
    CHECK(call != NULL);
    CHECK_RC(drpc_call_wait(call, 0), DRPC_OK);
    CHECK(drpc_call_is_done(call));
    async_wait(&a);
    CHECK(a.status == DRPC_OK && a.err == NULL);
    CHECK(drpc_buffer_len(a.resp) == 3 && memcmp(drpc_buffer_data(a.resp), "abc", 3) == 0);
    CHECK(a.blocking_rc == DRPC_FAILED_PRECONDITION);
    CHECK(a.call == call); /* the callback is given its call */
    CHECK_RC(drpc_call_cancel(call), DRPC_OK); /* after completion: no effect */
    drpc_call_free(call);
    async_destroy(&a);

    /* Cancel. */
    async_init(&a, NULL);
    call = NULL;
    CHECK_RC(drpc_conn_unary_async(c, "/t/Sleep", NULL, 0, NULL, 0, on_done, &a, &call, NULL), DRPC_OK);
    CHECK_RC(drpc_call_wait(call, 50), DRPC_DEADLINE_EXCEEDED);
    CHECK(!drpc_call_is_done(call));
    CHECK_RC(drpc_call_cancel(call), DRPC_OK);
    CHECK_RC(drpc_call_cancel(call), DRPC_OK);
    CHECK_RC(drpc_call_wait(call, 5000), DRPC_OK);
    async_wait(&a);
    CHECK(a.status == DRPC_CANCELED && a.resp == NULL && drpc_error_code(a.err) == DRPC_CANCELED);
    drpc_call_free(call);
    async_destroy(&a);

    /* Timeout; no call handle wanted. */
    async_init(&a, NULL);
    CHECK_RC(drpc_conn_unary_async(c, "/t/Sleep", NULL, 0, NULL, 50, on_done, &a, NULL, NULL), DRPC_OK);
    async_wait(&a);
    CHECK(a.status == DRPC_DEADLINE_EXCEEDED);
    CHECK(a.call == NULL); /* no handle was asked for */
    async_destroy(&a);

    /* Freeing the handle does not cancel: the callback still runs. */
    async_init(&a, NULL);
    call = NULL;
    CHECK_RC(drpc_conn_unary_async(c, "/t/Short", NULL, 0, NULL, 0, on_done, &a, &call, NULL), DRPC_OK);
    drpc_call_free(call);
    async_wait(&a);
    CHECK(a.status == DRPC_OK);
    async_destroy(&a);

    /* Bad arguments: nothing starts, no callback. */
    call = (drpc_call *)&a;
    drpc_error *err = NULL;
    CHECK_RC(drpc_conn_unary_async(c, "/t/Echo", NULL, 0, NULL, 0, NULL, NULL, &call, &err), DRPC_BAD_ARGUMENT);
    CHECK(call == NULL && drpc_error_code(err) == DRPC_BAD_ARGUMENT);
    drpc_error_free(err);
    CHECK_RC(drpc_conn_unary_async(NULL, "/t/Echo", NULL, 0, NULL, 0, on_done, &a, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_unary_async(c, NULL, NULL, 0, NULL, 0, on_done, &a, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_unary_async(c, "/t/Echo", NULL, 3, NULL, 0, on_done, &a, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_call_cancel(NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_call_wait(NULL, 0), DRPC_BAD_ARGUMENT);

    /* Freeing the connection while a call is in flight: the call completes. */
    async_init(&a, NULL);
    CHECK_RC(drpc_conn_unary_async(c, "/t/Short", NULL, 0, NULL, 0, on_done, &a, NULL, NULL), DRPC_OK);
    drpc_conn_free(c);
    async_wait(&a);
    CHECK(a.status == DRPC_OK);
    async_destroy(&a);
}

static void test_sequential_mode(void) {
    for (int seq = 0; seq <= 1; seq++) {
        drpc_conn *c = dial(ADDR, seq);
        S.peak = 0;
        async_state a[4];
        for (int i = 0; i < 4; i++) {
            async_init(&a[i], NULL);
            CHECK_RC(drpc_conn_unary_async(c, "/t/Conc", NULL, 0, NULL, 0, on_done, &a[i], NULL, NULL), DRPC_OK);
        }
        for (int i = 0; i < 4; i++) {
            async_wait(&a[i]);
            CHECK(a[i].status == DRPC_OK);
            async_destroy(&a[i]);
        }
        if (seq)
            CHECK(S.peak == 1);
        else
            CHECK(S.peak >= 2);
        drpc_conn_free(c);
    }
}

static void test_streams(void) {
    drpc_conn *c = dial(ADDR, 0);
    drpc_metadata *md = drpc_metadata_new();
    drpc_metadata_set(md, "tag", "the-end");
    drpc_stream *s = NULL;
    drpc_error *err = NULL;
    CHECK_RC(drpc_conn_stream(c, "/t/EchoStream", md, 0, &s, &err), DRPC_OK);
    drpc_metadata_free(md);
    CHECK(err == NULL && s != NULL);
    CHECK(strcmp(drpc_stream_rpc(s), "/t/EchoStream") == 0);
    CHECK(strcmp(drpc_stream_metadata(s, "tag"), "the-end") == 0);
    CHECK(drpc_stream_metadata(s, "nope") == NULL);
    CHECK(drpc_stream_metadata(s, NULL) == NULL);
    for (int i = 0; i < 3; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "m%d", i);
        CHECK_RC(drpc_stream_send(s, (const uint8_t *)msg, strlen(msg), NULL), DRPC_OK);
        drpc_buffer *b = NULL;
        CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
        CHECK(drpc_buffer_len(b) == strlen(msg) && memcmp(drpc_buffer_data(b), msg, strlen(msg)) == 0);
        drpc_buffer_free(b);
    }
    CHECK_RC(drpc_stream_send(s, NULL, 0, NULL), DRPC_OK);
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
    CHECK(b != NULL && drpc_buffer_len(b) == 0);
    drpc_buffer_free(b);
    CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
    CHECK(drpc_stream_send(s, (const uint8_t *)"x", 1, NULL) != DRPC_OK);
    b = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
    CHECK(drpc_buffer_len(b) == 7);
    drpc_buffer_free(b);
    b = (drpc_buffer *)0x1;
    err = (drpc_error *)0x1;
    CHECK_RC(drpc_stream_recv(s, &b, &err), DRPC_END);
    CHECK(b == NULL && err == NULL);
    CHECK(drpc_stream_is_finished(s));
    CHECK(!drpc_stream_is_cancelled(s));
    CHECK_RC(drpc_stream_fail(s, 2, "x"), DRPC_BAD_ARGUMENT); /* client stream */
    CHECK_RC(drpc_stream_cancel(s), DRPC_OK);                  /* finished: no effect */
    drpc_stream_free(s);

    /* Bad arguments. */
    s = (drpc_stream *)0x1;
    CHECK_RC(drpc_conn_stream(NULL, "/t/EchoStream", NULL, 0, &s, NULL), DRPC_BAD_ARGUMENT);
    CHECK(s == NULL);
    CHECK_RC(drpc_conn_stream(c, NULL, NULL, 0, &s, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_conn_stream(c, "/t/EchoStream", NULL, 0, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_send(NULL, NULL, 0, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_recv(NULL, &b, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_close_send(NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_cancel(NULL), DRPC_BAD_ARGUMENT);

    /* Handler failures. */
    CHECK_RC(drpc_conn_stream(c, "/t/StreamFail", NULL, 0, &s, NULL), DRPC_OK);
    b = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
    drpc_buffer_free(b);
    CHECK_RC(drpc_stream_recv(s, NULL, NULL), DRPC_BAD_ARGUMENT);
    err = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, &err), DRPC_PERMISSION_DENIED);
    CHECK(strcmp(drpc_error_message(err), "denied") == 0);
    drpc_error_free(err);
    drpc_stream_free(s);
    CHECK_RC(drpc_conn_stream(c, "/t/StreamCode", NULL, 0, &s, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_ABORTED);
    drpc_stream_free(s);

    /* Unknown rpc. */
    CHECK_RC(drpc_conn_stream(c, "/t/Nope", NULL, 0, &s, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_UNIMPLEMENTED);
    drpc_stream_free(s);

    /* Timeout of a whole stream; the server handler sees it. */
    int before = S.cancelled_seen;
    CHECK_RC(drpc_conn_stream(c, "/t/StreamWait", NULL, 100, &s, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_DEADLINE_EXCEEDED);
    CHECK(drpc_stream_is_cancelled(s));
    drpc_stream_free(s);
    for (int i = 0; i < 100 && S.cancelled_seen == before; i++) sleep_ms(20);
    CHECK(S.cancelled_seen > before);
    drpc_conn_close(c);
    drpc_conn_free(c);
}

typedef struct {
    drpc_stream *s;
    drpc_status rc;
} recv_job;

static void *recv_thread(void *arg) {
    recv_job *j = (recv_job *)arg;
    drpc_buffer *b = NULL;
    j->rc = drpc_stream_recv(j->s, &b, NULL);
    drpc_buffer_free(b);
    return NULL;
}

static void test_stream_cancel_and_free_from_other_thread(void) {
    drpc_conn *c = dial(ADDR, 0);
    for (int mode = 0; mode < 2; mode++) {
        recv_job j = {NULL, DRPC_OK};
        CHECK_RC(drpc_conn_stream(c, "/t/StreamWait", NULL, 0, &j.s, NULL), DRPC_OK);
        CHECK(!drpc_stream_wait_cancelled(j.s, 20));
        pthread_t t;
        pthread_create(&t, NULL, recv_thread, &j);
        sleep_ms(50);
        if (mode == 0) {
            CHECK_RC(drpc_stream_cancel(j.s), DRPC_OK);
            pthread_join(t, NULL);
            CHECK(drpc_stream_wait_cancelled(j.s, 0));
            drpc_stream_free(j.s);
        } else {
            drpc_stream_free(j.s); /* while the other thread is blocked in recv */
            pthread_join(t, NULL);
        }
        CHECK(j.rc == DRPC_CANCELED);
    }
    /* The connection is still fine. */
    CHECK_RC(call_str(c, "/t/Echo", "still", 0, NULL, NULL), DRPC_OK);
    drpc_conn_close(c);
    drpc_conn_free(c);
}

static void test_conn_close(void) {
    drpc_conn *c = dial(ADDR, 0);
    CHECK(!drpc_conn_is_closed(c));
    drpc_stream *s = NULL;
    CHECK_RC(drpc_conn_stream(c, "/t/StreamWait", NULL, 0, &s, NULL), DRPC_OK);
    CHECK_RC(drpc_conn_close(c), DRPC_OK);
    CHECK_RC(drpc_conn_close(c), DRPC_OK);
    CHECK(drpc_conn_is_closed(c));
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_UNAVAILABLE);
    drpc_stream_free(s);
    CHECK_RC(call_str(c, "/t/Echo", "x", 0, NULL, NULL), DRPC_UNAVAILABLE);
    CHECK_RC(drpc_conn_stream(c, "/t/EchoStream", NULL, 0, &s, NULL), DRPC_UNAVAILABLE);
    drpc_conn_free(c);
}

static void test_unix_socket(void) {
    char path[128], bound[256];
    snprintf(path, sizeof path, "unix:/tmp/drpc-unit-%d.sock", (int)getpid());
    drpc_server *srv = start_server(path, bound, sizeof bound);
    CHECK(strcmp(bound, path) == 0);
    drpc_conn *c = dial(bound, 0);
    char *out = NULL;
    CHECK_RC(call_str(c, "/t/Echo", "over unix", 0, &out, NULL), DRPC_OK);
    CHECK(out && strcmp(out, "over unix") == 0);
    free(out);
    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
}

static void test_graceful_shutdown(void) {
    char bound[256];
    drpc_server *srv = start_server("127.0.0.1:0", bound, sizeof bound);
    drpc_conn *c = dial(bound, 0);
    async_state a;
    async_init(&a, NULL);
    S.respond_twice_rc = -1;
    CHECK_RC(drpc_conn_unary_async(c, "/t/Short", NULL, 0, NULL, 0, on_done, &a, NULL, NULL), DRPC_OK);
    for (int i = 0; i < 100 && drpc_server_active_rpcs(srv) == 0; i++) sleep_ms(5);
    CHECK(drpc_server_active_rpcs(srv) == 1);
    CHECK_RC(drpc_server_shutdown(srv, 3000, NULL), DRPC_OK); /* the call finishes within the grace */
    async_wait(&a);
    CHECK(a.status == DRPC_OK);
    CHECK(drpc_buffer_len(a.resp) == 4);
    async_destroy(&a);
    /* New calls are refused. */
    CHECK(call_str(c, "/t/Echo", "x", 0, NULL, NULL) != DRPC_OK);
    drpc_conn_free(c);
    drpc_server_free(srv);
}

static void test_free_server_with_calls_in_flight(void) {
    char bound[256];
    drpc_server *srv = start_server("127.0.0.1:0", bound, sizeof bound);
    drpc_conn *c = dial(bound, 0);
    async_state a;
    async_init(&a, NULL);
    int before = S.cancelled_seen;
    CHECK_RC(drpc_conn_unary_async(c, "/t/Sleep", NULL, 0, NULL, 0, on_done, &a, NULL, NULL), DRPC_OK);
    for (int i = 0; i < 100 && drpc_server_active_rpcs(srv) == 0; i++) sleep_ms(5);
    double t0 = now_s();
    drpc_server_free(srv); /* no grace: the handler is cancelled and has returned when this returns */
    CHECK(now_s() - t0 < 3.0);
    CHECK(S.cancelled_seen == before + 1);
    async_wait(&a);
    CHECK(a.status == DRPC_UNAVAILABLE || a.status == DRPC_CANCELED);
    async_destroy(&a);
    drpc_conn_free(c);
}

/* Opens a stream with metadata md (may be NULL) and returns the first
 * message as a malloc'ed string (NULL on failure). */
static char *stream_first_message(drpc_conn *c, const char *rpc, const drpc_metadata *md, drpc_status *rc_out) {
    drpc_stream *s = NULL;
    char *out = NULL;
    drpc_status rc = drpc_conn_stream(c, rpc, md, 0, &s, NULL);
    if (rc == DRPC_OK) rc = drpc_stream_close_send(s, NULL);
    drpc_buffer *b = NULL;
    if (rc == DRPC_OK) rc = drpc_stream_recv(s, &b, NULL);
    if (rc == DRPC_OK) {
        size_t n = drpc_buffer_len(b);
        out = (char *)malloc(n + 1);
        if (n) memcpy(out, drpc_buffer_data(b), n);
        out[n] = 0;
    }
    drpc_buffer_free(b);
    drpc_stream_free(s);
    if (rc_out) *rc_out = rc;
    return out;
}

static void test_metadata_listing(void) {
    drpc_conn *c = dial(ADDR, 0);
    drpc_metadata *md = drpc_metadata_new();
    CHECK_RC(drpc_metadata_set(md, "zeta", "last"), DRPC_OK);
    CHECK_RC(drpc_metadata_set(md, "alpha", "first"), DRPC_OK);
    CHECK_RC(drpc_metadata_set(md, "mid", "\xe4\xb8\x96"), DRPC_OK);
    CHECK_RC(drpc_metadata_set(md, "empty", ""), DRPC_OK);
    const char *want = "alpha=first;empty=;mid=\xe4\xb8\x96;zeta=last;";
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_conn_unary(c, "/t/MetaList", NULL, 0, md, 0, &b, NULL), DRPC_OK);
    CHECK(drpc_buffer_len(b) == strlen(want) && memcmp(drpc_buffer_data(b), want, strlen(want)) == 0);
    drpc_buffer_free(b);
    /* No metadata: no entries. */
    b = NULL;
    CHECK_RC(drpc_conn_unary(c, "/t/MetaList", NULL, 0, NULL, 0, &b, NULL), DRPC_OK);
    CHECK(b != NULL && drpc_buffer_len(b) == 0);
    drpc_buffer_free(b);
    /* Server streams. */
    drpc_status rc;
    char *out = stream_first_message(c, "/t/MetaListStream", md, &rc);
    CHECK(rc == DRPC_OK && out && strcmp(out, want) == 0);
    free(out);
    out = stream_first_message(c, "/t/MetaListStream", NULL, &rc);
    CHECK(rc == DRPC_OK && out && strcmp(out, "") == 0);
    free(out);
    /* Client streams list what they were opened with. */
    drpc_stream *s = NULL;
    CHECK_RC(drpc_conn_stream(c, "/t/EchoStream", md, 0, &s, NULL), DRPC_OK);
    size_t count = 0;
    CHECK_RC(drpc_stream_metadata_count(s, &count), DRPC_OK);
    CHECK(count == 4);
    const char *k = NULL, *v = NULL;
    CHECK_RC(drpc_stream_metadata_entry(s, 3, &k, &v), DRPC_OK);
    CHECK(k && v && strcmp(k, "zeta") == 0 && strcmp(v, "last") == 0);
    CHECK_RC(drpc_stream_metadata_entry(s, 4, &k, &v), DRPC_BAD_ARGUMENT);
    CHECK(k == NULL && v == NULL);
    CHECK_RC(drpc_stream_metadata_count(s, NULL), DRPC_BAD_ARGUMENT);
    drpc_stream_free(s);
    drpc_metadata_free(md);
    drpc_conn_close(c);
    drpc_conn_free(c);
}

static void test_compression(void) {
    drpc_conn *c = dial(ADDR, 0);
    enum { N = 200000 };
    uint8_t *data = (uint8_t *)malloc(N);
    for (size_t i = 0; i < N; i++) data[i] = (uint8_t)("compressible text "[i % 18]);
    const char *codecs[2] = {"snappy", "minlz-fastest"};
    for (int i = 0; i < 2; i++) {
        drpc_metadata *md = drpc_metadata_new();
        CHECK_RC(drpc_metadata_set(md, "drpc-compression", codecs[i]), DRPC_OK);
        /* Unary: the large message survives the round trip. */
        drpc_buffer *b = NULL;
        CHECK_RC(drpc_conn_unary(c, "/t/Echo", data, N, md, 0, &b, NULL), DRPC_OK);
        CHECK(drpc_buffer_len(b) == N && memcmp(drpc_buffer_data(b), data, N) == 0);
        drpc_buffer_free(b);
        /* The handler sees the choice in the metadata. */
        b = NULL;
        CHECK_RC(drpc_conn_unary(c, "/t/Meta", (const uint8_t *)"drpc-compression", 16, md, 0, &b, NULL), DRPC_OK);
        CHECK(drpc_buffer_len(b) == strlen(codecs[i]) && memcmp(drpc_buffer_data(b), codecs[i], strlen(codecs[i])) == 0);
        drpc_buffer_free(b);
        /* Streams: every message in both directions. */
        drpc_stream *s = NULL;
        CHECK_RC(drpc_conn_stream(c, "/t/EchoStream", md, 0, &s, NULL), DRPC_OK);
        for (size_t len = 1; len <= N; len *= 10) {
            CHECK_RC(drpc_stream_send(s, data, len, NULL), DRPC_OK);
            b = NULL;
            CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
            CHECK(drpc_buffer_len(b) == len && memcmp(drpc_buffer_data(b), data, len) == 0);
            drpc_buffer_free(b);
        }
        CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
        b = NULL;
        CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_END);
        drpc_stream_free(s);
        drpc_metadata_free(md);
    }
    /* An unknown codec fails before anything is sent. */
    drpc_metadata *md = drpc_metadata_new();
    CHECK_RC(drpc_metadata_set(md, "drpc-compression", "zstd"), DRPC_OK);
    drpc_buffer *b = (drpc_buffer *)0x1;
    drpc_error *err = NULL;
    CHECK_RC(drpc_conn_unary(c, "/t/Echo", data, 10, md, 0, &b, &err), DRPC_UNIMPLEMENTED);
    CHECK(b == NULL && err && strstr(drpc_error_message(err), "zstd") != NULL);
    drpc_error_free(err);
    drpc_metadata_free(md);
    CHECK_RC(call_str(c, "/t/Echo", "still fine", 0, NULL, NULL), DRPC_OK);
    free(data);
    drpc_conn_close(c);
    drpc_conn_free(c);
}

/* Flow control on both sides: a stream nobody reads holds back its sender
 * (the handler stays blocked in send) without stalling other calls; reading
 * it later gets every byte. */
static void test_flow_control(void) {
    char bound[256];
    drpc_server *srv = new_server();
    CHECK_RC(drpc_server_set_flow_control_window(srv, 64 << 10, 16 << 10), DRPC_OK);
    listen_server(srv, "127.0.0.1:0", bound, sizeof bound);
    drpc_conn_options *o = drpc_conn_options_new();
    CHECK_RC(drpc_conn_options_set_flow_control_window(o, 64 << 10, 16 << 10), DRPC_OK);
    drpc_conn *c = NULL;
    CHECK_RC(drpc_conn_dial(bound, o, &c, NULL), DRPC_OK);
    drpc_conn_options_free(o);

    enum { COUNT = 64, SIZE = 16 << 10 }; /* 1 MiB against a 64 KiB window */
    drpc_stream *a = NULL;
    CHECK_RC(drpc_conn_stream(c, "/t/Flood", NULL, 0, &a, NULL), DRPC_OK);
    char req[32];
    snprintf(req, sizeof req, "%d %d", COUNT, SIZE);
    CHECK_RC(drpc_stream_send(a, (const uint8_t *)req, strlen(req), NULL), DRPC_OK);
    CHECK_RC(drpc_stream_close_send(a, NULL), DRPC_OK);
    for (int i = 0; i < 20; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "call %d", i);
        char *out = NULL;
        CHECK_RC(call_str(c, "/t/Echo", msg, 5000, &out, NULL), DRPC_OK);
        CHECK(out && strcmp(out, msg) == 0);
        free(out);
    }
    sleep_ms(100);
    CHECK(drpc_server_active_rpcs(srv) == 1); /* the flood handler waits for credit */
    for (int i = 0; i < COUNT; i++) {
        drpc_buffer *b = NULL;
        drpc_status rc = drpc_stream_recv(a, &b, NULL);
        CHECK_RC(rc, DRPC_OK);
        if (rc != DRPC_OK) break;
        const uint8_t *p = drpc_buffer_data(b);
        int ok = drpc_buffer_len(b) == SIZE;
        for (size_t k = 0; ok && k < SIZE; k++) ok = p[k] == (uint8_t)(i % 251);
        CHECK(ok);
        drpc_buffer_free(b);
    }
    drpc_buffer *b = NULL;
    CHECK_RC(drpc_stream_recv(a, &b, NULL), DRPC_END);
    drpc_stream_free(a);
    drpc_conn_close(c);
    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
}

/* Server side: streams beyond the limit are refused with UNAVAILABLE and
 * the connection stays usable. Client side: calls beyond the limit queue. */
static void test_max_concurrent_streams(void) {
    char bound[256];
    drpc_server *srv = new_server();
    CHECK_RC(drpc_server_set_max_concurrent_streams(srv, 2), DRPC_OK);
    listen_server(srv, "127.0.0.1:0", bound, sizeof bound);
    drpc_conn *c = dial(bound, 0);
    drpc_stream *s[3] = {NULL, NULL, NULL};
    CHECK_RC(drpc_conn_stream(c, "/t/StreamWait", NULL, 0, &s[0], NULL), DRPC_OK);
    CHECK_RC(drpc_conn_stream(c, "/t/StreamWait", NULL, 0, &s[1], NULL), DRPC_OK);
    for (int i = 0; i < 100 && drpc_server_active_rpcs(srv) < 2; i++) sleep_ms(10);
    CHECK(drpc_server_active_rpcs(srv) == 2);
    CHECK_RC(drpc_conn_stream(c, "/t/StreamWait", NULL, 0, &s[2], NULL), DRPC_OK);
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    CHECK_RC(drpc_stream_recv(s[2], &b, &err), DRPC_UNAVAILABLE);
    drpc_error_free(err);
    CHECK_RC(call_str(c, "/t/Echo", "refused", 0, NULL, NULL), DRPC_UNAVAILABLE);
    drpc_stream_free(s[0]);
    drpc_stream_free(s[1]);
    drpc_stream_free(s[2]);
    drpc_status rc = DRPC_UNAVAILABLE;
    for (int i = 0; i < 100 && rc == DRPC_UNAVAILABLE; i++) {
        rc = call_str(c, "/t/Echo", "room again", 0, NULL, NULL);
        if (rc == DRPC_UNAVAILABLE) sleep_ms(20);
    }
    CHECK_RC(rc, DRPC_OK);
    CHECK(!drpc_conn_is_closed(c));
    drpc_conn_close(c);
    drpc_conn_free(c);
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);

    /* Client limit of 1 on a multiplexing connection: calls run one by one. */
    drpc_conn_options *o = drpc_conn_options_new();
    CHECK_RC(drpc_conn_options_set_max_concurrent_streams(o, 1), DRPC_OK);
    c = NULL;
    CHECK_RC(drpc_conn_dial(ADDR, o, &c, NULL), DRPC_OK);
    drpc_conn_options_free(o);
    S.peak = 0;
    async_state a[3];
    for (int i = 0; i < 3; i++) {
        async_init(&a[i], NULL);
        CHECK_RC(drpc_conn_unary_async(c, "/t/Conc", NULL, 0, NULL, 0, on_done, &a[i], NULL, NULL), DRPC_OK);
    }
    for (int i = 0; i < 3; i++) {
        async_wait(&a[i]);
        CHECK(a[i].status == DRPC_OK);
        async_destroy(&a[i]);
    }
    CHECK(S.peak == 1);
    drpc_conn_free(c);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} test_def;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    drpc_status status[8];
    drpc_buffer *msg[8];
    drpc_error *err[8];
    drpc_stream *stream[8];
} recv_log;

static void on_recv_log(void *ud, drpc_stream *s, drpc_status st, drpc_buffer *m, drpc_error *e) {
    recv_log *l = (recv_log *)ud;
    pthread_mutex_lock(&l->mu);
    if (l->n < 8) {
        l->status[l->n] = st;
        l->msg[l->n] = m;
        l->err[l->n] = e;
        l->stream[l->n] = s;
        l->n++;
    } else {
        drpc_buffer_free(m);
        drpc_error_free(e);
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static int log_wait(recv_log *l, int n) {
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < 500 && l->n < n; i++) {
        pthread_mutex_unlock(&l->mu);
        sleep_ms(10);
        pthread_mutex_lock(&l->mu);
    }
    int got = l->n;
    pthread_mutex_unlock(&l->mu);
    return got >= n;
}

static void log_free(recv_log *l) {
    for (int i = 0; i < l->n; i++) {
        drpc_buffer_free(l->msg[i]);
        drpc_error_free(l->err[i]);
    }
}

static int buf_is(const drpc_buffer *b, const char *s) {
    return b && drpc_buffer_len(b) == strlen(s) && memcmp(drpc_buffer_data(b), s, strlen(s)) == 0;
}

static void test_nonblocking_api(void) {
    CHECK(strcmp(drpc_status_name(DRPC_TIMEOUT), "TIMEOUT") == 0);
    /* The runtime runs: configuring it now is refused. */
    CHECK_RC(drpc_runtime_configure(1, 1), DRPC_FAILED_PRECONDITION);
    drpc_conn *c = dial(ADDR, 0);
    drpc_stream *s = NULL;
    CHECK_RC(drpc_conn_stream(c, "/t/EchoStream", NULL, 0, &s, NULL), DRPC_OK);

    /* Receive with a timeout: nothing yet. */
    drpc_buffer *b = (drpc_buffer *)0x1;
    drpc_error *err = (drpc_error *)0x1;
    CHECK_RC(drpc_stream_recv_timeout(s, 0, &b, &err), DRPC_TIMEOUT);
    CHECK(b == NULL && err == NULL);
    double t0 = now_s();
    CHECK_RC(drpc_stream_recv_timeout(s, 50, &b, NULL), DRPC_TIMEOUT);
    CHECK(now_s() - t0 >= 0.04);
    CHECK_RC(drpc_stream_send(s, (const uint8_t *)"a", 1, NULL), DRPC_OK);
    CHECK_RC(drpc_stream_recv_timeout(s, 5000, &b, NULL), DRPC_OK);
    CHECK(buf_is(b, "a"));
    drpc_buffer_free(b);
    CHECK_RC(drpc_stream_recv_timeout(NULL, 0, &b, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_recv_timeout(s, 0, NULL, NULL), DRPC_BAD_ARGUMENT);

    /* Callbacks: send two messages and close; the close follows the pending
     * send; the echoes and the end arrive in order. */
    recv_log l;
    memset(&l, 0, sizeof l);
    pthread_mutex_init(&l.mu, NULL);
    pthread_cond_init(&l.cv, NULL);
    CHECK_RC(drpc_stream_recv_async(s, NULL, &l), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_recv_async(NULL, on_recv_log, &l), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_send_async(NULL, NULL, 0, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_send_async(s, NULL, 3, NULL, NULL), DRPC_BAD_ARGUMENT);
    CHECK_RC(drpc_stream_send_async(s, (const uint8_t *)"b", 1, NULL, NULL), DRPC_OK);
    drpc_status second = drpc_stream_send_async(s, (const uint8_t *)"c", 1, NULL, NULL);
    if (second == DRPC_FAILED_PRECONDITION) { /* the first was still pending */
        for (int i = 0; i < 500 && second == DRPC_FAILED_PRECONDITION; i++) {
            sleep_ms(2);
            second = drpc_stream_send_async(s, (const uint8_t *)"c", 1, NULL, NULL);
        }
    }
    CHECK_RC(second, DRPC_OK);
    CHECK_RC(drpc_stream_close_send(s, NULL), DRPC_OK);
    const char *want[3] = {"b", "c", NULL};
    for (int i = 0; i < 3; i++) {
        CHECK_RC(drpc_stream_recv_async(s, on_recv_log, &l), DRPC_OK);
        CHECK(log_wait(&l, i + 1));
        if (l.n <= i) break;
        CHECK(l.stream[i] == s);
        if (want[i]) {
            CHECK(l.status[i] == DRPC_OK && buf_is(l.msg[i], want[i]));
        } else {
            CHECK(l.status[i] == DRPC_END && l.msg[i] == NULL && l.err[i] == NULL);
        }
    }
    log_free(&l);
    CHECK_RC(drpc_stream_finish(s, 0, NULL), DRPC_BAD_ARGUMENT); /* a client stream */
    drpc_stream_free(s);

    /* A non-blocking unary handler failing at once. */
    drpc_buffer *resp = NULL;
    err = NULL;
    CHECK_RC(drpc_conn_unary(c, "/t/AsyncFail", (const uint8_t *)"1234", 4, NULL, 5000, &resp, &err), DRPC_UNKNOWN);
    CHECK(drpc_error_wire_code(err) == 1234 && strcmp(drpc_error_message(err), "async failure") == 0);
    drpc_error_free(err);

    /* A non-blocking stream handler: "hello" then its end, clean or not. */
    for (int failing = 0; failing <= 1; failing++) {
        drpc_metadata *md = drpc_metadata_new();
        if (failing) drpc_metadata_set(md, "code", "7");
        CHECK_RC(drpc_conn_stream(c, "/t/AsyncStream", md, 5000, &s, NULL), DRPC_OK);
        drpc_metadata_free(md);
        CHECK_RC(drpc_stream_recv(s, &b, NULL), DRPC_OK);
        CHECK(buf_is(b, "hello"));
        drpc_buffer_free(b);
        err = NULL;
        CHECK_RC(drpc_stream_recv(s, &b, &err), failing ? DRPC_PERMISSION_DENIED : DRPC_END);
        if (failing) CHECK(strcmp(drpc_error_message(err), "async end") == 0);
        drpc_error_free(err);
        drpc_stream_free(s);
    }
    pthread_mutex_destroy(&l.mu);
    pthread_cond_destroy(&l.cv);
    drpc_conn_free(c);
}

int main(void) {
    static const test_def tests[] = {
        {"version_and_names", test_version_and_names},
        {"null_getters_and_frees", test_null_getters_and_frees},
        {"options_and_metadata", test_options_and_metadata},
        {"dial_errors", test_dial_errors},
        {"server_errors", test_server_errors},
        {"unary", test_unary},
        {"max_message_size", test_max_message_size},
        {"unary_async", test_unary_async},
        {"sequential_mode", test_sequential_mode},
        {"streams", test_streams},
        {"stream_cancel_and_free_from_other_thread", test_stream_cancel_and_free_from_other_thread},
        {"conn_close", test_conn_close},
        {"unix_socket", test_unix_socket},
        {"graceful_shutdown", test_graceful_shutdown},
        {"free_server_with_calls_in_flight", test_free_server_with_calls_in_flight},
        {"metadata_listing", test_metadata_listing},
        {"compression", test_compression},
        {"flow_control", test_flow_control},
        {"max_concurrent_streams", test_max_concurrent_streams},
        {"nonblocking_api", test_nonblocking_api},
    };
    drpc_server *srv = start_server("127.0.0.1:0", ADDR, sizeof ADDR);
    MAIN_SERVER = srv;
    snprintf(S.addr, sizeof S.addr, "%s", ADDR);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = check_failures;
        tests[i].fn();
        if (check_failures == before) {
            printf("ok %s\n", tests[i].name);
            passed++;
        } else {
            printf("not ok %s\n", tests[i].name);
            failed++;
        }
        fflush(stdout);
    }
    CHECK_RC(drpc_server_shutdown(srv, 1000, NULL), DRPC_OK);
    drpc_server_free(srv);
    /* Every handle the tests made was freed. */
    if (drpc_live_handles() == 0) {
        printf("ok no_leaked_handles\n");
        passed++;
    } else {
        printf("not ok no_leaked_handles (%zu live)\n", drpc_live_handles());
        failed++;
    }
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
