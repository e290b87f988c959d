#!/usr/bin/env python3
"""Builds the fuzz seed corpus from real traffic: runs the Rust interop client
through a recording TCP proxy in front of the Rust interop server, one case at a
time, and stores what each side sent (truncated to 64 KiB) as seeds:
client->server bytes for server_conn, server->client bytes for client_conn,
both for frames, and the InvokeMetadata and Error payloads found in them for
decoders. Usage: python3 capture.py (from anywhere; needs
`cargo build --release -p drpc-interop`)."""

import hashlib
import os
import socket
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.path.join(ROOT, "target", "release")
LIMIT = 64 << 10
CASES = ["empty_unary", "client_streaming", "server_streaming", "ping_pong", "half_duplex",
         "empty_stream", "custom_metadata", "status_code_and_message", "special_status_message",
         "unimplemented_method", "cancel_after_begin", "cancel_after_first_response",
         "timeout_on_sleeping_server", "concurrent_unary", "interleaved_streams"]


def save(target, data):
    data = data[:LIMIT]
    if not data:
        return
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def varint(buf, i):
    out = shift = 0
    while i < len(buf):
        b = buf[i]; i += 1
        out |= (b & 0x7F) << shift; shift += 7
        if b < 0x80:
            return out, i
    return None, i


def payloads(stream):
    """(kind, payload) of each complete frame in a byte stream."""
    i = 0
    while i < len(stream):
        kind = (stream[i] >> 1) & 0x3F
        _, i2 = varint(stream, i + 1)
        _, i3 = varint(stream, i2)
        n, i4 = varint(stream, i3)
        if n is None or i4 + n > len(stream):
            return
        yield kind, stream[i4:i4 + n]
        i = i4 + n


def pump(src, dst, sink):
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        sink.append(data)
        dst.sendall(data)


def proxy(listener, target, records):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(target)
        c2s, s2c = [], []
        records.append((c2s, s2c))
        for a, b, sink in ((client, upstream, c2s), (upstream, client, s2c)):
            threading.Thread(target=pump, args=(a, b, sink), daemon=True).start()


def main():
    server = subprocess.Popen([os.path.join(BIN, "drpc-interop-server"), "--addr", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    host, port = server.stdout.readline().split()[1].rsplit(":", 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    records = []
    threading.Thread(target=proxy, args=(listener, (host, int(port)), records), daemon=True).start()
    addr = "127.0.0.1:%d" % listener.getsockname()[1]
    for mode in ("mux", "sequential"):
        for case in CASES:
            if mode == "sequential" and case in ("concurrent_unary", "interleaved_streams"):
                continue
            subprocess.run([os.path.join(BIN, "drpc-interop-client"), "--addr", addr, "--case", case,
                            "--mode", mode], check=True, stdout=subprocess.DEVNULL)
    server.terminate()
    server.wait()
    import time
    time.sleep(0.2)
    for c2s, s2c in records:
        up, down = b"".join(c2s), b"".join(s2c)
        save("server_conn", up)
        save("client_conn", down)
        save("frames", up)
        save("frames", down)
        for kind, payload in list(payloads(up)) + list(payloads(down)):
            if kind in (3, 7):  # Error, InvokeMetadata
                save("decoders", payload)
    for t in ("frames", "decoders", "server_conn", "client_conn"):
        d = os.path.join(HERE, "corpus", t)
        print(t, len(os.listdir(d)) if os.path.isdir(d) else 0, "seeds")


if __name__ == "__main__":
    sys.exit(main())
