/* The example of include/README.md: call EmptyCall of a DRPC server.
 * Built by tests/c/run.sh against an installed copy of libdrpc with
 * `pkg-config --cflags --libs drpc`. Usage: install_smoke HOST:PORT */
#include <drpc.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    drpc_conn *conn = NULL;
    drpc_error *err = NULL;
    drpc_status rc = drpc_conn_dial(argv[1], NULL, &conn, &err);
    if (rc == DRPC_OK) {
        drpc_buffer *resp = NULL; /* an empty protobuf message is 0 bytes */
        rc = drpc_conn_unary(conn, "/drpc.interop.TestService/EmptyCall", NULL, 0,
                             NULL, 1000 /* ms */, &resp, &err);
        if (rc == DRPC_OK) printf("ok: %zu-byte response\n", drpc_buffer_len(resp));
        drpc_buffer_free(resp);
    }
    if (rc != DRPC_OK) fprintf(stderr, "failed: %s: %s\n", drpc_status_name(rc), drpc_error_message(err));
    drpc_error_free(err);
    drpc_conn_free(conn);
    return rc == DRPC_OK ? 0 : 1;
}
