"""drpc.codegen: generates typed DRPC clients and servicers from .proto files.

Two ways to run it (both write ``<name>_drpc.py`` beside ``<name>_pb2.py``):

* as a protoc plugin, ``protoc-gen-drpc_python`` (a console script installed
  with the package)::

    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --drpc_python_out=. kv.proto

* as ``python -m drpc.codegen [-I DIR]... [--out DIR] kv.proto``, which runs
  protoc itself (grpcio-tools' if installed, else ``protoc`` on PATH) and
  also writes the message modules ``kv_pb2.py`` and ``kv_pb2.pyi``.

The generated code imports :mod:`drpc.typed` at run time, not this package.
"""

from ._python import GenerationError, generate, module_name, output_name

__all__ = ["generate", "GenerationError", "module_name", "output_name"]
