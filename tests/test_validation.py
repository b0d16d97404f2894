"""Request validation in the tier: every bad value is RequestRejected naming its field."""

import pytest
from hypothesis import given, strategies as st

from qarr.v1 import common_pb2
from tier_server.engine import ChatTurn, RequestRejected
from tier_server.validation import DEFAULT_MAX_TOKENS, prompt_of, sampling_of


def params(**kw):
    return common_pb2.SamplingParams(**kw)


@given(
    max_tokens=st.integers(1, 500),
    temperature=st.floats(0, 2),
    top_p=st.floats(0.01, 1),
    top_k=st.one_of(st.just(-1), st.integers(1, 1000)),
)
def test_values_in_range_are_accepted_unchanged(max_tokens, temperature, top_p, top_k):
    """Any in-range sampling value passes through as given."""
    s = sampling_of(params(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k), 10, 1024)
    assert (s.max_tokens, s.top_k) == (max_tokens, top_k)
    assert s.temperature == pytest.approx(temperature, rel=1e-6) and s.top_p == pytest.approx(top_p, rel=1e-6)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": -3}, "top_k"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(kw, field):
    """Each invalid sampling value raises RequestRejected whose message names the field."""
    with pytest.raises(RequestRejected, match=field):
        sampling_of(params(**kw), 10, 1024)


def test_prompt_at_or_over_the_context_length_is_rejected():
    """A prompt of max_model_len tokens or more cannot be served."""
    with pytest.raises(RequestRejected, match="longer than this tier's max_model_len of 100"):
        sampling_of(params(), 100, 100)


def test_prompt_plus_max_tokens_over_the_context_length_is_rejected():
    """An explicit max_tokens that cannot fit after the prompt is an error, not a silent cut."""
    with pytest.raises(RequestRejected, match=r"\+ sampling.max_tokens \(50\) exceeds"):
        sampling_of(params(max_tokens=50), 60, 100)


def test_unset_max_tokens_defaults_within_the_room_left():
    """Without max_tokens the default is capped by what the context has left."""
    assert sampling_of(params(), 10, 4096).max_tokens == DEFAULT_MAX_TOKENS
    assert sampling_of(params(), 90, 100).max_tokens == 10


def test_exactly_one_of_prompt_and_messages_is_required():
    """Neither, or both, is an error; messages become chat turns."""
    msg = common_pb2.ChatMessage(role="user", content="hi")
    with pytest.raises(RequestRejected, match="required"):
        prompt_of("", [])
    with pytest.raises(RequestRejected, match="not both"):
        prompt_of("x", [msg])
    assert prompt_of("", [msg]) == (ChatTurn("user", "hi"),)


def test_unknown_roles_are_rejected():
    """Roles other than system/user/assistant name the offending message."""
    with pytest.raises(RequestRejected, match=r"messages\[0\].role"):
        prompt_of("", [common_pb2.ChatMessage(role="wizard", content="hi")])
