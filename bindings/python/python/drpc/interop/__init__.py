"""Interop test programs for the shared DRPC test service
(``/work/shared/interop/test.proto`` and ``CASES.md``).

- ``python -m drpc.interop.server --addr HOST:PORT [--api aio|sync]``
- ``python -m drpc.interop.client --addr HOST:PORT --case NAME|all --mode mux|sequential``

``test_pb2`` is generated from test.proto by ``bindings/python/gen_proto.sh``.
"""

SERVICE = "/drpc.interop.TestService/"
