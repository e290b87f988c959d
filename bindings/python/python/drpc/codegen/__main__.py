"""``python -m drpc.codegen [-I DIR]... [--out DIR] FILE.proto...``

Parses the protos with protoc (grpcio-tools' bundled one when installed,
else ``protoc`` on PATH, or ``--protoc PATH``) and writes, under ``--out``
(default ``.``), ``<name>_drpc.py`` for each FILE and, unless
``--no-messages``, protoc's ``<name>_pb2.py`` and ``<name>_pb2.pyi``.
Without ``-I``, the current directory is the import path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from ._python import generate


def _find_protoc(explicit: Optional[str]) -> Tuple[str, List[str]]:
    """("grpc_tools", [its include dir]) or (path to a protoc binary, [])."""
    if explicit:
        return explicit, []
    try:
        import grpc_tools  # type: ignore[import-not-found, import-untyped, unused-ignore]

        return "grpc_tools", [os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")]
    except ImportError:
        pass
    found = shutil.which("protoc")
    if found is None:
        raise SystemExit(
            "drpc.codegen: no protoc found: pip install grpcio-tools, or install protoc "
            "(Debian: apt-get install protobuf-compiler), or pass --protoc PATH"
        )
    return found, []


def _run_protoc(protoc: str, args: List[str]) -> None:
    if protoc == "grpc_tools":
        from grpc_tools import protoc as grpc_protoc  # type: ignore[import-not-found, import-untyped, unused-ignore]

        rc = grpc_protoc.main(["grpc_tools.protoc"] + args)
    else:
        rc = subprocess.call([protoc] + args)
    if rc != 0:
        raise SystemExit(f"drpc.codegen: protoc failed (exit {rc})")


def _proto_name(path: str, includes: Sequence[str]) -> str:
    """The name protoc gives ``path``: relative to the first import path
    containing it (a path that does not exist is already such a name)."""
    if not os.path.exists(path):
        return path.replace(os.sep, "/")
    full = os.path.abspath(path)
    for inc in includes:
        root = os.path.abspath(inc)
        if full.startswith(root + os.sep):
            return os.path.relpath(full, root).replace(os.sep, "/")
    raise SystemExit(f"drpc.codegen: {path} is not under any import path (-I): {list(includes)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drpc.codegen",
        description="Generate typed DRPC clients and servicers (<name>_drpc.py) from .proto files.",
    )
    parser.add_argument("protos", nargs="+", metavar="FILE.proto")
    parser.add_argument("-I", "--proto_path", action="append", default=[], metavar="DIR", help="import path (repeatable; default .)")
    parser.add_argument("--out", default=".", metavar="DIR", help="output directory (default .)")
    parser.add_argument("--protoc", metavar="PATH", help="the protoc binary to use")
    parser.add_argument("--no-messages", action="store_true", help="do not write the _pb2.py/_pb2.pyi message modules")
    opts = parser.parse_args(argv)

    includes: List[str] = opts.proto_path or ["."]
    protoc, extra_includes = _find_protoc(opts.protoc)
    names = [_proto_name(p, includes) for p in opts.protos]
    os.makedirs(opts.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = os.path.join(tmp, "descriptors.pb")
        args = [f"-I{inc}" for inc in includes + extra_includes]
        args += [f"--descriptor_set_out={descriptors}", "--include_imports", "--include_source_info"]
        if not opts.no_messages:
            args += [f"--python_out={opts.out}", f"--pyi_out={opts.out}"]
        _run_protoc(protoc, args + names)
        with open(descriptors, "rb") as fh:
            files = descriptor_pb2.FileDescriptorSet.FromString(fh.read())

    request = plugin_pb2.CodeGeneratorRequest()
    request.file_to_generate.extend(names)
    request.proto_file.extend(files.file)
    response = generate(request)
    if response.error:
        print(f"drpc.codegen: {response.error}", file=sys.stderr)
        return 1
    for out in response.file:
        path = os.path.join(opts.out, *out.name.split("/"))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(out.content)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
