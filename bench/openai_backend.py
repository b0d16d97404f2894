"""An instant OpenAI-compatible backend for `python -m bench http`: the upstream LiteLLM proxies to.

    python -m bench.openai_backend --port 8101

POST /v1/chat/completions streams `max_tokens` one-word chunks at once (like the fake tier's
instant engine: one message per token, no delay), then the finish chunk, a usage chunk and
`data: [DONE]`; without `stream` it answers in one JSON body. GET /health says ok. A raw ASGI
app on uvicorn (httptools, uvloop) so the backend itself costs as little as it can.
"""

from __future__ import annotations

import argparse
import json
import time

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _chunk(head: dict, choice: dict, **extra) -> bytes:
    return b"data: " + json.dumps({**head, "choices": [choice] if choice else [], **extra}).encode() + b"\n\n"


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if scope["method"] == "GET" and path in ("/health", "/v1/models"):
        body = b'{"status":"ok"}' if path == "/health" else json.dumps(
            {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["method"] != "POST" or not path.endswith("/chat/completions"):
        await send({"type": "http.response.start", "status": 404, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": b'{"error":{"message":"not found"}}'})
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(raw)
    n = int(request.get("max_completion_tokens") or request.get("max_tokens") or 16)
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": request.get("model", "fake")}
    usage = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
    if not request.get("stream"):
        text = "".join(WORDS[i % len(WORDS)] + " " for i in range(n))
        body = json.dumps({**head, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for i in range(n):
        delta = {"role": "assistant", "content": WORDS[i % len(WORDS)] + " "} if i == 0 else {"content": WORDS[i % len(WORDS)] + " "}
        await send({"type": "http.response.body", "body": _chunk(head, {"index": 0, "delta": delta, "finish_reason": None}),
                    "more_body": True})
    tail = _chunk(head, {"index": 0, "delta": {}, "finish_reason": "length"}) + _chunk(head, {}, usage=usage)
    await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, http="httptools", loop="uvloop", lifespan="off", ws="none",
                access_log=False, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
