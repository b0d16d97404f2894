"""Request checks in the tier: every bad value is RequestRejected naming its field, with a bounded message."""

import math

import pytest
from hypothesis import given, strategies as st

from mesh.config import DEFAULT_MAX_TOKENS
from qarr.v1 import common_pb2, tier_service_pb2 as tpb
from tests.fuzz import generate_requests
from tier_server.engine import ChatTurn, RequestRejected
from tier_server.limits import Limits
from tier_server.validation import check_request, fit_context, parse, sampling_of

LIMITS = Limits()


def params(**kw):
    return common_pb2.SamplingParams(**kw)


def check(**kw):
    request = tpb.TierServiceGenerateRequest(**kw)
    return check_request(request, LIMITS, request.ByteSize())


@given(
    max_tokens=st.integers(1, 500),
    temperature=st.one_of(st.just(0.0), st.floats(0.01, 2)),
    top_p=st.floats(0.01, 1),
    top_k=st.one_of(st.just(-1), st.integers(1, 1000)),
    seed=st.integers(0, 2**63 - 1),
)
def test_values_in_range_are_accepted_unchanged(max_tokens, temperature, top_p, top_k, seed):
    """Any in-range sampling value passes through as given."""
    s = sampling_of(params(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed), LIMITS)
    assert (s.max_tokens, s.top_k, s.seed) == (max_tokens, top_k, seed)
    assert s.temperature == pytest.approx(temperature, rel=1e-6) and s.top_p == pytest.approx(top_p, rel=1e-6)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": -math.inf}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_p": -math.inf}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": -3}, "top_k"),
        ({"seed": 2**63}, "seed"),
        ({"seed": 2**64 - 1}, "seed"),
        ({"stop": [""]}, r"stop\[0\]"),
        ({"stop": ["x"] * 17}, "at most 16"),
        ({"stop": ["ok", "é" * 129]}, r"stop\[1\] is longer than 256 bytes"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(kw, field):
    """Each invalid sampling value (NaN and infinities included) raises RequestRejected naming the field."""
    with pytest.raises(RequestRejected, match=field):
        sampling_of(params(**kw), LIMITS)


def test_subnormal_and_tiny_temperatures_act_as_the_engines_floor():
    """A positive temperature below 0.01 (a subnormal too) is served as 0.01, vLLM's floor; 0 stays greedy."""
    assert sampling_of(params(temperature=1e-45), LIMITS).temperature == 0.01
    assert sampling_of(params(temperature=0.0), LIMITS).temperature == 0.0
    assert sampling_of(params(top_p=1e-45), LIMITS).top_p > 0


def test_prompt_at_or_over_the_context_length_is_rejected():
    """A prompt of max_model_len tokens or more cannot be served."""
    with pytest.raises(RequestRejected, match="longer than this tier's max_model_len of 100"):
        fit_context(sampling_of(params(), LIMITS), 100, 100)


def test_prompt_plus_max_tokens_over_the_context_length_is_rejected():
    """An explicit max_tokens that cannot fit after the prompt is an error, not a silent cut."""
    with pytest.raises(RequestRejected, match=r"\+ sampling.max_tokens \(50\) exceeds"):
        fit_context(sampling_of(params(max_tokens=50), LIMITS), 60, 100)


def test_unset_max_tokens_takes_the_default_shared_with_the_router():
    """Without max_tokens the tier uses mesh.config's default: 256, capped by the room the prompt leaves."""
    assert fit_context(sampling_of(params(), LIMITS), 10, 4096).max_tokens == DEFAULT_MAX_TOKENS
    assert fit_context(sampling_of(params(), LIMITS), 1948, 2048).max_tokens == 100


def test_exactly_one_of_prompt_and_messages_is_required():
    """Neither, or both, is an error; messages become chat turns."""
    msg = common_pb2.ChatMessage(role="user", content="hi")
    with pytest.raises(RequestRejected, match="required"):
        check()
    with pytest.raises(RequestRejected, match="not both"):
        check(prompt="x", messages=[msg])
    assert check(messages=[msg]).prompt == (ChatTurn("user", "hi"),)


def test_unknown_roles_are_rejected_quoting_only_the_start_of_the_role():
    """A role other than system/user/assistant names the message; a huge role is not echoed whole."""
    with pytest.raises(RequestRejected, match=r"messages\[0\].role") as err:
        check(messages=[common_pb2.ChatMessage(role="wizard" * 10_000, content="hi")])
    assert len(str(err.value)) < 200


def test_prompt_size_and_message_count_are_bounded_before_tokenizing():
    """Prompts over max_prompt_bytes (UTF-8 bytes) and more than max_messages messages are refused."""
    limits = Limits(max_prompt_bytes=1000, max_messages=3)
    big = tpb.TierServiceGenerateRequest(prompt="é" * 501)  # 1002 bytes
    with pytest.raises(RequestRejected, match="prompt is 1002 bytes; this tier takes at most 1000"):
        check_request(big, limits, big.ByteSize())
    chat = tpb.TierServiceGenerateRequest(messages=[common_pb2.ChatMessage(role="user", content="a" * 400)] * 3)
    with pytest.raises(RequestRejected, match="prompt is 1200 bytes"):
        check_request(chat, limits, chat.ByteSize())
    many = tpb.TierServiceGenerateRequest(messages=[common_pb2.ChatMessage(role="user", content="a")] * 4)
    with pytest.raises(RequestRejected, match="messages has 4 entries; this tier takes at most 3"):
        check_request(many, limits, many.ByteSize())


def test_the_default_prompt_bound_scales_with_the_context():
    """Limits.for_tier allows 64 bytes a token of context unless configured."""
    assert Limits.for_tier(2048).max_prompt_bytes == 131072
    assert Limits.for_tier(2048, max_prompt_bytes=10).max_prompt_bytes == 10


@pytest.mark.parametrize("request_id", ["x" * 129, "line\nbreak", "tab\there", "nul\x00", "\U000e0001" * 40])
def test_request_ids_must_be_short_and_printable(request_id):
    """request_id is at most 128 printable characters, and the message does not echo it whole."""
    with pytest.raises(RequestRejected, match="request_id") as err:
        check(prompt="hi", request_id=request_id)
    assert len(str(err.value)) < 200


def test_bytes_that_are_no_request_are_rejected():
    """Random bytes that do not decode raise RequestRejected, not protobuf's DecodeError."""
    with pytest.raises(RequestRejected, match="not a valid qarr.v1.TierServiceGenerateRequest"):
        parse(b"\xff\xff\xff\xff\x0f")


@given(generate_requests(tpb.TierServiceGenerateRequest))
def test_any_request_is_checked_or_rejected_with_a_short_message(request):
    """For any request the checks either pass or raise RequestRejected with a message under 300 characters."""
    raw = request.SerializeToString()
    try:
        check_request(parse(raw), LIMITS, len(raw))
    except RequestRejected as e:
        assert len(str(e)) < 300


def test_a_printable_unicode_request_id_is_accepted():
    """Ids in any script pass; only length and control characters are refused."""
    assert check(prompt="hi", request_id="запрос-7").request_id == "запрос-7"
