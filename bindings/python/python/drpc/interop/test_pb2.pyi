# Regenerate with bindings/python/gen_proto.sh (protoc 3.21.12 --python_out --pyi_out).
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EchoStatus(_message.Message):
    __slots__ = ["code", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class Payload(_message.Message):
    __slots__ = ["body"]
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class ResponseParameters(_message.Message):
    __slots__ = ["interval_ms", "size"]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    size: int
    def __init__(self, size: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ["active_rpcs", "cancelled_rpcs", "peak_active_rpcs", "total_rpcs"]
    ACTIVE_RPCS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_RPCS_FIELD_NUMBER: _ClassVar[int]
    PEAK_ACTIVE_RPCS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RPCS_FIELD_NUMBER: _ClassVar[int]
    active_rpcs: int
    cancelled_rpcs: int
    peak_active_rpcs: int
    total_rpcs: int
    def __init__(self, total_rpcs: _Optional[int] = ..., active_rpcs: _Optional[int] = ..., cancelled_rpcs: _Optional[int] = ..., peak_active_rpcs: _Optional[int] = ...) -> None: ...

class SimpleRequest(_message.Message):
    __slots__ = ["echo_metadata_key", "payload", "response_size", "response_status", "sleep_ms"]
    ECHO_METADATA_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SIZE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    SLEEP_MS_FIELD_NUMBER: _ClassVar[int]
    echo_metadata_key: str
    payload: Payload
    response_size: int
    response_status: EchoStatus
    sleep_ms: int
    def __init__(self, response_size: _Optional[int] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., response_status: _Optional[_Union[EchoStatus, _Mapping]] = ..., sleep_ms: _Optional[int] = ..., echo_metadata_key: _Optional[str] = ...) -> None: ...

class SimpleResponse(_message.Message):
    __slots__ = ["metadata_value", "payload", "request_payload_size"]
    METADATA_VALUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    metadata_value: str
    payload: Payload
    request_payload_size: int
    def __init__(self, payload: _Optional[_Union[Payload, _Mapping]] = ..., metadata_value: _Optional[str] = ..., request_payload_size: _Optional[int] = ...) -> None: ...

class StreamingInputCallRequest(_message.Message):
    __slots__ = ["payload"]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: Payload
    def __init__(self, payload: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...

class StreamingInputCallResponse(_message.Message):
    __slots__ = ["aggregated_payload_size"]
    AGGREGATED_PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    aggregated_payload_size: int
    def __init__(self, aggregated_payload_size: _Optional[int] = ...) -> None: ...

class StreamingOutputCallRequest(_message.Message):
    __slots__ = ["payload", "response_parameters", "response_status"]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    payload: Payload
    response_parameters: _containers.RepeatedCompositeFieldContainer[ResponseParameters]
    response_status: EchoStatus
    def __init__(self, response_parameters: _Optional[_Iterable[_Union[ResponseParameters, _Mapping]]] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., response_status: _Optional[_Union[EchoStatus, _Mapping]] = ...) -> None: ...

class StreamingOutputCallResponse(_message.Message):
    __slots__ = ["payload"]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: Payload
    def __init__(self, payload: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...
