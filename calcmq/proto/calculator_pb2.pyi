from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    SUM: _ClassVar[Operation]
    SUBTRACT: _ClassVar[Operation]
    MULTIPLY: _ClassVar[Operation]
    DIVIDE: _ClassVar[Operation]
    POWER: _ClassVar[Operation]
    MODULO: _ClassVar[Operation]
OPERATION_UNSPECIFIED: Operation
SUM: Operation
SUBTRACT: Operation
MULTIPLY: Operation
DIVIDE: Operation
POWER: Operation
MODULO: Operation

class OperationRequest(_message.Message):
    __slots__ = ("num1", "num2")
    NUM1_FIELD_NUMBER: _ClassVar[int]
    NUM2_FIELD_NUMBER: _ClassVar[int]
    num1: float
    num2: float
    def __init__(self, num1: _Optional[float] = ..., num2: _Optional[float] = ...) -> None: ...

class OperationResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: float
    def __init__(self, result: _Optional[float] = ...) -> None: ...

class ComputeRequest(_message.Message):
    __slots__ = ("id", "operation", "num1", "num2", "deadline_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    NUM1_FIELD_NUMBER: _ClassVar[int]
    NUM2_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    operation: Operation
    num1: float
    num2: float
    deadline_ms: int
    def __init__(self, id: _Optional[int] = ..., operation: _Optional[_Union[Operation, str]] = ..., num1: _Optional[float] = ..., num2: _Optional[float] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class ComputeResponse(_message.Message):
    __slots__ = ("id", "result", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    result: float
    error: Error
    def __init__(self, id: _Optional[int] = ..., result: _Optional[float] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class ComputeBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ComputeRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ComputeRequest, _Mapping]]] = ...) -> None: ...

class ComputeAnswers(_message.Message):
    __slots__ = ("answers",)
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    answers: _containers.RepeatedCompositeFieldContainer[ComputeResponse]
    def __init__(self, answers: _Optional[_Iterable[_Union[ComputeResponse, _Mapping]]] = ...) -> None: ...

class CalculationRequest(_message.Message):
    __slots__ = ("operation", "num1", "num2", "request_id")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    NUM1_FIELD_NUMBER: _ClassVar[int]
    NUM2_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    num1: float
    num2: float
    request_id: str
    def __init__(self, operation: _Optional[_Union[Operation, str]] = ..., num1: _Optional[float] = ..., num2: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class CalculationResult(_message.Message):
    __slots__ = ("request_id", "result", "error", "worker", "attempts")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    result: float
    error: Error
    worker: str
    attempts: int
    def __init__(self, request_id: _Optional[str] = ..., result: _Optional[float] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., worker: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Ticket(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...
