/* Shared helpers of the C interop server and client (tests/c). */
#ifndef DRPC_INTEROP_COMMON_H
#define DRPC_INTEROP_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drpc.h"
#include "proto/test.pb-c.h"

#define RPC_EMPTY_CALL "/drpc.interop.TestService/EmptyCall"
#define RPC_UNARY_CALL "/drpc.interop.TestService/UnaryCall"
#define RPC_STREAMING_OUTPUT_CALL "/drpc.interop.TestService/StreamingOutputCall"
#define RPC_STREAMING_INPUT_CALL "/drpc.interop.TestService/StreamingInputCall"
#define RPC_FULL_DUPLEX_CALL "/drpc.interop.TestService/FullDuplexCall"
#define RPC_HALF_DUPLEX_CALL "/drpc.interop.TestService/HalfDuplexCall"
#define RPC_UNIMPLEMENTED_CALL "/drpc.interop.TestService/UnimplementedCall"
#define RPC_GET_STATS "/drpc.interop.TestService/GetStats"

/* A packed protobuf message in malloc'ed memory (free with free()). */
typedef struct {
    uint8_t *data;
    size_t len;
} packed_t;

static inline packed_t pack_message(const ProtobufCMessage *msg) {
    packed_t p;
    p.len = protobuf_c_message_get_packed_size(msg);
    p.data = (uint8_t *)malloc(p.len ? p.len : 1);
    if (!p.data) {
        fprintf(stderr, "out of memory\n");
        exit(3);
    }
    protobuf_c_message_pack(msg, p.data);
    return p;
}

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {
    }
}

#endif
