from qarr.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_SERVING: _ClassVar[HealthState]
    HEALTH_STATE_NOT_SERVING: _ClassVar[HealthState]
    HEALTH_STATE_UNKNOWN: _ClassVar[HealthState]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_SERVING: HealthState
HEALTH_STATE_NOT_SERVING: HealthState
HEALTH_STATE_UNKNOWN: HealthState
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class RoutingHints(_message.Message):
    __slots__ = ("tier", "latency_budget_ms", "min_accuracy")
    TIER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    tier: str
    latency_budget_ms: int
    min_accuracy: float
    def __init__(self, tier: _Optional[str] = ..., latency_budget_ms: _Optional[int] = ..., min_accuracy: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "messages", "sampling", "routing", "request_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    sampling: _common_pb2.SamplingParams
    routing: RoutingHints
    request_id: str
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., routing: _Optional[_Union[RoutingHints, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "finish_reason", "usage", "tier", "model", "quantization", "generated_tokens", "routing_reason", "attempts", "predictor", "replica")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    text: str
    finish_reason: _common_pb2.FinishReason
    usage: _common_pb2.Usage
    tier: str
    model: str
    quantization: str
    generated_tokens: int
    routing_reason: str
    attempts: int
    predictor: str
    replica: str
    def __init__(self, text: _Optional[str] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., tier: _Optional[str] = ..., model: _Optional[str] = ..., quantization: _Optional[str] = ..., generated_tokens: _Optional[int] = ..., routing_reason: _Optional[str] = ..., attempts: _Optional[int] = ..., predictor: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class ListTiersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TierProfile(_message.Message):
    __slots__ = ("ttft_ms", "decode_tokens_per_second", "accuracy", "cost_per_million_tokens", "routable", "not_routable_reason")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    COST_PER_MILLION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ROUTABLE_FIELD_NUMBER: _ClassVar[int]
    NOT_ROUTABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    decode_tokens_per_second: float
    accuracy: float
    cost_per_million_tokens: float
    routable: bool
    not_routable_reason: str
    def __init__(self, ttft_ms: _Optional[float] = ..., decode_tokens_per_second: _Optional[float] = ..., accuracy: _Optional[float] = ..., cost_per_million_tokens: _Optional[float] = ..., routable: _Optional[bool] = ..., not_routable_reason: _Optional[str] = ...) -> None: ...

class LiveLatency(_message.Message):
    __slots__ = ("ttft_ms", "decode_tokens_per_second", "samples")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    decode_tokens_per_second: float
    samples: int
    def __init__(self, ttft_ms: _Optional[float] = ..., decode_tokens_per_second: _Optional[float] = ..., samples: _Optional[int] = ...) -> None: ...

class ReplicaInfo(_message.Message):
    __slots__ = ("address", "health", "breaker", "in_flight", "load", "live", "served")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    address: str
    health: HealthState
    breaker: BreakerState
    in_flight: int
    load: _common_pb2.Load
    live: LiveLatency
    served: int
    def __init__(self, address: _Optional[str] = ..., health: _Optional[_Union[HealthState, str]] = ..., breaker: _Optional[_Union[BreakerState, str]] = ..., in_flight: _Optional[int] = ..., load: _Optional[_Union[_common_pb2.Load, _Mapping]] = ..., live: _Optional[_Union[LiveLatency, _Mapping]] = ..., served: _Optional[int] = ...) -> None: ...

class TierInfo(_message.Message):
    __slots__ = ("name", "model", "quantization", "address", "health", "max_model_len", "breaker", "load", "profile", "in_flight", "replicas", "live")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    quantization: str
    address: str
    health: HealthState
    max_model_len: int
    breaker: BreakerState
    load: _common_pb2.Load
    profile: TierProfile
    in_flight: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaInfo]
    live: LiveLatency
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., quantization: _Optional[str] = ..., address: _Optional[str] = ..., health: _Optional[_Union[HealthState, str]] = ..., max_model_len: _Optional[int] = ..., breaker: _Optional[_Union[BreakerState, str]] = ..., load: _Optional[_Union[_common_pb2.Load, _Mapping]] = ..., profile: _Optional[_Union[TierProfile, _Mapping]] = ..., in_flight: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaInfo, _Mapping]]] = ..., live: _Optional[_Union[LiveLatency, _Mapping]] = ...) -> None: ...

class ListTiersResponse(_message.Message):
    __slots__ = ("tiers", "predictor")
    TIERS_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedCompositeFieldContainer[TierInfo]
    predictor: str
    def __init__(self, tiers: _Optional[_Iterable[_Union[TierInfo, _Mapping]]] = ..., predictor: _Optional[str] = ...) -> None: ...
