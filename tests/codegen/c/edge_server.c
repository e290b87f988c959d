/*
 * The edge-case services (tests/codegen/proto/edge/) served with the code
 * protoc-gen-drpc-c generated: every handler is a typed callback registered
 * through <service>__handlers__register. Semantics: tests/codegen/README.md.
 *
 *   edge_server --addr HOST:PORT    prints "listening HOST:PORT"; SIGTERM stops it (exit 0)
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edge/edge.drpc.h"
#include "edge/plain.drpc.h"

static char *concat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (s == NULL) abort();
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

/* A Reply and the memory it points to (freed by reply_free). */
typedef struct {
    Edge__V1__Reply reply;
    Edge__Common__Outer outer;
    Edge__Common__Outer__Inner inner;
    Edge__Common__Outer__Inner item;
    Edge__Common__Outer__Inner *items[1];
    Google__Protobuf__Timestamp at;
    char *text;
    char *label;
    char *metadata_value;
} reply_buf;

/* Unary's answer to `req` (Bidi's too, with index = position). */
static void reply_fill(reply_buf *b, const Edge__V1__Request *req, const char *metadata_value, int32_t index)
{
    Edge__V1__Reply reply = EDGE__V1__REPLY__INIT;
    Edge__Common__Outer outer = EDGE__COMMON__OUTER__INIT;
    Edge__Common__Outer__Inner inner = EDGE__COMMON__OUTER__INNER__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    b->reply = reply;
    b->outer = outer;
    b->inner = inner;
    b->item = inner;
    b->at = at;
    b->text = concat3("unary:", req->text, "");
    b->label = concat3(req->class_, "|", req->type);
    b->metadata_value = concat3(metadata_value ? metadata_value : "", "", "");
    b->reply.text = b->text;
    b->reply.number = req->number + 1;
    b->reply.tag = req->tag;
    if (req->inner != NULL) {
        b->inner.value = req->inner->value;
        b->inner.label = req->inner->label;
        b->outer.inner = &b->inner;
    }
    b->item.value = req->int_;
    b->item.label = b->label;
    b->items[0] = &b->item;
    b->outer.n_items = 1;
    b->outer.items = b->items;
    b->reply.outer = &b->outer;
    if (req->at != NULL) {
        b->at.seconds = req->at->seconds;
        b->at.nanos = req->at->nanos;
        b->reply.at = &b->at;
    }
    b->reply.metadata_value = b->metadata_value;
    b->reply.index = index;
}

static void reply_free(reply_buf *b)
{
    free(b->text);
    free(b->label);
    free(b->metadata_value);
}

/* ---- edge.v1.Echo -------------------------------------------------------- */

static drpc_status echo_unary(void *userdata, const Edge__V1__Request *request, Edge__V1__Echo__Unary_ServerCall *call)
{
    reply_buf b;
    drpc_status rc;
    (void)userdata;
    const char *md = drpc_server_call_metadata(edge__v1__echo__unary__server_call(call), "edge-key");
    reply_fill(&b, request, md, request->detail ? (int32_t)request->detail->n_notes : 0);
    rc = edge__v1__echo__unary__respond(call, &b.reply);
    reply_free(&b);
    return rc;
}

static drpc_status echo_server_stream(void *userdata, const Edge__V1__Request *request,
                                      Edge__V1__Echo__ServerStream_ServerStream *stream)
{
    (void)userdata;
    for (int64_t i = 0; i < request->number; i++) {
        Edge__V1__Reply reply = EDGE__V1__REPLY__INIT;
        reply.text = request->text;
        reply.index = (int32_t)i;
        drpc_status rc = edge__v1__echo__server_stream__server_send(stream, &reply, NULL);
        if (rc != DRPC_OK) return rc;
    }
    return DRPC_OK;
}

static drpc_status echo_client_stream(void *userdata, Edge__V1__Echo__ClientStream_ServerStream *stream)
{
    Edge__V1__Reply reply = EDGE__V1__REPLY__INIT;
    Edge__V1__Request *request;
    char *text = concat3("", "", "");
    int32_t count = 0;
    drpc_status rc;
    (void)userdata;
    while ((rc = edge__v1__echo__client_stream__server_recv(stream, &request, NULL)) == DRPC_OK) {
        char *next = concat3(text, count ? "," : "", request->text);
        free(text);
        text = next;
        reply.number += request->number;
        count++;
        edge__v1__request__free_unpacked(request, NULL);
    }
    if (rc == DRPC_END) {
        reply.text = text;
        reply.index = count;
        rc = edge__v1__echo__client_stream__server_send(stream, &reply, NULL);
    }
    free(text);
    return rc;
}

static drpc_status echo_bidi(void *userdata, Edge__V1__Echo__Bidi_ServerStream *stream)
{
    Edge__V1__Request *request;
    int32_t index = 0;
    drpc_status rc;
    (void)userdata;
    const char *md = drpc_stream_metadata(edge__v1__echo__bidi__server_stream(stream), "edge-key");
    while ((rc = edge__v1__echo__bidi__server_recv(stream, &request, NULL)) == DRPC_OK) {
        reply_buf b;
        reply_fill(&b, request, md, index++);
        rc = edge__v1__echo__bidi__server_send(stream, &b.reply, NULL);
        reply_free(&b);
        edge__v1__request__free_unpacked(request, NULL);
        if (rc != DRPC_OK) return rc;
    }
    return rc == DRPC_END ? DRPC_OK : rc;
}

static drpc_status echo_fail(void *userdata, const Edge__V1__Request *request, Edge__V1__Echo__Fail_ServerCall *call)
{
    (void)userdata;
    drpc_server_call_fail(edge__v1__echo__fail__server_call(call), (uint64_t)request->number, request->text);
    return (drpc_status)request->number;
}

/* ---- edge.v1.Keywords ---------------------------------------------------- */

static drpc_status keywords_class(void *userdata, const Google__Protobuf__Int64Value *request,
                                  Edge__V1__Keywords__Class_ServerCall *call)
{
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    (void)userdata;
    ts.seconds = request->value;
    ts.nanos = 7;
    return edge__v1__keywords__class__respond(call, &ts);
}

static drpc_status keywords_import(void *userdata, const Google__Protobuf__StringValue *request,
                                   Edge__V1__Keywords__Import_ServerStream *stream)
{
    (void)userdata;
    for (const char *p = request->value; *p; p++) {
        char one[2] = {*p, 0};
        Google__Protobuf__StringValue item = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
        item.value = one;
        drpc_status rc = edge__v1__keywords__import__server_send(stream, &item, NULL);
        if (rc != DRPC_OK) return rc;
    }
    return DRPC_OK;
}

static drpc_status keywords_none(void *userdata, Edge__V1__Keywords__None_ServerStream *stream)
{
    Edge__Common__Outer outer = EDGE__COMMON__OUTER__INIT;
    Edge__Common__Outer__Inner **items = NULL;
    Edge__Common__Outer__Inner *inner;
    size_t n = 0;
    drpc_status rc;
    (void)userdata;
    while ((rc = edge__v1__keywords__none__server_recv(stream, &inner, NULL)) == DRPC_OK) {
        Edge__Common__Outer__Inner **grown = realloc(items, (n + 1) * sizeof *items);
        if (grown == NULL) abort();
        items = grown;
        items[n++] = inner;
    }
    if (rc == DRPC_END) {
        outer.n_items = n;
        outer.items = items;
        rc = edge__v1__keywords__none__server_send(stream, &outer, NULL);
    }
    /* protobuf-c has no free_unpacked function for nested messages */
    for (size_t i = 0; i < n; i++) protobuf_c_message_free_unpacked(&items[i]->base, NULL);
    free(items);
    return rc;
}

static drpc_status keywords_async(void *userdata, Edge__V1__Keywords__Async_ServerStream *stream)
{
    PlainMessage *msg;
    int64_t position = 0;
    drpc_status rc;
    (void)userdata;
    while ((rc = edge__v1__keywords__async__server_recv(stream, &msg, NULL)) == DRPC_OK) {
        PlainMessage out = PLAIN_MESSAGE__INIT;
        char *upper = NULL;
        if (msg->text != NULL) {
            upper = concat3(msg->text, "", "");
            for (char *p = upper; *p; p++) *p = (char)toupper((unsigned char)*p);
            out.text = upper;
        }
        out.has_count = 1;
        out.count = position++;
        rc = edge__v1__keywords__async__server_send(stream, &out, NULL);
        free(upper);
        plain_message__free_unpacked(msg, NULL);
        if (rc != DRPC_OK) return rc;
    }
    return rc == DRPC_END ? DRPC_OK : rc;
}

/* ---- Plain (no package) -------------------------------------------------- */

static drpc_status plain_echo(void *userdata, const PlainMessage *request, Plain__Echo_ServerCall *call)
{
    PlainMessage out = PLAIN_MESSAGE__INIT;
    (void)userdata;
    out.text = request->text;
    out.has_count = 1;
    out.count = request->text ? (int64_t)strlen(request->text) : 0;
    return plain__echo__respond(call, &out);
}

static drpc_status plain_collect(void *userdata, Plain__Collect_ServerStream *stream)
{
    PlainMessage out = PLAIN_MESSAGE__INIT;
    PlainMessage *msg;
    char *text = concat3("", "", "");
    drpc_status rc;
    (void)userdata;
    out.has_count = 1;
    while ((rc = plain__collect__server_recv(stream, &msg, NULL)) == DRPC_OK) {
        char *next = concat3(text, out.count ? "+" : "", msg->text ? msg->text : "");
        free(text);
        text = next;
        out.count++;
        plain_message__free_unpacked(msg, NULL);
    }
    if (rc == DRPC_END) {
        out.text = text;
        rc = plain__collect__server_send(stream, &out, NULL);
    }
    free(text);
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

static const Edge__V1__Echo_Handlers echo_handlers = {
    .unary = echo_unary,
    .server_stream = echo_server_stream,
    .client_stream = echo_client_stream,
    .bidi = echo_bidi,
    .fail = echo_fail,
};
static const Edge__V1__Keywords_Handlers keywords_handlers = {
    .class_ = keywords_class,
    .import = keywords_import,
    .none = keywords_none,
    .async = keywords_async,
};
static const Plain_Handlers plain_handlers = {.echo = plain_echo, .collect = plain_collect};

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0";
    drpc_error *err = NULL;
    char *bound = NULL;
    sigset_t set;
    int sig = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--addr HOST:PORT]\n", argv[0]);
            return 2;
        }
    }
    /* SIGTERM/SIGINT are taken with sigwait, so block them before any
     * library thread starts (threads inherit the mask). */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    drpc_server *server = drpc_server_new();
    if (edge__v1__echo__handlers__register(server, &echo_handlers, &err) != DRPC_OK ||
        edge__v1__keywords__handlers__register(server, &keywords_handlers, &err) != DRPC_OK ||
        plain__handlers__register(server, &plain_handlers, &err) != DRPC_OK ||
        drpc_server_listen(server, addr, &bound, &err) != DRPC_OK) {
        fprintf(stderr, "edge_server: %s\n", drpc_error_message(err));
        drpc_error_free(err);
        drpc_server_free(server);
        return 1;
    }
    printf("listening %s\n", bound);
    fflush(stdout);
    drpc_string_free(bound);
    sigwait(&set, &sig);
    int rc = drpc_server_shutdown(server, 1000, NULL) == DRPC_OK ? 0 : 1;
    drpc_server_free(server);
    return rc;
}
