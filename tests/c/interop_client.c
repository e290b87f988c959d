/*
 * drpc-interop-client-c: runs the cases of shared/interop/CASES.md against a
 * TestService server, using libdrpc from C and protobuf-c messages.
 *
 * Usage: interop_client --addr HOST:PORT --case NAME|all [--case NAME ...]
 *                       [--mode mux|sequential] [--flow-control]
 * Prints "PASS name" or "FAIL name: reason" per case; exits 1 if any failed,
 * 2 on a usage error. --flow-control turns on per-stream flow control (the
 * server must have it too); "all" includes slow_reader_isolation only with
 * --flow-control in mux mode, like the Rust client.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>

#include "interop_common.h"

#define WHY_LEN 1024
typedef int (*case_fn)(drpc_conn *c, char *why);

#define FAIL(...)                            \
    do {                                     \
        snprintf(why, WHY_LEN, __VA_ARGS__); \
        return 1;                            \
    } while (0)

/* "CODE: message" of an error, in a static per-thread buffer; frees err. */
static const char *errstr(drpc_status rc, drpc_error *err) {
    static _Thread_local char buf[600];
    snprintf(buf, sizeof buf, "%s (%u): %s", drpc_status_name(rc), (unsigned)rc, err ? drpc_error_message(err) : "");
    drpc_error_free(err);
    return buf;
}

static drpc_status unary(drpc_conn *c, const char *rpc, const ProtobufCMessage *req, const drpc_metadata *md,
                         uint64_t timeout_ms, drpc_buffer **resp, drpc_error **err) {
    packed_t p = pack_message(req);
    drpc_status rc = drpc_conn_unary(c, rpc, p.data, p.len, md, timeout_ms, resp, err);
    free(p.data);
    return rc;
}

static drpc_status send_msg(drpc_stream *s, const ProtobufCMessage *msg, drpc_error **err) {
    packed_t p = pack_message(msg);
    drpc_status rc = drpc_stream_send(s, p.data, p.len, err);
    free(p.data);
    return rc;
}

static int is_zeros(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* A payload of n zero bytes; free p->body.data. */
static Drpc__Interop__Payload payload(size_t n) {
    Drpc__Interop__Payload p = DRPC__INTEROP__PAYLOAD__INIT;
    p.body.len = n;
    p.body.data = (uint8_t *)calloc(n ? n : 1, 1);
    return p;
}

static int get_stats(drpc_conn *c, Drpc__Interop__ServerStats *out, char *why) {
    Drpc__Interop__Empty e = DRPC__INTEROP__EMPTY__INIT;
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_GET_STATS, &e.base, NULL, 0, &b, &err);
    if (rc != DRPC_OK) FAIL("GetStats: %s", errstr(rc, err));
    Drpc__Interop__ServerStats *s = drpc__interop__server_stats__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
    drpc_buffer_free(b);
    if (!s) FAIL("GetStats: cannot decode ServerStats");
    *out = *s;
    drpc__interop__server_stats__free_unpacked(s, NULL);
    return 0;
}

/* ---- asynchronous calls ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
} waitgroup;

typedef struct {
    waitgroup *wg;
    drpc_status status;
    drpc_buffer *resp;
    drpc_error *err;
} async_result;

/* Runs on a drpc runtime thread: records the outcome, never blocks long. */
static void on_done(void *userdata, drpc_call *call, drpc_status status, drpc_buffer *resp, drpc_error *err) {
    (void)call;
    async_result *r = (async_result *)userdata;
    r->status = status;
    r->resp = resp;
    r->err = err;
    pthread_mutex_lock(&r->wg->mu);
    r->wg->pending--;
    pthread_cond_broadcast(&r->wg->cv);
    pthread_mutex_unlock(&r->wg->mu);
}

static void wg_init(waitgroup *wg, int n) {
    pthread_mutex_init(&wg->mu, NULL);
    pthread_cond_init(&wg->cv, NULL);
    wg->pending = n;
}

static void wg_wait(waitgroup *wg) {
    pthread_mutex_lock(&wg->mu);
    while (wg->pending > 0) pthread_cond_wait(&wg->cv, &wg->mu);
    pthread_mutex_unlock(&wg->mu);
    pthread_mutex_destroy(&wg->mu);
    pthread_cond_destroy(&wg->cv);
}

static drpc_status start_unary(drpc_conn *c, const char *rpc, const ProtobufCMessage *req, async_result *r,
                               drpc_call **call) {
    packed_t p = pack_message(req);
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_unary_async(c, rpc, p.data, p.len, NULL, 0, on_done, r, call, &err);
    free(p.data);
    if (rc != DRPC_OK) {
        /* Not started: the callback will not run; account for it here. */
        r->status = rc;
        r->resp = NULL;
        r->err = err;
        pthread_mutex_lock(&r->wg->mu);
        r->wg->pending--;
        pthread_mutex_unlock(&r->wg->mu);
    }
    return rc;
}

/* ---- cases for every peer ---- */

static int empty_unary(drpc_conn *c, char *why) {
    Drpc__Interop__Empty e = DRPC__INTEROP__EMPTY__INIT;
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_EMPTY_CALL, &e.base, NULL, 0, &b, &err);
    if (rc != DRPC_OK) FAIL("%s", errstr(rc, err));
    size_t n = drpc_buffer_len(b);
    drpc_buffer_free(b);
    if (n != 0) FAIL("Empty response of %zu bytes", n);
    return 0;
}

static int large_unary(drpc_conn *c, char *why) {
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    Drpc__Interop__Payload body = payload(271828);
    req.response_size = 314159;
    req.payload = &body;
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_UNARY_CALL, &req.base, NULL, 0, &b, &err);
    free(body.body.data);
    if (rc != DRPC_OK) FAIL("%s", errstr(rc, err));
    Drpc__Interop__SimpleResponse *resp =
        drpc__interop__simple_response__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
    drpc_buffer_free(b);
    if (!resp) FAIL("cannot decode SimpleResponse");
    size_t n = resp->payload ? resp->payload->body.len : 0;
    int ok = n == 314159 && is_zeros(resp->payload->body.data, n) && resp->request_payload_size == 271828;
    int64_t got = resp->request_payload_size;
    drpc__interop__simple_response__free_unpacked(resp, NULL);
    if (!ok) FAIL("response body of %zu bytes, request_payload_size %lld", n, (long long)got);
    return 0;
}

/* Expects the clean end of a stream. */
static int expect_end(drpc_stream *s, char *why, const char *what) {
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = drpc_stream_recv(s, &b, &err);
    if (rc == DRPC_OK) {
        size_t n = drpc_buffer_len(b);
        drpc_buffer_free(b);
        FAIL("%s: expected a clean end, got a message of %zu bytes", what, n);
    }
    if (rc != DRPC_END) FAIL("%s: expected a clean end, got %s", what, errstr(rc, err));
    return 0;
}

/* Receives one StreamingOutputCallResponse and checks its body size. */
static int expect_output(drpc_stream *s, size_t want, char *why) {
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = drpc_stream_recv(s, &b, &err);
    if (rc == DRPC_END) FAIL("stream ended before the response of size %zu", want);
    if (rc != DRPC_OK) FAIL("recv: %s", errstr(rc, err));
    Drpc__Interop__StreamingOutputCallResponse *r =
        drpc__interop__streaming_output_call_response__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
    drpc_buffer_free(b);
    if (!r) FAIL("cannot decode StreamingOutputCallResponse");
    size_t n = r->payload ? r->payload->body.len : 0;
    drpc__interop__streaming_output_call_response__free_unpacked(r, NULL);
    if (n != want) FAIL("response of %zu bytes, want %zu", n, want);
    return 0;
}

static drpc_status open_stream(drpc_conn *c, const char *rpc, drpc_stream **s, char *why) {
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_stream(c, rpc, NULL, 0, s, &err);
    if (rc != DRPC_OK) snprintf(why, WHY_LEN, "open %s: %s", rpc, errstr(rc, err));
    return rc;
}

/* Sends a StreamingOutputCallRequest asking for responses of `sizes`. */
static drpc_status send_output_request(drpc_stream *s, const int32_t *sizes, size_t n, size_t payload_size,
                                       drpc_error **err) {
    Drpc__Interop__StreamingOutputCallRequest req = DRPC__INTEROP__STREAMING_OUTPUT_CALL_REQUEST__INIT;
    Drpc__Interop__ResponseParameters params[8];
    Drpc__Interop__ResponseParameters *ptrs[8];
    for (size_t i = 0; i < n && i < 8; i++) {
        Drpc__Interop__ResponseParameters p = DRPC__INTEROP__RESPONSE_PARAMETERS__INIT;
        p.size = sizes[i];
        params[i] = p;
        ptrs[i] = &params[i];
    }
    req.n_response_parameters = n;
    req.response_parameters = ptrs;
    Drpc__Interop__Payload body = payload(payload_size);
    if (payload_size) req.payload = &body;
    drpc_status rc = send_msg(s, &req.base, err);
    free(body.body.data);
    return rc;
}

static const int32_t SIZES[4] = {31415, 9, 2653, 58979};

static int client_streaming(drpc_conn *c, char *why) {
    drpc_stream *s = NULL;
    if (open_stream(c, RPC_STREAMING_INPUT_CALL, &s, why)) return 1;
    static const size_t sizes[4] = {27182, 8, 1828, 45904};
    int ret = 1;
    drpc_error *err = NULL;
    drpc_status rc;
    for (int i = 0; i < 4; i++) {
        Drpc__Interop__StreamingInputCallRequest req = DRPC__INTEROP__STREAMING_INPUT_CALL_REQUEST__INIT;
        Drpc__Interop__Payload body = payload(sizes[i]);
        req.payload = &body;
        rc = send_msg(s, &req.base, &err);
        free(body.body.data);
        if (rc != DRPC_OK) {
            snprintf(why, WHY_LEN, "send: %s", errstr(rc, err));
            goto out;
        }
    }
    if ((rc = drpc_stream_close_send(s, &err)) != DRPC_OK) {
        snprintf(why, WHY_LEN, "close_send: %s", errstr(rc, err));
        goto out;
    }
    drpc_buffer *b = NULL;
    rc = drpc_stream_recv(s, &b, &err);
    if (rc != DRPC_OK) {
        snprintf(why, WHY_LEN, "recv: %s", rc == DRPC_END ? "no response" : errstr(rc, err));
        goto out;
    }
    Drpc__Interop__StreamingInputCallResponse *r =
        drpc__interop__streaming_input_call_response__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
    drpc_buffer_free(b);
    if (!r) {
        snprintf(why, WHY_LEN, "cannot decode StreamingInputCallResponse");
        goto out;
    }
    int64_t total = r->aggregated_payload_size;
    drpc__interop__streaming_input_call_response__free_unpacked(r, NULL);
    if (total != 74922) {
        snprintf(why, WHY_LEN, "aggregated_payload_size %lld", (long long)total);
        goto out;
    }
    ret = expect_end(s, why, "after the response");
out:
    drpc_stream_free(s);
    return ret;
}

static int server_streaming(drpc_conn *c, char *why) {
    drpc_stream *s = NULL;
    if (open_stream(c, RPC_STREAMING_OUTPUT_CALL, &s, why)) return 1;
    int ret = 1;
    drpc_error *err = NULL;
    drpc_status rc;
    if ((rc = send_output_request(s, SIZES, 4, 0, &err)) != DRPC_OK) {
        snprintf(why, WHY_LEN, "send: %s", errstr(rc, err));
        goto out;
    }
    if ((rc = drpc_stream_close_send(s, &err)) != DRPC_OK) {
        snprintf(why, WHY_LEN, "close_send: %s", errstr(rc, err));
        goto out;
    }
    for (int i = 0; i < 4; i++)
        if (expect_output(s, (size_t)SIZES[i], why)) goto out;
    ret = expect_end(s, why, "after four responses");
out:
    drpc_stream_free(s);
    return ret;
}

static int ping_pong(drpc_conn *c, char *why) {
    drpc_stream *s = NULL;
    if (open_stream(c, RPC_FULL_DUPLEX_CALL, &s, why)) return 1;
    int ret = 1;
    drpc_error *err = NULL;
    drpc_status rc;
    for (int i = 0; i < 4; i++) {
        if ((rc = send_output_request(s, &SIZES[i], 1, (size_t)SIZES[i], &err)) != DRPC_OK) {
            snprintf(why, WHY_LEN, "send: %s", errstr(rc, err));
            goto out;
        }
        if (expect_output(s, (size_t)SIZES[i], why)) goto out;
    }
    if ((rc = drpc_stream_close_send(s, &err)) != DRPC_OK) {
        snprintf(why, WHY_LEN, "close_send: %s", errstr(rc, err));
        goto out;
    }
    ret = expect_end(s, why, "after four rounds");
out:
    drpc_stream_free(s);
    return ret;
}

static int half_duplex(drpc_conn *c, char *why) {
    drpc_stream *s = NULL;
    if (open_stream(c, RPC_HALF_DUPLEX_CALL, &s, why)) return 1;
    int ret = 1;
    drpc_error *err = NULL;
    drpc_status rc;
    for (int i = 0; i < 4; i++) {
        if ((rc = send_output_request(s, &SIZES[i], 1, 0, &err)) != DRPC_OK) {
            snprintf(why, WHY_LEN, "send: %s", errstr(rc, err));
            goto out;
        }
    }
    if ((rc = drpc_stream_close_send(s, &err)) != DRPC_OK) {
        snprintf(why, WHY_LEN, "close_send: %s", errstr(rc, err));
        goto out;
    }
    for (int i = 0; i < 4; i++)
        if (expect_output(s, (size_t)SIZES[i], why)) goto out;
    ret = expect_end(s, why, "after four responses");
out:
    drpc_stream_free(s);
    return ret;
}

static int empty_stream(drpc_conn *c, char *why) {
    drpc_stream *s = NULL;
    if (open_stream(c, RPC_FULL_DUPLEX_CALL, &s, why)) return 1;
    int ret = 1;
    drpc_error *err = NULL;
    drpc_status rc = drpc_stream_close_send(s, &err);
    if (rc != DRPC_OK)
        snprintf(why, WHY_LEN, "close_send: %s", errstr(rc, err));
    else
        ret = expect_end(s, why, "no responses");
    drpc_stream_free(s);
    return ret;
}

static int custom_metadata(drpc_conn *c, char *why) {
    const char *value = "hello/\xe4\xb8\x96\xe7\x95\x8c"; /* hello/世界 */
    drpc_metadata *md = drpc_metadata_new();
    drpc_metadata_set(md, "x-drpc-test", value);
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    req.echo_metadata_key = (char *)"x-drpc-test";
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_UNARY_CALL, &req.base, md, 0, &b, &err);
    drpc_metadata_free(md);
    if (rc != DRPC_OK) FAIL("%s", errstr(rc, err));
    Drpc__Interop__SimpleResponse *resp =
        drpc__interop__simple_response__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
    drpc_buffer_free(b);
    if (!resp) FAIL("cannot decode SimpleResponse");
    int ok = strcmp(resp->metadata_value, value) == 0;
    if (!ok) snprintf(why, WHY_LEN, "metadata_value \"%s\"", resp->metadata_value);
    drpc__interop__simple_response__free_unpacked(resp, NULL);
    return !ok;
}

static int want_status(drpc_status rc, drpc_error *err, uint64_t code, const char *msg, const char *via, char *why) {
    if (rc == DRPC_OK || rc == DRPC_END) {
        drpc_error_free(err);
        FAIL("%s: call succeeded", via);
    }
    int ok = err && drpc_error_wire_code(err) == code && strlen(msg) == drpc_error_message_len(err) &&
             memcmp(drpc_error_message(err), msg, strlen(msg)) == 0;
    if (!ok)
        snprintf(why, WHY_LEN, "%s: got code %llu message \"%s\"", via, (unsigned long long)drpc_error_wire_code(err),
                 drpc_error_message(err));
    drpc_error_free(err);
    return !ok;
}

static int status_case(drpc_conn *c, char *why, uint64_t code, const char *msg) {
    Drpc__Interop__EchoStatus st = DRPC__INTEROP__ECHO_STATUS__INIT;
    st.code = code;
    st.message = (char *)msg;
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    req.response_status = &st;
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_UNARY_CALL, &req.base, NULL, 0, &b, &err);
    drpc_buffer_free(b);
    if (want_status(rc, err, code, msg, "UnaryCall", why)) return 1;

    drpc_stream *s = NULL;
    if (open_stream(c, RPC_FULL_DUPLEX_CALL, &s, why)) return 1;
    Drpc__Interop__StreamingOutputCallRequest sreq = DRPC__INTEROP__STREAMING_OUTPUT_CALL_REQUEST__INIT;
    sreq.response_status = &st;
    err = NULL;
    rc = send_msg(s, &sreq.base, &err);
    if (rc == DRPC_OK) rc = drpc_stream_close_send(s, &err);
    while (rc == DRPC_OK) {
        b = NULL;
        rc = drpc_stream_recv(s, &b, &err);
        drpc_buffer_free(b);
    }
    drpc_stream_free(s);
    return want_status(rc, err, code, msg, "FullDuplexCall", why);
}

static int status_code_and_message(drpc_conn *c, char *why) {
    return status_case(c, why, 2, "test status message");
}

static int special_status_message(drpc_conn *c, char *why) {
    return status_case(c, why, 2,
                       "\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba and non-BMP \xf0\x9f\x98\x88\t\n");
}

static int expect_code(drpc_status rc, drpc_error *err, drpc_status want, char *why) {
    if (rc == want) {
        drpc_error_free(err);
        return 0;
    }
    FAIL("expected code %u (%s), got %s", (unsigned)want, drpc_status_name(want), errstr(rc, err));
}

static int unimplemented_method(drpc_conn *c, char *why) {
    Drpc__Interop__Empty e = DRPC__INTEROP__EMPTY__INIT;
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_UNIMPLEMENTED_CALL, &e.base, NULL, 0, &b, &err);
    drpc_buffer_free(b);
    return expect_code(rc, err, DRPC_UNIMPLEMENTED, why);
}

static int cancel_after_begin(drpc_conn *c, char *why) {
    drpc_stream *s = NULL;
    if (open_stream(c, RPC_STREAMING_INPUT_CALL, &s, why)) return 1;
    drpc_stream_cancel(s);
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = drpc_stream_recv(s, &b, &err);
    drpc_buffer_free(b);
    drpc_stream_free(s);
    return expect_code(rc, err, DRPC_CANCELED, why);
}

static int cancel_after_first_response(drpc_conn *c, char *why) {
    drpc_stream *s = NULL;
    if (open_stream(c, RPC_FULL_DUPLEX_CALL, &s, why)) return 1;
    int ret = 1;
    drpc_error *err = NULL;
    drpc_status rc;
    const int32_t size = 31415;
    if ((rc = send_output_request(s, &size, 1, 27182, &err)) != DRPC_OK) {
        snprintf(why, WHY_LEN, "send: %s", errstr(rc, err));
        goto out;
    }
    if (expect_output(s, 31415, why)) goto out;
    drpc_stream_cancel(s);
    drpc_buffer *b = NULL;
    rc = drpc_stream_recv(s, &b, &err);
    drpc_buffer_free(b);
    ret = expect_code(rc, err, DRPC_CANCELED, why);
out:
    drpc_stream_free(s);
    return ret;
}

static int timeout_on_sleeping_server(drpc_conn *c, char *why) {
    double start = now_seconds();
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    req.sleep_ms = 5000;
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_UNARY_CALL, &req.base, NULL, 100, &b, &err);
    drpc_buffer_free(b);
    if (expect_code(rc, err, DRPC_DEADLINE_EXCEEDED, why)) return 1;
    double took = now_seconds() - start;
    if (took >= 1.0) FAIL("took %.3f s", took);
    return 0;
}

static int server_cancel_propagation(drpc_conn *c, char *why) {
    Drpc__Interop__ServerStats before, now;
    if (get_stats(c, &before, why)) return 1;
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    req.sleep_ms = 10000;
    waitgroup wg;
    wg_init(&wg, 1);
    async_result r = {&wg, DRPC_OK, NULL, NULL};
    drpc_call *call = NULL;
    start_unary(c, RPC_UNARY_CALL, &req.base, &r, &call);
    sleep_ms(100);
    drpc_call_cancel(call);
    wg_wait(&wg);
    drpc_call_free(call);
    drpc_buffer_free(r.resp);
    if (expect_code(r.status, r.err, DRPC_CANCELED, why)) return 1;
    double start = now_seconds();
    for (;;) {
        if (get_stats(c, &now, why)) return 1;
        if (now.cancelled_rpcs > before.cancelled_rpcs) return 0;
        if (now_seconds() - start > 2.0)
            FAIL("cancelled_rpcs still %lld after 2 s", (long long)now.cancelled_rpcs);
        sleep_ms(20);
    }
}

/* ---- cases for multiplexing peers ---- */

static int concurrent_unary(drpc_conn *c, char *why) {
    enum { N = 200 };
    static async_result results[N];
    waitgroup wg;
    wg_init(&wg, N);
    for (int i = 0; i < N; i++) {
        Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
        Drpc__Interop__Payload body = payload(1000 + (size_t)i);
        req.response_size = 100 + i;
        req.payload = &body;
        req.sleep_ms = i % 51;
        results[i].wg = &wg;
        start_unary(c, RPC_UNARY_CALL, &req.base, &results[i], NULL);
        free(body.body.data);
    }
    wg_wait(&wg);
    int failed = 0;
    for (int i = 0; i < N; i++) {
        async_result *r = &results[i];
        if (r->status != DRPC_OK) {
            if (!failed) snprintf(why, WHY_LEN, "call %d: %s", i, errstr(r->status, r->err));
            else drpc_error_free(r->err);
            failed = 1;
            continue;
        }
        Drpc__Interop__SimpleResponse *resp =
            drpc__interop__simple_response__unpack(NULL, drpc_buffer_len(r->resp), drpc_buffer_data(r->resp));
        drpc_buffer_free(r->resp);
        size_t n = resp && resp->payload ? resp->payload->body.len : 0;
        int64_t got = resp ? resp->request_payload_size : -1;
        if (resp) drpc__interop__simple_response__free_unpacked(resp, NULL);
        if (!failed && (n != (size_t)(100 + i) || got != 1000 + i)) {
            snprintf(why, WHY_LEN, "call %d: response %zu bytes, request size %lld", i, n, (long long)got);
            failed = 1;
        }
    }
    if (failed) return 1;
    Drpc__Interop__ServerStats st;
    if (get_stats(c, &st, why)) return 1;
    if (st.peak_active_rpcs < 2) FAIL("peak_active_rpcs %lld", (long long)st.peak_active_rpcs);
    return 0;
}

typedef struct {
    drpc_conn *conn;
    int index;
    int failed;
    char why[WHY_LEN];
} stream_job;

static void *interleaved_worker(void *arg) {
    stream_job *j = (stream_job *)arg;
    char *why = j->why;
    drpc_stream *s = NULL;
    if (open_stream(j->conn, RPC_FULL_DUPLEX_CALL, &s, why)) {
        j->failed = 1;
        return NULL;
    }
    drpc_error *err = NULL;
    drpc_status rc;
    for (int round = 0; round < 50; round++) {
        int32_t size = 1 + j->index * 997 + round * 13;
        if ((rc = send_output_request(s, &size, 1, 0, &err)) != DRPC_OK) {
            snprintf(why, WHY_LEN, "stream %d round %d: send: %s", j->index, round, errstr(rc, err));
            j->failed = 1;
            goto out;
        }
        char inner[WHY_LEN];
        if (expect_output(s, (size_t)size, inner)) {
            snprintf(why, WHY_LEN, "stream %d round %d: %.900s", j->index, round, inner);
            j->failed = 1;
            goto out;
        }
    }
    if ((rc = drpc_stream_close_send(s, &err)) != DRPC_OK) {
        snprintf(why, WHY_LEN, "stream %d: close_send: %s", j->index, errstr(rc, err));
        j->failed = 1;
        goto out;
    }
    j->failed = expect_end(s, why, "after 50 rounds");
out:
    drpc_stream_free(s);
    return NULL;
}

static int interleaved_streams(drpc_conn *c, char *why) {
    enum { N = 16 };
    stream_job jobs[N];
    pthread_t threads[N];
    for (int i = 0; i < N; i++) {
        jobs[i].conn = c;
        jobs[i].index = i;
        jobs[i].failed = 0;
        jobs[i].why[0] = 0;
        pthread_create(&threads[i], NULL, interleaved_worker, &jobs[i]);
    }
    int failed = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        if (jobs[i].failed && !failed) {
            snprintf(why, WHY_LEN, "%s", jobs[i].why);
            failed = 1;
        }
    }
    return failed;
}

static int large_interleaved(drpc_conn *c, char *why) {
    enum { N = 4, SIZE = 3 << 20 };
    async_result results[N];
    waitgroup wg;
    wg_init(&wg, N);
    for (int i = 0; i < N; i++) {
        Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
        Drpc__Interop__Payload body = payload(SIZE);
        for (size_t k = 0; k < SIZE; k++) body.body.data[k] = (uint8_t)((uint8_t)k * 31 + i);
        req.response_size = SIZE;
        req.payload = &body;
        results[i].wg = &wg;
        start_unary(c, RPC_UNARY_CALL, &req.base, &results[i], NULL);
        free(body.body.data);
    }
    wg_wait(&wg);
    int failed = 0;
    for (int i = 0; i < N; i++) {
        async_result *r = &results[i];
        if (r->status != DRPC_OK) {
            if (!failed) snprintf(why, WHY_LEN, "call %d: %s", i, errstr(r->status, r->err));
            else drpc_error_free(r->err);
            failed = 1;
            continue;
        }
        Drpc__Interop__SimpleResponse *resp =
            drpc__interop__simple_response__unpack(NULL, drpc_buffer_len(r->resp), drpc_buffer_data(r->resp));
        drpc_buffer_free(r->resp);
        int ok = resp && resp->request_payload_size == SIZE && resp->payload && resp->payload->body.len == SIZE &&
                 is_zeros(resp->payload->body.data, SIZE);
        if (!ok && !failed) {
            snprintf(why, WHY_LEN, "call %d: bad response", i);
            failed = 1;
        }
        if (resp) drpc__interop__simple_response__free_unpacked(resp, NULL);
    }
    return failed;
}

static int cancel_one_of_many(drpc_conn *c, char *why) {
    enum { N = 10, CANCELLED = 3 };
    async_result results[N];
    drpc_call *calls[N];
    waitgroup wg;
    wg_init(&wg, N);
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    req.sleep_ms = 500;
    for (int i = 0; i < N; i++) {
        results[i].wg = &wg;
        calls[i] = NULL;
        start_unary(c, RPC_UNARY_CALL, &req.base, &results[i], &calls[i]);
    }
    sleep_ms(50);
    drpc_call_cancel(calls[CANCELLED]);
    wg_wait(&wg);
    int failed = 0;
    for (int i = 0; i < N; i++) {
        async_result *r = &results[i];
        drpc_call_free(calls[i]);
        drpc_buffer_free(r->resp);
        if (i == CANCELLED) {
            char inner[WHY_LEN];
            if (expect_code(r->status, r->err, DRPC_CANCELED, inner) && !failed) {
                snprintf(why, WHY_LEN, "cancelled call: %.900s", inner);
                failed = 1;
            }
        } else if (r->status != DRPC_OK) {
            if (!failed) snprintf(why, WHY_LEN, "call %d: %s", i, errstr(r->status, r->err));
            else drpc_error_free(r->err);
            failed = 1;
        }
    }
    if (failed) return 1;
    char inner[WHY_LEN];
    if (empty_unary(c, inner)) FAIL("connection not usable afterwards: %.900s", inner);
    return 0;
}

/* Needs flow control on both sides; part of "all" only with --flow-control. */
static int slow_reader_isolation(drpc_conn *c, char *why) {
    drpc_stream *a = NULL;
    if (open_stream(c, RPC_STREAMING_OUTPUT_CALL, &a, why)) return 1;
    Drpc__Interop__StreamingOutputCallRequest req = DRPC__INTEROP__STREAMING_OUTPUT_CALL_REQUEST__INIT;
    enum { RESPONSES = 4096 };
    Drpc__Interop__ResponseParameters *params = calloc(RESPONSES, sizeof *params);
    Drpc__Interop__ResponseParameters **ptrs = calloc(RESPONSES, sizeof *ptrs);
    for (int i = 0; i < RESPONSES; i++) {
        Drpc__Interop__ResponseParameters p = DRPC__INTEROP__RESPONSE_PARAMETERS__INIT;
        p.size = 64 << 10;
        params[i] = p;
        ptrs[i] = &params[i];
    }
    req.n_response_parameters = RESPONSES;
    req.response_parameters = ptrs;
    drpc_error *err = NULL;
    drpc_status rc = send_msg(a, &req.base, &err);
    free(params);
    free(ptrs);
    if (rc == DRPC_OK) rc = drpc_stream_close_send(a, &err);
    if (rc != DRPC_OK) {
        drpc_stream_free(a);
        FAIL("stream A: %s", errstr(rc, err));
    }
    double start = now_seconds();
    enum { N = 500 };
    static async_result results[N];
    waitgroup wg;
    wg_init(&wg, N);
    Drpc__Interop__Empty e = DRPC__INTEROP__EMPTY__INIT;
    for (int i = 0; i < N; i++) {
        results[i].wg = &wg;
        start_unary(c, RPC_EMPTY_CALL, &e.base, &results[i], NULL);
    }
    wg_wait(&wg);
    drpc_stream_cancel(a);
    drpc_stream_free(a);
    int failed = 0;
    for (int i = 0; i < N; i++) {
        drpc_buffer_free(results[i].resp);
        if (results[i].status != DRPC_OK && !failed) {
            snprintf(why, WHY_LEN, "EmptyCall %d: %s", i, errstr(results[i].status, results[i].err));
            failed = 1;
        } else {
            drpc_error_free(results[i].err);
        }
    }
    if (failed) return 1;
    double took = now_seconds() - start;
    if (took >= 10.0) FAIL("500 EmptyCalls took %.1f s", took);
    return 0;
}

static int no_leaks(drpc_conn *c, char *why) {
    double start = now_seconds();
    for (;;) {
        Drpc__Interop__ServerStats st;
        if (get_stats(c, &st, why)) return 1;
        if (st.active_rpcs == 1) return 0;
        if (now_seconds() - start > 2.0) FAIL("active_rpcs still %lld after 2 s", (long long)st.active_rpcs);
        sleep_ms(20);
    }
}

/* ---- project cases: deadline propagation and trace context ---- */

static const char *TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/* Parses gRPC's timeout grammar (1-8 digits, then H M S m u n) into
 * seconds; 0 if malformed. */
static int parse_grpc_timeout(const char *v, double *seconds) {
    size_t n = v ? strlen(v) : 0;
    if (n < 2 || n > 9) return 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (v[i] < '0' || v[i] > '9') return 0;
    double unit;
    switch (v[n - 1]) {
    case 'H': unit = 3600; break;
    case 'M': unit = 60; break;
    case 'S': unit = 1; break;
    case 'm': unit = 1e-3; break;
    case 'u': unit = 1e-6; break;
    case 'n': unit = 1e-9; break;
    default: return 0;
    }
    *seconds = strtod(v, NULL) * unit;
    return 1;
}

/* UnaryCall{echo_metadata_key: key} with metadata md (NULL-terminated
 * pairs) and a timeout; the echoed value in out. */
static int echo_call(drpc_conn *c, const char *key, const char **md, uint64_t timeout_ms, char *out, size_t out_len,
                     char *why) {
    drpc_metadata *m = drpc_metadata_new();
    for (int i = 0; md && md[i]; i += 2) drpc_metadata_set(m, md[i], md[i + 1]);
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    req.echo_metadata_key = (char *)key;
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_UNARY_CALL, &req.base, m, timeout_ms, &b, &err);
    drpc_metadata_free(m);
    if (rc != DRPC_OK) FAIL("echo %s: %s", key, errstr(rc, err));
    Drpc__Interop__SimpleResponse *resp =
        drpc__interop__simple_response__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
    drpc_buffer_free(b);
    if (!resp) FAIL("echo %s: cannot decode SimpleResponse", key);
    snprintf(out, out_len, "%s", resp->metadata_value ? resp->metadata_value : "");
    drpc__interop__simple_response__free_unpacked(resp, NULL);
    return 0;
}

static int deadline_propagation(drpc_conn *c, char *why) {
    /* (a) A hand-set 100 ms drpc-timeout, no client deadline: the server
     * cancels its sleeping handler and answers DEADLINE_EXCEEDED. */
    Drpc__Interop__ServerStats before, after;
    if (get_stats(c, &before, why)) return 1;
    drpc_metadata *m = drpc_metadata_new();
    drpc_metadata_set(m, "drpc-timeout", "100m");
    Drpc__Interop__SimpleRequest req = DRPC__INTEROP__SIMPLE_REQUEST__INIT;
    req.sleep_ms = 5000;
    double start = now_seconds();
    drpc_buffer *b = NULL;
    drpc_error *err = NULL;
    drpc_status rc = unary(c, RPC_UNARY_CALL, &req.base, m, 0, &b, &err);
    drpc_metadata_free(m);
    drpc_buffer_free(b);
    if (expect_code(rc, err, DRPC_DEADLINE_EXCEEDED, why)) return 1;
    double took = now_seconds() - start;
    if (took >= 1.0) FAIL("(a) took %.3f s", took);
    for (;;) {
        if (get_stats(c, &after, why)) return 1;
        if (after.cancelled_rpcs >= before.cancelled_rpcs + 1) break;
        if (now_seconds() - start > 2.0)
            FAIL("(a) cancelled_rpcs %lld -> %lld within 2 s", (long long)before.cancelled_rpcs,
                 (long long)after.cancelled_rpcs);
        sleep_ms(20);
    }
    /* (b) A 5 s client deadline reaches the server as drpc-timeout. */
    char v[64];
    if (echo_call(c, "drpc-timeout", NULL, 5000, v, sizeof v, why)) return 1;
    double seconds = 0;
    if (!parse_grpc_timeout(v, &seconds)) FAIL("(b) drpc-timeout \"%s\" does not parse", v);
    if (seconds <= 3.0 || seconds > 5.0) FAIL("(b) drpc-timeout \"%s\" is %.3f s, want (3, 5]", v, seconds);
    return 0;
}

static int trace_context(drpc_conn *c, char *why) {
    const char *md[] = {"traceparent", TRACEPARENT, NULL};
    char v[128];
    if (echo_call(c, "traceparent", md, 0, v, sizeof v, why)) return 1;
    if (strcmp(v, TRACEPARENT) != 0) FAIL("echoed traceparent \"%s\"", v);
    return 0;
}

/* Through forwarding servers (tests/matrix/trace_chain.sh): the last one
 * sees the same trace id, another parent span, and less than 5 s. */
static int trace_chain(drpc_conn *c, char *why) {
    const char *md[] = {"traceparent", TRACEPARENT, NULL};
    char v[128];
    if (echo_call(c, "traceparent", md, 5000, v, sizeof v, why)) return 1;
    if (strlen(v) != 55 || strncmp(v, TRACEPARENT, 36) != 0) FAIL("traceparent \"%s\": not the same trace id", v);
    if (strcmp(v + 36, TRACEPARENT + 36) == 0) FAIL("traceparent \"%s\": the same parent span", v);
    if (echo_call(c, "drpc-timeout", md, 5000, v, sizeof v, why)) return 1;
    double seconds = 0;
    if (!parse_grpc_timeout(v, &seconds)) FAIL("drpc-timeout \"%s\" does not parse", v);
    if (seconds <= 0 || seconds >= 5.0) FAIL("drpc-timeout \"%s\" is %.3f s, want < 5", v, seconds);
    return 0;
}

/* ---- driver ---- */

typedef struct {
    const char *name;
    case_fn fn;
    int mux_only;
    int by_name_only; /* not part of "all" */
} case_def;

static const case_def CASES[] = {
    {"empty_unary", empty_unary, 0, 0},
    {"large_unary", large_unary, 0, 0},
    {"client_streaming", client_streaming, 0, 0},
    {"server_streaming", server_streaming, 0, 0},
    {"ping_pong", ping_pong, 0, 0},
    {"half_duplex", half_duplex, 0, 0},
    {"empty_stream", empty_stream, 0, 0},
    {"custom_metadata", custom_metadata, 0, 0},
    {"status_code_and_message", status_code_and_message, 0, 0},
    {"special_status_message", special_status_message, 0, 0},
    {"unimplemented_method", unimplemented_method, 0, 0},
    {"cancel_after_begin", cancel_after_begin, 0, 0},
    {"cancel_after_first_response", cancel_after_first_response, 0, 0},
    {"timeout_on_sleeping_server", timeout_on_sleeping_server, 0, 0},
    {"server_cancel_propagation", server_cancel_propagation, 0, 0},
    {"concurrent_unary", concurrent_unary, 1, 0},
    {"interleaved_streams", interleaved_streams, 1, 0},
    {"large_interleaved", large_interleaved, 1, 0},
    {"cancel_one_of_many", cancel_one_of_many, 1, 0},
    {"slow_reader_isolation", slow_reader_isolation, 1, 0},
    {"connection_reuse", empty_unary, 0, 0},
    {"no_leaks", no_leaks, 1, 0},
    /* Project cases, between drpc-rs implementations only. */
    {"deadline_propagation", deadline_propagation, 0, 0},
    {"trace_context", trace_context, 0, 0},
    {"trace_chain", trace_chain, 0, 1},
};
#define NCASES (sizeof CASES / sizeof CASES[0])

static const case_def *find_case(const char *name) {
    for (size_t i = 0; i < NCASES; i++)
        if (strcmp(CASES[i].name, name) == 0) return &CASES[i];
    return NULL;
}

static int usage(const char *prog, const char *msg) {
    fprintf(stderr,
            "interop_client: %s\nusage: %s --addr HOST:PORT --case NAME|all [--case NAME ...] "
            "[--mode mux|sequential] [--flow-control] "
            "[--tls-ca FILE [--tls-server-name NAME] [--tls-cert FILE --tls-key FILE]]\n",
            msg, prog);
    return 2;
}

int main(int argc, char **argv) {
    const char *addr = NULL;
    const char *names[64];
    size_t nnames = 0;
    int mux = 1;
    int flow_control = 0;
    const char *tls_ca = NULL, *tls_server_name = NULL, *tls_cert = NULL, *tls_key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--tls-ca") == 0 && v) {
            tls_ca = v;
            i++;
        } else if (strcmp(a, "--tls-server-name") == 0 && v) {
            tls_server_name = v;
            i++;
        } else if (strcmp(a, "--tls-cert") == 0 && v) {
            tls_cert = v;
            i++;
        } else if (strcmp(a, "--tls-key") == 0 && v) {
            tls_key = v;
            i++;
        } else if (strcmp(a, "--addr") == 0 && v) {
            addr = v;
            i++;
        } else if (strcmp(a, "--case") == 0 && v) {
            if (nnames == 64) return usage(argv[0], "too many --case flags");
            names[nnames++] = v;
            i++;
        } else if (strcmp(a, "--mode") == 0 && v && strcmp(v, "mux") == 0) {
            mux = 1;
            i++;
        } else if (strcmp(a, "--mode") == 0 && v && strcmp(v, "sequential") == 0) {
            mux = 0;
            i++;
        } else if (strcmp(a, "--flow-control") == 0) {
            flow_control = 1;
        } else {
            return usage(argv[0], "unknown or malformed flag");
        }
    }
    if (!addr) return usage(argv[0], "--addr is required");
    if (nnames == 0) return usage(argv[0], "at least one --case is required");
    if (!tls_cert != !tls_key) return usage(argv[0], "--tls-cert and --tls-key go together");
    if (!tls_ca && (tls_server_name || tls_cert)) return usage(argv[0], "the --tls-* flags need --tls-ca");

    const case_def *run[128];
    size_t nrun = 0;
    for (size_t i = 0; i < nnames; i++) {
        if (strcmp(names[i], "all") == 0) {
            for (size_t k = 0; k < NCASES && nrun < 128; k++) {
                if (CASES[k].mux_only && !mux) continue;
                if (CASES[k].by_name_only) continue;
                if (strcmp(CASES[k].name, "slow_reader_isolation") == 0 && !flow_control) continue;
                run[nrun++] = &CASES[k];
            }
        } else {
            const case_def *d = find_case(names[i]);
            if (!d) return usage(argv[0], "unknown case");
            if (nrun < 128) run[nrun++] = d;
        }
    }

    drpc_conn_options *opts = drpc_conn_options_new();
    drpc_conn_options_set_sequential(opts, !mux);
    drpc_conn_options_set_flow_control(opts, flow_control != 0);
    drpc_conn *conn = NULL;
    drpc_error *err = NULL;
    drpc_status rc;
    if (tls_ca) {
        drpc_tls_client_config *tls = NULL;
        rc = drpc_tls_client_config_new(tls_ca, true, &tls, &err);
        if (rc == DRPC_OK && tls_server_name) rc = drpc_tls_client_config_set_server_name(tls, tls_server_name, &err);
        if (rc == DRPC_OK && tls_cert) rc = drpc_tls_client_config_set_identity(tls, tls_cert, tls_key, true, &err);
        if (rc == DRPC_OK) rc = drpc_conn_dial_tls(addr, tls, opts, &conn, &err);
        drpc_tls_client_config_free(tls);
    } else {
        rc = drpc_conn_dial(addr, opts, &conn, &err);
    }
    drpc_conn_options_free(opts);
    if (rc != DRPC_OK) {
        fprintf(stderr, "interop_client: dial %s: %s\n", addr, errstr(rc, err));
        return 1;
    }
    int failed = 0;
    for (size_t i = 0; i < nrun; i++) {
        char why[WHY_LEN];
        why[0] = 0;
        if (run[i]->fn(conn, why) == 0) {
            printf("PASS %s\n", run[i]->name);
        } else {
            failed++;
            for (char *p = why; *p; p++)
                if (*p == '\n') *p = ' ';
            printf("FAIL %s: %s\n", run[i]->name, why);
        }
        fflush(stdout);
    }
    drpc_conn_close(conn);
    drpc_conn_free(conn);
    return failed ? 1 : 0;
}
