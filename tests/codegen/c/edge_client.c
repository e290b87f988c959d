/*
 * Calls every rpc of the edge-case services (tests/codegen/proto/edge/)
 * through the code protoc-gen-drpc-c generated, and checks the answers
 * (semantics: tests/codegen/README.md). Prints "PASS case" / "FAIL case:
 * why" per case; exits 1 if any failed.
 *
 *   edge_client --addr HOST:PORT
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge/edge.drpc.h"
#include "edge/plain.drpc.h"

#define TIMEOUT_MS 10000

static int failures = 0;
static char why[512];

/* CHECK(cond, fmt...): on failure records why and jumps to `out`. */
#define CHECK(cond, ...)                                       \
    do {                                                       \
        if (!(cond)) {                                         \
            snprintf(why, sizeof why, __VA_ARGS__);            \
            goto out;                                          \
        }                                                      \
    } while (0)

static void report(const char *name, int ok)
{
    if (ok) {
        printf("PASS %s\n", name);
    } else {
        printf("FAIL %s: %s\n", name, why);
        failures++;
    }
    fflush(stdout);
}

static const char *msg(drpc_error *err) { return err ? drpc_error_message(err) : "(local error)"; }

/* The request every Echo case sends (strings point at literals). */
static void make_request(Edge__V1__Request *req, Edge__Common__Outer__Inner *inner, Google__Protobuf__Timestamp *at,
                         Edge__V1__Request__Detail *detail, char **notes, const char *text, int64_t number)
{
    Edge__V1__Request r = EDGE__V1__REQUEST__INIT;
    Edge__Common__Outer__Inner i = EDGE__COMMON__OUTER__INNER__INIT;
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Edge__V1__Request__Detail d = EDGE__V1__REQUEST__DETAIL__INIT;
    *req = r;
    *inner = i;
    *at = t;
    *detail = d;
    inner->value = 5;
    inner->label = (char *)"in";
    at->seconds = 1700000000;
    at->nanos = 5;
    notes[0] = (char *)"n1";
    notes[1] = (char *)"n2";
    detail->n_notes = 2;
    detail->notes = notes;
    req->text = (char *)text;
    req->number = number;
    req->tag = 7;
    req->inner = inner;
    req->at = at;
    req->detail = detail;
    req->class_ = (char *)"c";
    req->int_ = 3;
    req->type = (char *)"t";
}

/* Checks a reply to make_request(text, number) as Unary answers it. */
static int reply_ok(const Edge__V1__Reply *r, const char *text, int64_t number, int32_t index, const char *md)
{
    char want[128];
    snprintf(want, sizeof want, "unary:%s", text);
    if (strcmp(r->text, want) != 0) return snprintf(why, sizeof why, "text %s, want %s", r->text, want), 0;
    if (r->number != number + 1) return snprintf(why, sizeof why, "number %lld", (long long)r->number), 0;
    if (r->tag != 7) return snprintf(why, sizeof why, "tag %d", r->tag), 0;
    if (r->outer == NULL || r->outer->inner == NULL || r->outer->inner->value != 5 ||
        strcmp(r->outer->inner->label, "in") != 0)
        return snprintf(why, sizeof why, "outer.inner not echoed"), 0;
    if (r->outer->n_items != 1 || r->outer->items[0]->value != 3 || strcmp(r->outer->items[0]->label, "c|t") != 0)
        return snprintf(why, sizeof why, "keyword fields not folded into outer.items"), 0;
    if (r->at == NULL || r->at->seconds != 1700000000 || r->at->nanos != 5)
        return snprintf(why, sizeof why, "at not echoed"), 0;
    if (strcmp(r->metadata_value, md) != 0)
        return snprintf(why, sizeof why, "metadata_value %s, want %s", r->metadata_value, md), 0;
    if (r->index != index) return snprintf(why, sizeof why, "index %d, want %d", r->index, index), 0;
    return 1;
}

static drpc_metadata *edge_metadata(const char *value)
{
    drpc_metadata *md = drpc_metadata_new();
    drpc_metadata_set(md, "edge-key", value);
    return md;
}

static void echo_unary(const drpc_conn *conn)
{
    Edge__V1__Request req;
    Edge__Common__Outer__Inner inner;
    Google__Protobuf__Timestamp at;
    Edge__V1__Request__Detail detail;
    char *notes[2];
    Edge__V1__Reply *reply = NULL;
    drpc_error *err = NULL;
    drpc_metadata *md = edge_metadata("v1");
    int ok = 0;
    make_request(&req, &inner, &at, &detail, notes, "hi", 41);
    drpc_status rc = edge__v1__echo__unary__call(conn, &req, md, TIMEOUT_MS, &reply, &err);
    CHECK(rc == DRPC_OK, "call: %s %s", drpc_status_name(rc), msg(err));
    ok = reply_ok(reply, "hi", 41, 2, "v1");
out:
    report("echo_unary", ok);
    if (reply) edge__v1__reply__free_unpacked(reply, NULL);
    drpc_error_free(err);
    drpc_metadata_free(md);
}

/* call_async: the callback hands its result to the waiting thread. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    drpc_status status;
    Edge__V1__Reply *reply;
    drpc_error *error;
} async_result;

static void on_unary(void *userdata, drpc_call *call, drpc_status status, Edge__V1__Reply *response, drpc_error *error)
{
    (void)call; /* the waiter holds the call handle */
    async_result *r = userdata;
    pthread_mutex_lock(&r->mu);
    r->status = status;
    r->reply = response;
    r->error = error;
    r->done = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void echo_unary_async(const drpc_conn *conn)
{
    Edge__V1__Request req;
    Edge__Common__Outer__Inner inner;
    Google__Protobuf__Timestamp at;
    Edge__V1__Request__Detail detail;
    char *notes[2];
    async_result r = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL};
    drpc_call *call = NULL;
    drpc_error *err = NULL;
    drpc_metadata *md = edge_metadata("v2");
    int ok = 0;
    make_request(&req, &inner, &at, &detail, notes, "async", 1);
    drpc_status rc = edge__v1__echo__unary__call_async(conn, &req, md, TIMEOUT_MS, on_unary, &r, &call, &err);
    CHECK(rc == DRPC_OK, "start: %s %s", drpc_status_name(rc), msg(err));
    pthread_mutex_lock(&r.mu);
    while (!r.done) pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    drpc_call_wait(call, 0); /* the callback has returned: r is no longer touched */
    CHECK(r.status == DRPC_OK, "callback: %s %s", drpc_status_name(r.status), msg(r.error));
    ok = reply_ok(r.reply, "async", 1, 2, "v2");
out:
    report("echo_unary_async", ok);
    if (r.reply) edge__v1__reply__free_unpacked(r.reply, NULL);
    drpc_error_free(r.error);
    drpc_error_free(err);
    drpc_call_free(call);
    drpc_metadata_free(md);
}

/* Many async calls at once, every other one cancelled right after it
 * started: each callback must run exactly once, with the reply or
 * DRPC_CANCELED, and (under valgrind) nothing may leak or be touched after
 * free. */
#define RACE_CALLS 200
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int bad;
    int calls[RACE_CALLS];
} race_state;
typedef struct {
    race_state *state;
    int index;
} race_slot;

static void on_race(void *userdata, drpc_call *call, drpc_status status, Edge__V1__Reply *response, drpc_error *error)
{
    (void)call; /* the racing thread holds the call handle */
    race_slot *slot = userdata;
    race_state *st = slot->state;
    int good = (status == DRPC_OK && response != NULL && response->number == slot->index + 1) ||
               (status == DRPC_CANCELED && (slot->index % 2) == 1 && response == NULL);
    if (response) edge__v1__reply__free_unpacked(response, NULL);
    drpc_error_free(error);
    pthread_mutex_lock(&st->mu);
    st->calls[slot->index]++;
    if (!good) st->bad++;
    st->done++;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void echo_unary_async_race(const drpc_conn *conn)
{
    static race_state st;
    static race_slot slots[RACE_CALLS];
    drpc_call *calls[RACE_CALLS] = {0};
    drpc_error *err = NULL;
    int ok = 0, started = 0;
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    for (int i = 0; i < RACE_CALLS; i++) {
        Edge__V1__Request req = EDGE__V1__REQUEST__INIT;
        req.text = (char *)"race";
        req.number = i;
        slots[i].state = &st;
        slots[i].index = i;
        drpc_status rc = edge__v1__echo__unary__call_async(conn, &req, NULL, TIMEOUT_MS, on_race, &slots[i], &calls[i], &err);
        CHECK(rc == DRPC_OK, "start %d: %s %s", i, drpc_status_name(rc), msg(err));
        started++;
        if (i % 2 == 1) drpc_call_cancel(calls[i]);
    }
    pthread_mutex_lock(&st.mu);
    while (st.done < started) pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    for (int i = 0; i < started; i++) drpc_call_wait(calls[i], 0); /* callbacks have returned */
    CHECK(st.bad == 0, "%d callbacks with a wrong result", st.bad);
    for (int i = 0; i < started; i++) CHECK(st.calls[i] == 1, "call %d: callback ran %d times", i, st.calls[i]);
    ok = 1;
out:
    if (!ok) { /* let the started calls finish before their slots go away */
        pthread_mutex_lock(&st.mu);
        while (st.done < started) pthread_cond_wait(&st.cv, &st.mu);
        pthread_mutex_unlock(&st.mu);
    }
    report("echo_unary_async_race", ok);
    for (int i = 0; i < RACE_CALLS; i++) drpc_call_free(calls[i]);
    drpc_error_free(err);
}

/* Bidi streams cancelled mid-call, repeatedly: the server's handler sees the
 * cancellation in __server_recv and returns; nothing leaks on either side. */
static void echo_bidi_cancel(const drpc_conn *conn)
{
    drpc_error *err = NULL;
    Edge__V1__Reply *reply = NULL;
    Edge__V1__Echo__Bidi_ClientStream *stream = NULL;
    int ok = 0;
    for (int i = 0; i < 50; i++) {
        Edge__V1__Request req = EDGE__V1__REQUEST__INIT;
        req.text = (char *)"c";
        drpc_status rc = edge__v1__echo__bidi__open(conn, NULL, TIMEOUT_MS, &stream, &err);
        CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
        rc = edge__v1__echo__bidi__send(stream, &req, &err);
        CHECK(rc == DRPC_OK, "send: %s %s", drpc_status_name(rc), msg(err));
        rc = edge__v1__echo__bidi__recv(stream, &reply, &err);
        CHECK(rc == DRPC_OK, "recv: %s %s", drpc_status_name(rc), msg(err));
        edge__v1__reply__free_unpacked(reply, NULL);
        reply = NULL;
        CHECK(edge__v1__echo__bidi__cancel(stream) == DRPC_OK, "cancel");
        rc = edge__v1__echo__bidi__recv(stream, &reply, &err);
        CHECK(rc == DRPC_CANCELED, "recv after cancel: %s", drpc_status_name(rc));
        drpc_error_free(err);
        err = NULL;
        edge__v1__echo__bidi__free(stream);
        stream = NULL;
    }
    ok = 1;
out:
    report("echo_bidi_cancel", ok);
    drpc_error_free(err);
    edge__v1__echo__bidi__free(stream);
}

static void echo_server_stream(const drpc_conn *conn)
{
    Edge__V1__Request req = EDGE__V1__REQUEST__INIT;
    Edge__V1__Echo__ServerStream_ClientStream *stream = NULL;
    Edge__V1__Reply *reply = NULL;
    drpc_error *err = NULL;
    drpc_status rc;
    int ok = 0, n = 0;
    req.text = (char *)"s";
    req.number = 3;
    rc = edge__v1__echo__server_stream__open(conn, &req, NULL, TIMEOUT_MS, &stream, &err);
    CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
    while ((rc = edge__v1__echo__server_stream__recv(stream, &reply, &err)) == DRPC_OK) {
        int good = strcmp(reply->text, "s") == 0 && reply->index == n;
        edge__v1__reply__free_unpacked(reply, NULL);
        reply = NULL;
        CHECK(good, "reply %d wrong", n);
        n++;
    }
    CHECK(rc == DRPC_END, "recv: %s %s", drpc_status_name(rc), msg(err));
    CHECK(n == 3, "%d replies, want 3", n);
    ok = 1;
out:
    report("echo_server_stream", ok);
    drpc_error_free(err);
    edge__v1__echo__server_stream__free(stream);
}

static void echo_client_stream(const drpc_conn *conn, int count, const char *name)
{
    static const char *texts[] = {"a", "b", "c"};
    Edge__V1__Echo__ClientStream_ClientStream *stream = NULL;
    Edge__V1__Reply *reply = NULL;
    drpc_error *err = NULL;
    drpc_status rc;
    int ok = 0;
    rc = edge__v1__echo__client_stream__open(conn, NULL, TIMEOUT_MS, &stream, &err);
    CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
    for (int i = 0; i < count; i++) {
        Edge__V1__Request req = EDGE__V1__REQUEST__INIT;
        req.text = (char *)texts[i];
        req.number = i + 1;
        rc = edge__v1__echo__client_stream__send(stream, &req, &err);
        CHECK(rc == DRPC_OK, "send: %s %s", drpc_status_name(rc), msg(err));
    }
    rc = edge__v1__echo__client_stream__close_and_recv(stream, &reply, &err);
    CHECK(rc == DRPC_OK, "close_and_recv: %s %s", drpc_status_name(rc), msg(err));
    if (count == 3) {
        CHECK(strcmp(reply->text, "a,b,c") == 0 && reply->number == 6 && reply->index == 3, "got %s %lld %d",
              reply->text, (long long)reply->number, reply->index);
    } else {
        CHECK(strcmp(reply->text, "") == 0 && reply->number == 0 && reply->index == 0, "empty stream: got %s",
              reply->text);
    }
    ok = 1;
out:
    report(name, ok);
    if (reply) edge__v1__reply__free_unpacked(reply, NULL);
    drpc_error_free(err);
    edge__v1__echo__client_stream__free(stream);
}

static void echo_bidi(const drpc_conn *conn)
{
    static const char *texts[] = {"x", "y", "z"};
    Edge__V1__Echo__Bidi_ClientStream *stream = NULL;
    Edge__V1__Reply *reply = NULL;
    drpc_error *err = NULL;
    drpc_metadata *md = edge_metadata("bidi");
    drpc_status rc;
    int ok = 0;
    rc = edge__v1__echo__bidi__open(conn, md, TIMEOUT_MS, &stream, &err);
    CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
    for (int i = 0; i < 3; i++) { /* ping-pong: each reply before the next request */
        Edge__V1__Request req;
        Edge__Common__Outer__Inner inner;
        Google__Protobuf__Timestamp at;
        Edge__V1__Request__Detail detail;
        char *notes[2];
        make_request(&req, &inner, &at, &detail, notes, texts[i], i);
        rc = edge__v1__echo__bidi__send(stream, &req, &err);
        CHECK(rc == DRPC_OK, "send: %s %s", drpc_status_name(rc), msg(err));
        rc = edge__v1__echo__bidi__recv(stream, &reply, &err);
        CHECK(rc == DRPC_OK, "recv %d: %s %s", i, drpc_status_name(rc), msg(err));
        if (!reply_ok(reply, texts[i], i, i, "bidi")) goto out; /* reply_ok set why */
        edge__v1__reply__free_unpacked(reply, NULL);
        reply = NULL;
    }
    rc = edge__v1__echo__bidi__close_send(stream, &err);
    CHECK(rc == DRPC_OK, "close_send: %s", drpc_status_name(rc));
    rc = edge__v1__echo__bidi__recv(stream, &reply, &err);
    CHECK(rc == DRPC_END, "end: %s %s", drpc_status_name(rc), msg(err));
    ok = 1;
out:
    report("echo_bidi", ok);
    if (reply) edge__v1__reply__free_unpacked(reply, NULL);
    drpc_error_free(err);
    drpc_metadata_free(md);
    edge__v1__echo__bidi__free(stream);
}

static void echo_fail(const drpc_conn *conn)
{
    Edge__V1__Request req = EDGE__V1__REQUEST__INIT;
    Google__Protobuf__Empty *empty = NULL;
    drpc_error *err = NULL;
    int ok = 0;
    req.text = (char *)"no such key";
    req.number = DRPC_NOT_FOUND;
    drpc_status rc = edge__v1__echo__fail__call(conn, &req, NULL, TIMEOUT_MS, &empty, &err);
    CHECK(rc == DRPC_NOT_FOUND, "status %s, want NOT_FOUND", drpc_status_name(rc));
    CHECK(empty == NULL && strcmp(drpc_error_message(err), "no such key") == 0, "message %s",
          drpc_error_message(err));
    ok = 1;
out:
    report("echo_fail", ok);
    if (empty) google__protobuf__empty__free_unpacked(empty, NULL);
    drpc_error_free(err);
}

static void keywords_class(const drpc_conn *conn)
{
    Google__Protobuf__Int64Value v = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    Google__Protobuf__Timestamp *ts = NULL;
    drpc_error *err = NULL;
    int ok = 0;
    v.value = 42;
    drpc_status rc = edge__v1__keywords__class__call(conn, &v, NULL, TIMEOUT_MS, &ts, &err);
    CHECK(rc == DRPC_OK, "call: %s %s", drpc_status_name(rc), msg(err));
    CHECK(ts->seconds == 42 && ts->nanos == 7, "got %lld.%d", (long long)ts->seconds, ts->nanos);
    ok = 1;
out:
    report("keywords_class", ok);
    if (ts) google__protobuf__timestamp__free_unpacked(ts, NULL);
    drpc_error_free(err);
}

static void keywords_import(const drpc_conn *conn)
{
    Google__Protobuf__StringValue v = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    Edge__V1__Keywords__Import_ClientStream *stream = NULL;
    Google__Protobuf__StringValue *item = NULL;
    drpc_error *err = NULL;
    char got[16] = {0};
    size_t n = 0;
    drpc_status rc;
    int ok = 0;
    v.value = (char *)"abc";
    rc = edge__v1__keywords__import__open(conn, &v, NULL, TIMEOUT_MS, &stream, &err);
    CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
    while ((rc = edge__v1__keywords__import__recv(stream, &item, &err)) == DRPC_OK) {
        if (n + strlen(item->value) < sizeof got - 1) strcat(got, item->value);
        n++;
        google__protobuf__string_value__free_unpacked(item, NULL);
    }
    CHECK(rc == DRPC_END, "recv: %s %s", drpc_status_name(rc), msg(err));
    CHECK(n == 3 && strcmp(got, "abc") == 0, "got %zu items %s", n, got);
    ok = 1;
out:
    report("keywords_import", ok);
    drpc_error_free(err);
    edge__v1__keywords__import__free(stream);
}

static void keywords_none(const drpc_conn *conn)
{
    Edge__V1__Keywords__None_ClientStream *stream = NULL;
    Edge__Common__Outer *outer = NULL;
    drpc_error *err = NULL;
    drpc_status rc;
    int ok = 0;
    rc = edge__v1__keywords__none__open(conn, NULL, TIMEOUT_MS, &stream, &err);
    CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
    for (int i = 1; i <= 2; i++) {
        Edge__Common__Outer__Inner inner = EDGE__COMMON__OUTER__INNER__INIT;
        inner.value = i;
        inner.label = (char *)(i == 1 ? "x" : "y");
        rc = edge__v1__keywords__none__send(stream, &inner, &err);
        CHECK(rc == DRPC_OK, "send: %s %s", drpc_status_name(rc), msg(err));
    }
    rc = edge__v1__keywords__none__close_and_recv(stream, &outer, &err);
    CHECK(rc == DRPC_OK, "close_and_recv: %s %s", drpc_status_name(rc), msg(err));
    CHECK(outer->n_items == 2 && outer->items[0]->value == 1 && strcmp(outer->items[0]->label, "x") == 0 &&
              outer->items[1]->value == 2 && strcmp(outer->items[1]->label, "y") == 0,
          "items not echoed in order (%zu)", outer->n_items);
    ok = 1;
out:
    report("keywords_none", ok);
    if (outer) edge__common__outer__free_unpacked(outer, NULL);
    drpc_error_free(err);
    edge__v1__keywords__none__free(stream);
}

static void keywords_async(const drpc_conn *conn)
{
    Edge__V1__Keywords__Async_ClientStream *stream = NULL;
    PlainMessage *reply = NULL;
    drpc_error *err = NULL;
    drpc_status rc;
    int ok = 0;
    rc = edge__v1__keywords__async__open(conn, NULL, TIMEOUT_MS, &stream, &err);
    CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
    for (int i = 0; i < 3; i++) { /* all requests first, then the replies */
        PlainMessage m = PLAIN_MESSAGE__INIT;
        m.text = i == 1 ? NULL : (char *)(i == 0 ? "ab" : "cd"); /* the second has no text */
        rc = edge__v1__keywords__async__send(stream, &m, &err);
        CHECK(rc == DRPC_OK, "send: %s %s", drpc_status_name(rc), msg(err));
    }
    rc = edge__v1__keywords__async__close_send(stream, &err);
    CHECK(rc == DRPC_OK, "close_send");
    for (int i = 0; i < 3; i++) {
        rc = edge__v1__keywords__async__recv(stream, &reply, &err);
        CHECK(rc == DRPC_OK, "recv %d: %s %s", i, drpc_status_name(rc), msg(err));
        CHECK(reply->has_count && reply->count == i, "count of %d", i);
        if (i == 1) {
            CHECK(reply->text == NULL, "absent text came back present");
        } else {
            CHECK(reply->text != NULL && strcmp(reply->text, i == 0 ? "AB" : "CD") == 0, "text %s", reply->text);
        }
        plain_message__free_unpacked(reply, NULL);
        reply = NULL;
    }
    rc = edge__v1__keywords__async__recv(stream, &reply, &err);
    CHECK(rc == DRPC_END, "end: %s", drpc_status_name(rc));
    ok = 1;
out:
    report("keywords_async", ok);
    if (reply) plain_message__free_unpacked(reply, NULL);
    drpc_error_free(err);
    edge__v1__keywords__async__free(stream);
}

static void plain_echo(const drpc_conn *conn)
{
    PlainMessage m = PLAIN_MESSAGE__INIT, empty = PLAIN_MESSAGE__INIT;
    PlainMessage *reply = NULL;
    drpc_error *err = NULL;
    int ok = 0;
    m.text = (char *)"hello";
    drpc_status rc = plain__echo__call(conn, &m, NULL, TIMEOUT_MS, &reply, &err);
    CHECK(rc == DRPC_OK, "call: %s %s", drpc_status_name(rc), msg(err));
    CHECK(reply->text && strcmp(reply->text, "hello") == 0 && reply->has_count && reply->count == 5, "wrong echo");
    plain_message__free_unpacked(reply, NULL);
    reply = NULL;
    rc = plain__echo__call(conn, &empty, NULL, TIMEOUT_MS, &reply, &err);
    CHECK(rc == DRPC_OK, "call: %s %s", drpc_status_name(rc), msg(err));
    CHECK(reply->text == NULL && reply->has_count && reply->count == 0, "presence not kept");
    ok = 1;
out:
    report("plain_echo", ok);
    if (reply) plain_message__free_unpacked(reply, NULL);
    drpc_error_free(err);
}

static void plain_collect(const drpc_conn *conn)
{
    Plain__Collect_ClientStream *stream = NULL;
    PlainMessage *reply = NULL;
    drpc_error *err = NULL;
    drpc_status rc;
    int ok = 0;
    rc = plain__collect__open(conn, NULL, TIMEOUT_MS, &stream, &err);
    CHECK(rc == DRPC_OK, "open: %s %s", drpc_status_name(rc), msg(err));
    for (int i = 0; i < 2; i++) {
        PlainMessage m = PLAIN_MESSAGE__INIT;
        m.text = (char *)(i == 0 ? "a" : "b");
        rc = plain__collect__send(stream, &m, &err);
        CHECK(rc == DRPC_OK, "send: %s %s", drpc_status_name(rc), msg(err));
    }
    rc = plain__collect__close_and_recv(stream, &reply, &err);
    CHECK(rc == DRPC_OK, "close_and_recv: %s %s", drpc_status_name(rc), msg(err));
    CHECK(reply->text && strcmp(reply->text, "a+b") == 0 && reply->has_count && reply->count == 2, "got %s",
          reply->text ? reply->text : "(none)");
    ok = 1;
out:
    report("plain_collect", ok);
    if (reply) plain_message__free_unpacked(reply, NULL);
    drpc_error_free(err);
    plain__collect__free(stream);
}

static void bad_arguments(const drpc_conn *conn)
{
    Edge__V1__Reply *reply = NULL;
    Edge__V1__Reply not_a_request = EDGE__V1__REPLY__INIT;
    drpc_error *err = NULL;
    int ok = 0;
    /* NULL request, and a message of the wrong type behind the right pointer type */
    drpc_status rc = edge__v1__echo__unary__call(conn, NULL, NULL, TIMEOUT_MS, &reply, &err);
    CHECK(rc == DRPC_BAD_ARGUMENT && reply == NULL, "NULL request: %s", drpc_status_name(rc));
    rc = edge__v1__echo__unary__call(conn, (const Edge__V1__Request *)(const void *)&not_a_request, NULL, TIMEOUT_MS,
                                     &reply, &err);
    CHECK(rc == DRPC_BAD_ARGUMENT && reply == NULL, "wrong message type: %s", drpc_status_name(rc));
    ok = 1;
out:
    report("bad_arguments", ok);
    drpc_error_free(err);
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    drpc_conn *conn = NULL;
    drpc_error *err = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else {
            addr = NULL;
            break;
        }
    }
    if (addr == NULL) {
        fprintf(stderr, "usage: %s --addr HOST:PORT\n", argv[0]);
        return 2;
    }
    if (drpc_conn_dial(addr, NULL, &conn, &err) != DRPC_OK) {
        fprintf(stderr, "edge_client: dial %s: %s\n", addr, drpc_error_message(err));
        drpc_error_free(err);
        return 1;
    }
    echo_unary(conn);
    echo_unary_async(conn);
    echo_unary_async_race(conn);
    echo_server_stream(conn);
    echo_client_stream(conn, 3, "echo_client_stream");
    echo_client_stream(conn, 0, "echo_client_stream_empty");
    echo_bidi(conn);
    echo_bidi_cancel(conn);
    echo_fail(conn);
    keywords_class(conn);
    keywords_import(conn);
    keywords_none(conn);
    keywords_async(conn);
    plain_echo(conn);
    plain_collect(conn);
    bad_arguments(conn);
    drpc_conn_free(conn);
    return failures ? 1 : 0;
}
