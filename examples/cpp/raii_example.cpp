// A C++17 example (and test) of libdrpc: every handle lives in a
// std::unique_ptr whose deleter is the matching drpc_*_free function, so
// nothing leaks on any path, including early returns and exceptions.
//
// Build: g++ -std=c++17 raii_example.cpp $(pkg-config --cflags --libs drpc)
// Run:   ./a.out   (prints "PASS cpp_raii" and exits 0 on success)
#include <drpc.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

namespace drpc {

template <typename T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};

using Server = std::unique_ptr<drpc_server, Deleter<drpc_server, drpc_server_free>>;
using Conn = std::unique_ptr<drpc_conn, Deleter<drpc_conn, drpc_conn_free>>;
using Stream = std::unique_ptr<drpc_stream, Deleter<drpc_stream, drpc_stream_free>>;
using Buffer = std::unique_ptr<drpc_buffer, Deleter<drpc_buffer, drpc_buffer_free>>;
using Error = std::unique_ptr<drpc_error, Deleter<drpc_error, drpc_error_free>>;
using Metadata = std::unique_ptr<drpc_metadata, Deleter<drpc_metadata, drpc_metadata_free>>;
using String = std::unique_ptr<char, Deleter<char, drpc_string_free>>;

// Turns a failed status into an exception carrying the error message.
struct Failure : std::runtime_error {
    drpc_status status;
    Failure(drpc_status s, const std::string &what) : std::runtime_error(what), status(s) {}
};

// Takes `err` by reference and reads it in the body, i.e. after the call
// that sets it has returned: written as check(drpc_x(..., &err), err), the
// arguments of a call are evaluated in an unspecified order, so passing the
// pointer by value could read it before drpc_x set it (GCC does), losing
// the message and leaking the error.
inline void check(drpc_status rc, drpc_error *&raw) {
    Error err(raw);
    raw = nullptr;
    if (rc != DRPC_OK) {
        throw Failure(rc, std::string(drpc_status_name(rc)) + ": " + (err ? drpc_error_message(err.get()) : ""));
    }
}

inline std::string to_string(const Buffer &b) {
    return std::string(reinterpret_cast<const char *>(drpc_buffer_data(b.get())), drpc_buffer_len(b.get()));
}

}  // namespace drpc

// Handlers are plain C callbacks; exceptions must not escape them.
extern "C" uint32_t greet(void *, drpc_server_call *call, const uint8_t *req, size_t len) noexcept {
    std::string reply = "hello, " + std::string(reinterpret_cast<const char *>(req), len);
    const char *lang = drpc_server_call_metadata(call, "lang");
    if (lang) reply += std::string(" (") + lang + ")";
    return drpc_server_call_respond(call, reinterpret_cast<const uint8_t *>(reply.data()), reply.size());
}

extern "C" uint32_t upper(void *, drpc_stream *s) noexcept {
    for (;;) {
        drpc_buffer *raw = nullptr;
        drpc_status rc = drpc_stream_recv(s, &raw, nullptr);
        drpc::Buffer msg(raw);
        if (rc == DRPC_END) return DRPC_OK;
        if (rc != DRPC_OK) return rc;
        std::string text = drpc::to_string(msg);
        for (char &c : text) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
        rc = drpc_stream_send(s, reinterpret_cast<const uint8_t *>(text.data()), text.size(), nullptr);
        if (rc != DRPC_OK) return rc;
    }
}

static int run() {
    drpc_error *err = nullptr;
    drpc::Server server(drpc_server_new());
    drpc::check(drpc_server_register_unary(server.get(), "/example.Greeter/Greet", greet, nullptr, &err), err);
    drpc::check(drpc_server_register_stream(server.get(), "/example.Greeter/Upper", upper, nullptr, &err), err);
    char *raw_addr = nullptr;
    drpc::check(drpc_server_listen(server.get(), "127.0.0.1:0", &raw_addr, &err), err);
    drpc::String addr(raw_addr);

    drpc_conn *raw_conn = nullptr;
    drpc::check(drpc_conn_dial(addr.get(), nullptr, &raw_conn, &err), err);
    drpc::Conn conn(raw_conn);

    // Unary call with metadata.
    drpc::Metadata md(drpc_metadata_new());
    drpc_error *no_err = nullptr;  // drpc_metadata_set reports no error object
    drpc::check(drpc_metadata_set(md.get(), "lang", "c++"), no_err);
    const std::string name = "world";
    drpc_buffer *raw_resp = nullptr;
    drpc::check(drpc_conn_unary(conn.get(), "/example.Greeter/Greet", reinterpret_cast<const uint8_t *>(name.data()),
                                name.size(), md.get(), 1000, &raw_resp, &err),
                err);
    drpc::Buffer resp(raw_resp);
    if (drpc::to_string(resp) != "hello, world (c++)") throw std::runtime_error("unexpected reply " + drpc::to_string(resp));

    // Bidi stream.
    drpc_stream *raw_stream = nullptr;
    drpc::check(drpc_conn_stream(conn.get(), "/example.Greeter/Upper", nullptr, 0, &raw_stream, &err), err);
    drpc::Stream stream(raw_stream);
    for (std::string word : {"raii", "is", "neat"}) {
        drpc::check(drpc_stream_send(stream.get(), reinterpret_cast<const uint8_t *>(word.data()), word.size(), &err), err);
        drpc_buffer *raw_msg = nullptr;
        drpc::check(drpc_stream_recv(stream.get(), &raw_msg, &err), err);
        drpc::Buffer msg(raw_msg);
        for (char &c : word) c = static_cast<char>(c - 32);
        if (drpc::to_string(msg) != word) throw std::runtime_error("unexpected " + drpc::to_string(msg));
    }
    drpc::check(drpc_stream_close_send(stream.get(), &err), err);
    drpc_buffer *raw_end = nullptr;
    drpc_status rc = drpc_stream_recv(stream.get(), &raw_end, &err);
    drpc::Buffer end(raw_end);
    drpc::Error end_err(err);
    err = nullptr;
    if (rc != DRPC_END) throw std::runtime_error("expected the end of the stream");

    // An error becomes an exception with the code.
    try {
        drpc_buffer *none = nullptr;
        drpc::check(drpc_conn_unary(conn.get(), "/example.Greeter/Missing", nullptr, 0, nullptr, 0, &none, &err), err);
        throw std::runtime_error("expected UNIMPLEMENTED");
    } catch (const drpc::Failure &f) {
        if (f.status != DRPC_UNIMPLEMENTED) throw;
        // The remote's message made it into the exception.
        if (std::string(f.what()).find("/example.Greeter/Missing") == std::string::npos)
            throw std::runtime_error(std::string("error message lost: ") + f.what());
    }

    drpc::check(drpc_server_shutdown(server.get(), 1000, &err), err);
    return 0;  // stream, conn, server... are freed here, in reverse order
}

int main() {
    try {
        int rc = run();
        std::printf("PASS cpp_raii\n");
        return rc;
    } catch (const std::exception &e) {
        std::printf("FAIL cpp_raii: %s\n", e.what());
        return 1;
    }
}
