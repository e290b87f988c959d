/*
 * drpc-interop-server-c: the interop TestService (shared/interop/test.proto)
 * served by libdrpc from C, with protobuf-c messages.
 *
 * Usage: interop_server --addr HOST:PORT [--flow-control] [--max-concurrent-streams N]
 * Prints "listening HOST:PORT" first, serves until SIGTERM/SIGINT, then shuts
 * down gracefully and exits 0. --flow-control turns on per-stream flow
 * control (clients must have it too); --max-concurrent-streams caps the
 * streams a client may have open at once on one connection.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>

#include "interop_common.h"

/* ---- statistics (see ServerStats in test.proto) ---- */

static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t stat_total, stat_active, stat_cancelled, stat_peak;

static void stats_start(void) {
    pthread_mutex_lock(&stats_mu);
    stat_total++;
    stat_active++;
    if (stat_active > stat_peak) stat_peak = stat_active;
    pthread_mutex_unlock(&stats_mu);
}

static void stats_end(void) {
    pthread_mutex_lock(&stats_mu);
    stat_active--;
    pthread_mutex_unlock(&stats_mu);
}

static void stats_cancelled(void) {
    pthread_mutex_lock(&stats_mu);
    stat_cancelled++;
    pthread_mutex_unlock(&stats_mu);
}

/* A zero-filled payload body of `size` bytes (calloc'ed; free body.data). */
static Drpc__Interop__Payload zeros(int32_t size) {
    Drpc__Interop__Payload p = DRPC__INTEROP__PAYLOAD__INIT;
    size_t n = size > 0 ? (size_t)size : 0;
    p.body.len = n;
    p.body.data = (uint8_t *)calloc(n ? n : 1, 1);
    return p;
}

/* ---- unary handlers ---- */

static uint32_t empty_call(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    stats_start();
    uint32_t rc = DRPC_OK;
    Drpc__Interop__Empty *in = drpc__interop__empty__unpack(NULL, len, req);
    if (!in) {
        drpc_server_call_fail(call, DRPC_INVALID_ARGUMENT, "cannot decode Empty");
        rc = DRPC_INVALID_ARGUMENT;
    } else {
        drpc__interop__empty__free_unpacked(in, NULL);
        rc = drpc_server_call_respond(call, NULL, 0);
    }
    stats_end();
    return rc;
}

static uint32_t unary_call(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    stats_start();
    uint32_t rc = DRPC_OK;
    Drpc__Interop__SimpleRequest *in = drpc__interop__simple_request__unpack(NULL, len, req);
    if (!in) {
        drpc_server_call_fail(call, DRPC_INVALID_ARGUMENT, "cannot decode SimpleRequest");
        stats_end();
        return DRPC_INVALID_ARGUMENT;
    }
    if (in->sleep_ms > 0 && drpc_server_call_wait_cancelled(call, (uint64_t)in->sleep_ms)) {
        stats_cancelled();
        drpc_server_call_fail(call, DRPC_CANCELED, "call canceled while the server slept");
        rc = DRPC_CANCELED;
        goto out;
    }
    if (in->response_status && in->response_status->code != 0) {
        drpc_server_call_fail(call, in->response_status->code, in->response_status->message);
        rc = DRPC_UNKNOWN;
        goto out;
    }
    {
        Drpc__Interop__SimpleResponse resp = DRPC__INTEROP__SIMPLE_RESPONSE__INIT;
        Drpc__Interop__Payload body = zeros(in->response_size);
        resp.payload = &body;
        resp.request_payload_size = in->payload ? (int64_t)in->payload->body.len : 0;
        if (in->echo_metadata_key && in->echo_metadata_key[0]) {
            const char *v = drpc_server_call_metadata(call, in->echo_metadata_key);
            if (v) resp.metadata_value = (char *)v;
        }
        packed_t p = pack_message(&resp.base);
        rc = drpc_server_call_respond(call, p.data, p.len);
        free(p.data);
        free(body.body.data);
    }
out:
    drpc__interop__simple_request__free_unpacked(in, NULL);
    stats_end();
    return rc;
}

static uint32_t get_stats(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud;
    (void)req;
    (void)len;
    stats_start();
    Drpc__Interop__ServerStats s = DRPC__INTEROP__SERVER_STATS__INIT;
    pthread_mutex_lock(&stats_mu);
    s.total_rpcs = stat_total;
    s.active_rpcs = stat_active;
    s.cancelled_rpcs = stat_cancelled;
    s.peak_active_rpcs = stat_peak;
    pthread_mutex_unlock(&stats_mu);
    packed_t p = pack_message(&s.base);
    uint32_t rc = drpc_server_call_respond(call, p.data, p.len);
    free(p.data);
    stats_end();
    return rc;
}

/* ---- streaming handlers ---- */

/* Receives one message into *out (a drpc_buffer the caller frees).
 * Returns DRPC_OK, DRPC_END or the stream's error code. */
static uint32_t recv_buf(drpc_stream *s, drpc_buffer **out) {
    return drpc_stream_recv(s, out, NULL);
}

/* Sends the responses `req` asks for, then its response_status if any. */
static uint32_t answer(drpc_stream *s, const Drpc__Interop__StreamingOutputCallRequest *req) {
    for (size_t i = 0; i < req->n_response_parameters; i++) {
        const Drpc__Interop__ResponseParameters *p = req->response_parameters[i];
        if (p->interval_ms > 0 && drpc_stream_wait_cancelled(s, (uint64_t)p->interval_ms)) {
            stats_cancelled();
            return DRPC_CANCELED;
        }
        Drpc__Interop__StreamingOutputCallResponse resp = DRPC__INTEROP__STREAMING_OUTPUT_CALL_RESPONSE__INIT;
        Drpc__Interop__Payload body = zeros(p->size);
        resp.payload = &body;
        packed_t packed = pack_message(&resp.base);
        uint32_t rc = drpc_stream_send(s, packed.data, packed.len, NULL);
        free(packed.data);
        free(body.body.data);
        if (rc != DRPC_OK) return rc;
    }
    if (req->response_status && req->response_status->code != 0) {
        drpc_stream_fail(s, req->response_status->code, req->response_status->message);
        return DRPC_UNKNOWN;
    }
    return DRPC_OK;
}

static Drpc__Interop__StreamingOutputCallRequest *decode_output_request(drpc_buffer *b) {
    return drpc__interop__streaming_output_call_request__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
}

static uint32_t streaming_output_call(void *ud, drpc_stream *s) {
    (void)ud;
    stats_start();
    drpc_buffer *b = NULL;
    uint32_t rc = recv_buf(s, &b);
    if (rc == DRPC_END) {
        drpc_stream_fail(s, DRPC_INVALID_ARGUMENT, "server-streaming call without a request");
    } else if (rc == DRPC_OK) {
        Drpc__Interop__StreamingOutputCallRequest *req = decode_output_request(b);
        if (!req) {
            drpc_stream_fail(s, DRPC_INVALID_ARGUMENT, "cannot decode StreamingOutputCallRequest");
            rc = DRPC_INVALID_ARGUMENT;
        } else {
            rc = answer(s, req);
            drpc__interop__streaming_output_call_request__free_unpacked(req, NULL);
        }
    }
    drpc_buffer_free(b);
    stats_end();
    return rc;
}

static uint32_t streaming_input_call(void *ud, drpc_stream *s) {
    (void)ud;
    stats_start();
    int64_t total = 0;
    uint32_t rc;
    for (;;) {
        drpc_buffer *b = NULL;
        rc = recv_buf(s, &b);
        if (rc != DRPC_OK) break;
        Drpc__Interop__StreamingInputCallRequest *req =
            drpc__interop__streaming_input_call_request__unpack(NULL, drpc_buffer_len(b), drpc_buffer_data(b));
        drpc_buffer_free(b);
        if (!req) {
            drpc_stream_fail(s, DRPC_INVALID_ARGUMENT, "cannot decode StreamingInputCallRequest");
            rc = DRPC_INVALID_ARGUMENT;
            break;
        }
        if (req->payload) total += (int64_t)req->payload->body.len;
        drpc__interop__streaming_input_call_request__free_unpacked(req, NULL);
    }
    if (rc == DRPC_END) {
        Drpc__Interop__StreamingInputCallResponse resp = DRPC__INTEROP__STREAMING_INPUT_CALL_RESPONSE__INIT;
        resp.aggregated_payload_size = total;
        packed_t p = pack_message(&resp.base);
        rc = drpc_stream_send(s, p.data, p.len, NULL);
        free(p.data);
    }
    stats_end();
    return rc;
}

static uint32_t full_duplex_call(void *ud, drpc_stream *s) {
    (void)ud;
    stats_start();
    uint32_t rc;
    for (;;) {
        drpc_buffer *b = NULL;
        rc = recv_buf(s, &b);
        if (rc != DRPC_OK) break;
        Drpc__Interop__StreamingOutputCallRequest *req = decode_output_request(b);
        drpc_buffer_free(b);
        if (!req) {
            drpc_stream_fail(s, DRPC_INVALID_ARGUMENT, "cannot decode StreamingOutputCallRequest");
            rc = DRPC_INVALID_ARGUMENT;
            break;
        }
        rc = answer(s, req);
        drpc__interop__streaming_output_call_request__free_unpacked(req, NULL);
        if (rc != DRPC_OK) break;
    }
    stats_end();
    return rc == DRPC_END ? DRPC_OK : rc;
}

static uint32_t half_duplex_call(void *ud, drpc_stream *s) {
    (void)ud;
    stats_start();
    Drpc__Interop__StreamingOutputCallRequest **reqs = NULL;
    size_t n = 0, cap = 0;
    uint32_t rc;
    for (;;) {
        drpc_buffer *b = NULL;
        rc = recv_buf(s, &b);
        if (rc != DRPC_OK) break;
        Drpc__Interop__StreamingOutputCallRequest *req = decode_output_request(b);
        drpc_buffer_free(b);
        if (!req) {
            drpc_stream_fail(s, DRPC_INVALID_ARGUMENT, "cannot decode StreamingOutputCallRequest");
            rc = DRPC_INVALID_ARGUMENT;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            reqs = (Drpc__Interop__StreamingOutputCallRequest **)realloc(reqs, cap * sizeof *reqs);
        }
        reqs[n++] = req;
    }
    if (rc == DRPC_END) {
        rc = DRPC_OK;
        for (size_t i = 0; i < n && rc == DRPC_OK; i++) rc = answer(s, reqs[i]);
    }
    for (size_t i = 0; i < n; i++) drpc__interop__streaming_output_call_request__free_unpacked(reqs[i], NULL);
    free(reqs);
    stats_end();
    return rc;
}

static void die(const char *what, drpc_status rc, drpc_error *err) {
    fprintf(stderr, "interop_server: %s: %s: %s\n", what, drpc_status_name(rc), err ? drpc_error_message(err) : "");
    drpc_error_free(err);
    exit(1);
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1:0";
    int flow_control = 0;
    unsigned long max_streams = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strncmp(argv[i], "--addr=", 7) == 0) {
            addr = argv[i] + 7;
        } else if (strcmp(argv[i], "--flow-control") == 0) {
            flow_control = 1;
        } else if (strcmp(argv[i], "--max-concurrent-streams") == 0 && i + 1 < argc) {
            char *end = NULL;
            max_streams = strtoul(argv[++i], &end, 10);
            if (!end || *end || max_streams == 0) {
                fprintf(stderr, "%s: --max-concurrent-streams wants a positive integer\n", argv[0]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s --addr HOST:PORT [--flow-control] [--max-concurrent-streams N]\n", argv[0]);
            return 2;
        }
    }

    /* Block the signals before the library starts its threads, so that they
     * inherit the mask and only sigwait below sees SIGTERM/SIGINT. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    drpc_server *server = drpc_server_new();
    drpc_error *err = NULL;
    drpc_status rc;
    if (flow_control && (rc = drpc_server_set_flow_control(server, true)) != DRPC_OK) die("flow control", rc, NULL);
    if (max_streams && (rc = drpc_server_set_max_concurrent_streams(server, (size_t)max_streams)) != DRPC_OK)
        die("max concurrent streams", rc, NULL);
#define REG(kind, name, fn)                                                  \
    if ((rc = drpc_server_register_##kind(server, name, fn, NULL, &err)) != DRPC_OK) \
        die("register " name, rc, err);
    REG(unary, RPC_EMPTY_CALL, empty_call)
    REG(unary, RPC_UNARY_CALL, unary_call)
    REG(unary, RPC_GET_STATS, get_stats)
    REG(stream, RPC_STREAMING_OUTPUT_CALL, streaming_output_call)
    REG(stream, RPC_STREAMING_INPUT_CALL, streaming_input_call)
    REG(stream, RPC_FULL_DUPLEX_CALL, full_duplex_call)
    REG(stream, RPC_HALF_DUPLEX_CALL, half_duplex_call)
#undef REG

    char *bound = NULL;
    if ((rc = drpc_server_listen(server, addr, &bound, &err)) != DRPC_OK) die("listen", rc, err);
    printf("listening %s\n", bound);
    fflush(stdout);
    drpc_string_free(bound);

    int sig = 0;
    sigwait(&sigs, &sig);
    if ((rc = drpc_server_shutdown(server, 5000, &err)) != DRPC_OK) die("shutdown", rc, err);
    drpc_server_free(server);
    return 0;
}
