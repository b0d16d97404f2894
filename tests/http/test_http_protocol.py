"""OpenAI request bodies become the right qarr.v1.GenerateRequest, refusals name their field, chunks are valid JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from qarr.v1 import common_pb2, router_service_pb2 as pb
from router.http import protocol as p


def body(**fields) -> bytes:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def chat(**fields) -> p.ChatCompletionRequest:
    return p.parse(p.ChatCompletionRequest, body(**fields))


def refused(model: type[p.Common], raw: bytes) -> p.BadRequest:
    with pytest.raises(p.BadRequest) as e:
        p.parse(model, raw)
    return e.value


def test_chat_body_translates_to_a_generate_request():
    """Messages (developer as system, text parts joined), sampling fields, the pin and the hints all arrive."""
    req = chat(
        messages=[{"role": "developer", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "capital of "}, {"type": "text", "text": "France?"}],
                   "name": "ann"},
                  {"role": "assistant", "content": "Paris.", "refusal": None}],
        max_tokens=7, temperature=0, top_p=0.5, top_k=20, seed=42, stop="\n", n=1, user="u1",
    )
    out = p.generate_request(req, True, "bf16", "rid-1", 1500, 0.75)
    assert [(m.role, m.content) for m in out.messages] == [
        ("system", "be brief"), ("user", "capital of France?"), ("assistant", "Paris.")]
    s = out.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.seed, list(s.stop)) == (7, 0.0, 0.5, 20, 42, ["\n"])
    assert s.HasField("temperature")  # 0 is sent, not dropped: greedy
    assert out.routing.tier == "bf16" and out.routing.latency_budget_ms == 1500
    assert out.routing.min_accuracy == pytest.approx(0.75)
    assert out.request_id == "rid-1" and not out.prompt


def test_unset_fields_stay_unset():
    """A bare body sets no sampling field and no hint: the tier's and the policy's defaults apply."""
    out = p.generate_request(chat(), True, "", "r", None, None)
    assert out.sampling == common_pb2.SamplingParams()
    assert out.routing == pb.RoutingHints()


def test_max_completion_tokens_wins_and_completions_default_to_16():
    """max_completion_tokens overrides the older max_tokens; /v1/completions without max_tokens asks for 16 (as OpenAI)."""
    assert chat(max_tokens=5, max_completion_tokens=9).limit() == 9
    assert chat().limit() is None
    completion = p.parse(p.CompletionRequest, b'{"model": "auto", "prompt": ["Once upon"]}')
    out = p.generate_request(completion, False, "", "r", None, None)
    assert out.prompt == "Once upon" and out.sampling.max_tokens == 16 and not out.messages


@pytest.mark.parametrize("extra, param", [
    ({"foo": 1}, "foo"),
    ({"functions": []}, "functions"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls"),
    ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, "stream_options.continuous_usage_stats"),
])
def test_unknown_fields_are_refused_naming_them(extra, param):
    """A field the door does not know is a 400 in OpenAI's own words, naming the field."""
    e = refused(p.ChatCompletionRequest, body(**extra))
    assert e.param == param
    assert e.message == f"Unrecognized request argument supplied: {param}"


@pytest.mark.parametrize("field, default, other", [
    ("logprobs", False, True), ("top_logprobs", 0, 3), ("presence_penalty", 0, 0.5), ("frequency_penalty", 0.0, -1),
    ("logit_bias", {}, {"50256": -100}), ("response_format", {"type": "text"}, {"type": "json_object"}),
    ("tool_choice", "none", "auto"), ("tools", [], [{"type": "function", "function": {"name": "f"}}]),
    ("modalities", ["text"], ["text", "audio"]),
])
def test_output_changing_fields_pass_at_their_default_and_are_refused_otherwise(field, default, other):
    """Fields the tiers cannot honour are accepted only at the value that changes nothing."""
    chat(**{field: default})
    chat(**{field: None})
    e = refused(p.ChatCompletionRequest, body(**{field: other}))
    assert e.param == field and "not supported" in e.message


@pytest.mark.parametrize("field, other", [("echo", True), ("suffix", "end"), ("best_of", 2), ("logprobs", 1)])
def test_legacy_completion_fields_are_refused_unless_default(field, other):
    """/v1/completions refuses echo, suffix, best_of and logprobs beyond their defaults."""
    e = refused(p.CompletionRequest, json.dumps({"model": "auto", "prompt": "x", field: other}).encode())
    assert e.param == field


def test_metadata_fields_are_ignored():
    """user, metadata, store, service_tier, prompt_cache_key, safety_identifier, parallel_tool_calls and
    include_obfuscation are accepted and change nothing."""
    req = chat(user="u", metadata={"k": "v"}, store=False, service_tier="auto", prompt_cache_key="c",
               safety_identifier="s", parallel_tool_calls=True, stream=True,
               stream_options={"include_usage": True, "include_obfuscation": False})
    assert p.generate_request(req, True, "", "r", None, None) == p.generate_request(chat(), True, "", "r", None, None)
    assert req.include_usage


@pytest.mark.parametrize("raw, param, words", [
    (body(n=2), "n", "n must be 1"),
    (body(temperature=2.5), "temperature", "less than or equal to 2"),
    (body(top_p=0), "top_p", "greater than 0"),
    (body(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (body(seed=-1), "seed", "greater than or equal to 0"),
    (body(stop=[""]), "stop", "must not be empty"),
    (body(stop=7), "stop", "a string or a list of strings"),
    (body(stop=["a"] * 17), "stop", "at most 16"),
    (body(min_accuracy=1.5), "min_accuracy", "less than or equal to 1"),
    (body(stream_options={"include_usage": True}), "stream_options", "only be set when stream is true"),
    (body(messages=[]), "messages", "at least 1"),
    (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].role", "'user'"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content", "only text content parts"),
    (body(messages=[{"role": "assistant", "content": None}]), "messages[0].content", "content is required"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model is required"),
])
def test_bad_values_are_refused_naming_the_field(raw, param, words):
    """Every refusal says which field is wrong and why."""
    e = refused(p.ChatCompletionRequest, raw)
    assert e.param == param, e.message
    assert words in e.message


@pytest.mark.parametrize("prompt, words", [
    (["a", "b"], "one prompt per request"), ([[1, 2]], "token ids"), ("", "must not be empty"), ([1, 2], "one prompt"),
])
def test_completion_prompts_are_one_text(prompt, words):
    """/v1/completions takes one text prompt (a string or a one-string list), never token ids or a batch."""
    e = refused(p.CompletionRequest, json.dumps({"model": "auto", "prompt": prompt}).encode())
    assert e.param == "prompt" and words in e.message


@pytest.mark.parametrize("raw, words", [(b"{nope", "not valid JSON"), (b"[1]", "JSON object"), (b"", "not valid JSON")])
def test_bodies_that_are_no_json_object_are_refused(raw, words):
    """Broken JSON and non-objects get a 400 that says so, with no field blamed."""
    e = refused(p.ChatCompletionRequest, raw)
    assert words in e.message and e.param is None


def _events(data: bytes) -> list:
    assert data.endswith(b"\n\n")
    out = []
    for event in data.decode().split("\n\n")[:-1]:
        assert event.startswith("data: ")
        payload = event.removeprefix("data: ")
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@settings(max_examples=200, deadline=None)
@given(st.text(), st.booleans(), st.booleans(), st.booleans())
def test_text_chunks_are_openai_json_for_any_text(text, chat_shape, first, include_usage):
    """Whatever the text (quotes, backslashes, newlines, emoji), each prebuilt chunk is one SSE event whose
    JSON carries exactly that text in OpenAI's chunk shape."""
    fmt = p.chunk_format(chat_shape, "chatcmpl-x", 123, "bf16", include_usage)
    (event,) = _events(fmt.text(text, first))
    choice = event["choices"][0]
    assert event["id"] == "chatcmpl-x" and event["model"] == "bf16" and event["created"] == 123
    assert choice["finish_reason"] is None and choice["index"] == 0
    if chat_shape:
        assert event["object"] == "chat.completion.chunk"
        assert choice["delta"] == ({"role": "assistant", "content": text} if first else {"content": text})
    else:
        assert event["object"] == "text_completion" and choice["text"] == text
    assert ("usage" in event) == include_usage and event.get("usage") is None


def _last(**fields) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        finish_reason=common_pb2.FINISH_REASON_LENGTH, usage=common_pb2.Usage(prompt_tokens=5, completion_tokens=3),
        tier="bf16", model="smol", quantization="bf16", routing_reason="pinned", attempts=1, **fields)


def test_stream_end_carries_finish_reason_qarr_usage_then_done():
    """The finish chunk carries finish_reason and `qarr`; with include_usage a usage chunk (no choices) follows; then [DONE]."""
    qarr = {"tier": "bf16", "model": "smol", "quantization": "bf16", "routing_reason": "pinned", "attempts": 1}
    done, tail, end = _events(p.chunk_format(True, "c", 1, "bf16", True).finish(_last()))
    assert done["choices"][0]["finish_reason"] == "length" and done["choices"][0]["delta"] == {} and done["qarr"] == qarr
    assert done["usage"] is None
    assert tail["choices"] == [] and tail["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert tail["qarr"] == qarr and end == "[DONE]"
    done, end = _events(p.chunk_format(False, "c", 1, "bf16", False).finish(_last()))
    assert done["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
    assert "usage" not in done and end == "[DONE]"
