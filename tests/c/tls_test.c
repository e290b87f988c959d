/*
 * libdrpc's TLS API under valgrind: a mutual-TLS server whose handlers read
 * the peer's verified identity, TLS clients with and without a certificate,
 * a wrong CA, a name mismatch, a plaintext client, certificate reload, and
 * every TLS handle's error paths. Usage: tls_test CERT_DIR (made by
 * `cargo run -p drpc-tls --example gen-test-certs -- CERT_DIR`). Prints
 * "ok NAME" / "not ok NAME"; the last line is "tls: N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drpc.h"

static int check_failures;
static const char *dir;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                          \
        }                                                                              \
    } while (0)

#define CHECK_RC(expr, want)                                                                         \
    do {                                                                                             \
        drpc_status rc_ = (expr);                                                                    \
        if (rc_ != (drpc_status)(want)) {                                                            \
            fprintf(stderr, "  %s:%d: %s returned %s, want %s\n", __FILE__, __LINE__, #expr,        \
                    drpc_status_name(rc_), drpc_status_name(want));                                  \
            check_failures++;                                                                        \
        }                                                                                            \
    } while (0)

static char *path(const char *name) {
    static char buf[8][1024];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 1024, "%s/%s", dir, name);
    return p;
}

static char *read_text(const char *name) {
    FILE *f = fopen(path(name), "rb");
    if (!f) return NULL;
    char *text = calloc(1, 1 << 16);
    size_t n = fread(text, 1, (1 << 16) - 1, f);
    text[n] = 0;
    fclose(f);
    return text;
}

/* "/t/Whoami": answers "SUBJECT|DNS0|URI0|VERSION|ALPN|CHAINLEN"; "/t/Admin"
 * lets in only CN=drpc-client. */
static uint32_t whoami(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud, (void)req, (void)len;
    char out[1024];
    const char *subject = drpc_server_call_peer(call, DRPC_PEER_SUBJECT, 0);
    size_t der_len = 0;
    const uint8_t *der = drpc_server_call_peer_certificate(call, 0, &der_len);
    snprintf(out, sizeof out, "%s|%s|%s|%s|%s|%zu|%d", subject ? subject : "-",
             drpc_server_call_peer(call, DRPC_PEER_DNS_NAME, 0) ? drpc_server_call_peer(call, DRPC_PEER_DNS_NAME, 0) : "-",
             drpc_server_call_peer(call, DRPC_PEER_URI, 0) ? drpc_server_call_peer(call, DRPC_PEER_URI, 0) : "-",
             drpc_server_call_peer(call, DRPC_PEER_TLS_VERSION, 0), drpc_server_call_peer(call, DRPC_PEER_ALPN, 0),
             drpc_server_call_peer_count(call, DRPC_PEER_IP_ADDRESS), der != NULL && der_len > 100 && der[0] == 0x30);
    return drpc_server_call_respond(call, (const uint8_t *)out, strlen(out));
}

static uint32_t admin(void *ud, drpc_server_call *call, const uint8_t *req, size_t len) {
    (void)ud, (void)req, (void)len;
    const char *subject = drpc_server_call_peer(call, DRPC_PEER_SUBJECT, 0);
    if (!subject || !strstr(subject, "CN=drpc-client"))
        return drpc_server_call_fail(call, DRPC_PERMISSION_DENIED, "not an admin");
    return drpc_server_call_respond(call, (const uint8_t *)"welcome", 7);
}

static drpc_server *server;
static char *addr;

static drpc_tls_client_config *client_config(const char *ca, int with_identity) {
    drpc_tls_client_config *tls = NULL;
    CHECK_RC(drpc_tls_client_config_new(path(ca), true, &tls, NULL), DRPC_OK);
    CHECK_RC(drpc_tls_client_config_set_server_name(tls, "localhost", NULL), DRPC_OK);
    if (with_identity)
        CHECK_RC(drpc_tls_client_config_set_identity(tls, path("client.pem"), path("client-key.pem"), true, NULL), DRPC_OK);
    return tls;
}

/* Dials with `tls` and calls rpc; returns the status, the reply in out (or the error message). */
static drpc_status call(drpc_tls_client_config *tls, const char *rpc, char *out, size_t out_len) {
    drpc_conn *conn = NULL;
    drpc_error *err = NULL;
    drpc_buffer *reply = NULL;
    drpc_status rc = drpc_conn_dial_tls(addr, tls, NULL, &conn, &err);
    if (rc == DRPC_OK) rc = drpc_conn_unary(conn, rpc, NULL, 0, NULL, 5000, &reply, &err);
    out[0] = 0;
    if (rc == DRPC_OK) {
        size_t n = drpc_buffer_len(reply) < out_len - 1 ? drpc_buffer_len(reply) : out_len - 1;
        memcpy(out, drpc_buffer_data(reply), n);
        out[n] = 0;
    } else if (err) {
        snprintf(out, out_len, "%s", drpc_error_message(err));
    }
    drpc_buffer_free(reply);
    drpc_error_free(err);
    if (conn) {
        drpc_conn_close(conn);
        drpc_conn_free(conn);
    }
    return rc;
}

static void test_mutual_tls_identity(void) {
    char out[1024];
    drpc_tls_client_config *tls = client_config("ca.pem", 1);
    CHECK_RC(call(tls, "/t/Whoami", out, sizeof out), DRPC_OK);
    CHECK(strcmp(out, "CN=drpc-client, O=drpc-rs tests|client.drpc.test|spiffe://drpc.test/drpc-client|TLSv1.3|drpc|2|1") == 0);
    if (strstr(out, "CN=") == NULL) fprintf(stderr, "  got %s\n", out);
    CHECK_RC(call(tls, "/t/Admin", out, sizeof out), DRPC_OK);
    CHECK(strcmp(out, "welcome") == 0);
    drpc_tls_client_config_free(tls);
}

static void test_refusals_name_the_cause(void) {
    char out[1024];
    drpc_tls_client_config *anonymous = client_config("ca.pem", 0);
    CHECK_RC(call(anonymous, "/t/Whoami", out, sizeof out), DRPC_UNAVAILABLE);
    CHECK(strstr(out, "CertificateRequired") != NULL);
    drpc_tls_client_config_free(anonymous);
    drpc_tls_client_config *wrong_ca = client_config("other-ca.pem", 1);
    CHECK_RC(call(wrong_ca, "/t/Whoami", out, sizeof out), DRPC_UNAVAILABLE);
    CHECK(strstr(out, "UnknownIssuer") != NULL);
    drpc_tls_client_config_free(wrong_ca);
    drpc_tls_client_config *wrong_name = client_config("ca.pem", 1);
    CHECK_RC(drpc_tls_client_config_set_server_name(wrong_name, "example.com", NULL), DRPC_OK);
    CHECK_RC(call(wrong_name, "/t/Whoami", out, sizeof out), DRPC_UNAVAILABLE);
    CHECK(strstr(out, "not valid for name") != NULL);
    drpc_tls_client_config_free(wrong_name);
    /* A plaintext client is told TLS is required. */
    drpc_conn *conn = NULL;
    drpc_error *err = NULL;
    drpc_buffer *reply = NULL;
    CHECK_RC(drpc_conn_dial(addr, NULL, &conn, NULL), DRPC_OK);
    CHECK_RC(drpc_conn_unary(conn, "/t/Whoami", NULL, 0, NULL, 5000, &reply, &err), DRPC_UNAVAILABLE);
    CHECK(err && strstr(drpc_error_message(err), "requires TLS") != NULL);
    drpc_error_free(err);
    drpc_conn_free(conn);
    /* And the server still serves. */
    drpc_tls_client_config *tls = client_config("ca.pem", 1);
    CHECK_RC(call(tls, "/t/Admin", out, sizeof out), DRPC_OK);
    drpc_tls_client_config_free(tls);
}

static void test_reload(void) {
    char out[1024];
    drpc_tls_client_config *tls = client_config("ca.pem", 1);
    drpc_tls_server_config *expired = NULL;
    CHECK_RC(drpc_tls_server_config_new(path("expired.pem"), path("expired-key.pem"), true, &expired, NULL), DRPC_OK);
    CHECK_RC(drpc_tls_server_config_set_client_ca(expired, path("ca.pem"), true, true, NULL), DRPC_OK);
    CHECK_RC(drpc_server_reload_tls(server, expired, NULL), DRPC_OK);
    CHECK_RC(call(tls, "/t/Whoami", out, sizeof out), DRPC_UNAVAILABLE);
    CHECK(strstr(out, "expired") != NULL);
    drpc_tls_server_config_free(expired);
    drpc_tls_server_config *good = NULL;
    CHECK_RC(drpc_tls_server_config_new(path("server.pem"), path("server-key.pem"), true, &good, NULL), DRPC_OK);
    CHECK_RC(drpc_tls_server_config_set_client_ca(good, path("ca.pem"), true, true, NULL), DRPC_OK);
    CHECK_RC(drpc_server_reload_tls(server, good, NULL), DRPC_OK);
    drpc_tls_server_config_free(good);
    CHECK_RC(call(tls, "/t/Admin", out, sizeof out), DRPC_OK);
    drpc_tls_client_config_free(tls);
}

static void test_bad_arguments(void) {
    drpc_tls_server_config *s = (drpc_tls_server_config *)0x1;
    drpc_error *err = NULL;
    CHECK_RC(drpc_tls_server_config_new(NULL, "k", false, &s, NULL), DRPC_BAD_ARGUMENT);
    CHECK(s == NULL);
    CHECK_RC(drpc_tls_server_config_new("junk", "junk", false, &s, &err), DRPC_INVALID_ARGUMENT);
    CHECK(err && strstr(drpc_error_message(err), "TLS") != NULL);
    drpc_error_free(err);
    CHECK_RC(drpc_tls_server_config_new("/nonexistent.pem", "/nonexistent.pem", true, &s, NULL), DRPC_INVALID_ARGUMENT);
    /* Key of another certificate. */
    CHECK_RC(drpc_tls_server_config_new(path("server.pem"), path("client-key.pem"), true, &s, NULL), DRPC_INVALID_ARGUMENT);
    CHECK_RC(drpc_tls_server_config_new(path("server.pem"), path("server-key.pem"), true, NULL, NULL), DRPC_BAD_ARGUMENT);
    char *pem_cert = read_text("server.pem"), *pem_key = read_text("server-key.pem");
    CHECK_RC(drpc_tls_server_config_new(pem_cert, pem_key, false, &s, NULL), DRPC_OK);
    CHECK_RC(drpc_tls_server_config_set_client_ca(s, "junk", false, true, NULL), DRPC_INVALID_ARGUMENT);
    CHECK_RC(drpc_tls_server_config_set_client_ca(NULL, "junk", false, true, NULL), DRPC_BAD_ARGUMENT);
    drpc_tls_server_config_free(s);
    free(pem_cert);
    free(pem_key);
    drpc_tls_server_config_free(NULL);
    drpc_tls_client_config *c = NULL;
    CHECK_RC(drpc_tls_client_config_new("junk", false, &c, NULL), DRPC_INVALID_ARGUMENT);
    CHECK(c == NULL);
    CHECK_RC(drpc_tls_client_config_new(path("ca.pem"), true, &c, NULL), DRPC_OK);
    CHECK_RC(drpc_tls_client_config_set_identity(c, "junk", "junk", false, NULL), DRPC_INVALID_ARGUMENT);
    CHECK_RC(drpc_tls_client_config_set_server_name(c, NULL, NULL), DRPC_BAD_ARGUMENT);
    drpc_conn *conn = (drpc_conn *)0x1;
    CHECK_RC(drpc_conn_dial_tls(NULL, c, NULL, &conn, NULL), DRPC_BAD_ARGUMENT);
    CHECK(conn == NULL);
    CHECK_RC(drpc_conn_dial_tls(addr, NULL, NULL, &conn, NULL), DRPC_BAD_ARGUMENT);
    drpc_tls_client_config_free(c);
    drpc_tls_client_config_free(NULL);
    CHECK(drpc_server_call_peer(NULL, DRPC_PEER_ADDR, 0) == NULL);
    CHECK(drpc_server_call_peer_count(NULL, DRPC_PEER_ADDR) == 0);
    size_t len = 7;
    CHECK(drpc_server_call_peer_certificate(NULL, 0, &len) == NULL && len == 0);
    CHECK(drpc_stream_peer(NULL, DRPC_PEER_ADDR, 0) == NULL);
    /* Reload on a server without TLS addresses. */
    drpc_server *plain = drpc_server_new();
    drpc_tls_server_config *good = NULL;
    CHECK_RC(drpc_tls_server_config_new(path("server.pem"), path("server-key.pem"), true, &good, NULL), DRPC_OK);
    CHECK_RC(drpc_server_reload_tls(plain, good, NULL), DRPC_FAILED_PRECONDITION);
    drpc_tls_server_config_free(good);
    drpc_server_free(plain);
}

#define RUN(t)                                        \
    do {                                              \
        int before = check_failures;                  \
        t();                                          \
        if (check_failures == before) {               \
            printf("ok %s\n", #t + 5);                \
            passed++;                                 \
        } else {                                      \
            printf("not ok %s\n", #t + 5);            \
            failed++;                                 \
        }                                             \
        fflush(stdout);                               \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CERT_DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    server = drpc_server_new();
    drpc_error *err = NULL;
    CHECK_RC(drpc_server_register_unary(server, "/t/Whoami", whoami, NULL, NULL), DRPC_OK);
    CHECK_RC(drpc_server_register_unary(server, "/t/Admin", admin, NULL, NULL), DRPC_OK);
    drpc_tls_server_config *tls = NULL;
    CHECK_RC(drpc_tls_server_config_new(path("server.pem"), path("server-key.pem"), true, &tls, &err), DRPC_OK);
    CHECK_RC(drpc_tls_server_config_set_client_ca(tls, path("ca.pem"), true, true, &err), DRPC_OK);
    CHECK_RC(drpc_server_listen_tls(server, "127.0.0.1:0", tls, &addr, &err), DRPC_OK);
    drpc_tls_server_config_free(tls);
    if (err) fprintf(stderr, "setup: %s\n", drpc_error_message(err));
    if (!addr) {
        fprintf(stderr, "listen failed: %s\n", err ? drpc_error_message(err) : "?");
        return 1;
    }
    int passed = 0, failed = 0;
    RUN(test_mutual_tls_identity);
    RUN(test_refusals_name_the_cause);
    RUN(test_reload);
    RUN(test_bad_arguments);
    drpc_server_shutdown(server, 1000, NULL);
    drpc_server_free(server);
    drpc_string_free(addr);
    printf("tls: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
