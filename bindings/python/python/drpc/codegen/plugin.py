"""``protoc-gen-drpc_python``: the protoc plugin entry point (a
CodeGeneratorRequest on stdin, a CodeGeneratorResponse on stdout)."""

from __future__ import annotations

import sys

from google.protobuf.compiler import plugin_pb2

from ._python import generate


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
