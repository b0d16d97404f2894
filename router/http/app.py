"""The OpenAI-compatible HTTP door: an ASGI app over the router core (router/core.py).

    POST /v1/chat/completions, POST /v1/completions      stream (SSE) or one JSON answer
    GET  /v1/models, /v1/models/{id}                     `auto` (and the default name), then every tier
    GET  /health, /ready                                 the router's gRPC health; Router.ready()

A request is checked (protocol.py) and translated into a qarr.v1.GenerateRequest;
the core routes it exactly like a gRPC call (same admission limits, breakers,
retries, metrics, log line and trace). The door answers once the first chunk is
in: a refusal before it becomes an HTTP status (errors.py, one table); after it,
a stream can only end with an error event. A client that goes away cancels the
work, which closes the core's stream and so cancels the tier call (the engine
aborts the request). Per chunk the door decodes the text and writes prebuilt
bytes around its JSON string; nothing is logged per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mesh.config import HttpConfig
from qarr.v1 import router_service_pb2 as pb
from router.core import LAST_MESSAGE_TAG, Call, Router
from router.errors import RouteError
from router.http import protocol as p
from router.http.errors import HttpError, bad_request, deadline_passed, http_error, unauthenticated, unknown_model

log = logging.getLogger("qarr.router.http")

AUTO = "auto"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JSON = (b"content-type", b"application/json")
SSE = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
TRACE_HEADERS = ("traceparent", "tracestate")
decode = pb.GenerateResponse.FromString


class Door:
    """The endpoints. `serving()`: the router's health as gRPC reports it. `caller_of(authorization)`: the caller
    an `Authorization` header value names, None for a missing or wrong token (the gRPC door's token check, e.g.
    a TokenVerifier's `caller`); no `caller_of`: auth is off."""

    def __init__(self, router: Router, config: HttpConfig, serving: Callable[[], bool],
                 caller_of: Callable[[str | None], str | None] | None = None) -> None:
        self.router = router
        self.config = config
        self.serving = serving
        self.caller_of = caller_of
        self.created = int(time.time())

    # ------------------------------------------------------------ completions

    async def chat(self, request: Request) -> Response | Generation:
        return await self._complete(request, p.ChatCompletionRequest, chat=True)

    async def completions(self, request: Request) -> Response | Generation:
        return await self._complete(request, p.CompletionRequest, chat=False)

    async def _complete(self, request: Request, model: type[p.Common], chat: bool) -> Response | Generation:
        try:
            caller = self._check_token(request)
            body = p.parse(model, await self._body(request))
            raw, request_id, deadline = self._translate(body, request, chat)
        except HttpError as e:
            return error_response(e)
        except p.BadRequest as e:
            return error_response(bad_request(e.message, e.param))
        headers = request.headers
        trace = lambda: [(k, headers[k]) for k in TRACE_HEADERS if k in headers]  # noqa: E731  read only when tracing
        return Generation(self.router, raw, request_id, deadline, trace, caller, chat, bool(body.stream), body.include_usage)

    def _check_token(self, request: Request) -> str:
        """The caller ('' when auth is off); 401 for a missing or wrong token."""
        if self.caller_of is None:
            return ""
        caller = self.caller_of(request.headers.get("authorization"))
        if caller is None:
            raise unauthenticated()
        return caller

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        too_big = HttpError(413, f"request body is larger than {limit} bytes", "request_too_large")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_big
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
        except ClientDisconnect:
            raise HttpError(400, "the client went away while sending the body", "client_disconnected") from None
        return b"".join(chunks)

    def _translate(self, body: p.Common, request: Request, chat: bool) -> tuple[bytes, str, float | None]:
        """The GenerateRequest bytes, the request id and the deadline (event loop time) of one HTTP request."""
        headers = request.headers
        pin = self._pin(body.model)
        request_id = headers.get("x-request-id")
        if request_id is None:
            request_id = uuid.uuid4().hex
        elif not REQUEST_ID.fullmatch(request_id):
            raise bad_request("x-request-id must be 1-128 characters of letters, digits and . _ : -", "x-request-id")
        budget = body.latency_budget_ms
        if budget is None:
            budget = _header_number(headers, "x-qarr-latency-budget-ms", int, 0, 2**32 - 1)
        accuracy = body.min_accuracy
        if accuracy is None:
            accuracy = _header_number(headers, "x-qarr-min-accuracy", float, 0.0, 1.0)
        req = p.generate_request(body, chat, pin, request_id, budget, accuracy)
        timeout_ms = _header_number(headers, "x-qarr-timeout-ms", float, 1.0, 86_400_000.0)
        timeout_s = timeout_ms / 1000 if timeout_ms is not None else self.config.request_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s if timeout_s is not None else None
        return req.SerializeToString(), request_id, deadline

    def _pin(self, model: str) -> str:
        """'' routes; a tier name pins; anything else is 404."""
        if model == AUTO or model == self.config.default_model:
            return ""
        names = [t.name for t in self.router.config.tiers]
        if model in names:
            return model
        raise unknown_model(model, self._routing_names() + names)

    def _routing_names(self) -> list[str]:
        return [AUTO] if self.config.default_model == AUTO else [AUTO, self.config.default_model]

    # ------------------------------------------------------------ models, health

    async def models(self, request: Request) -> Response:
        try:
            self._check_token(request)
        except HttpError as e:
            return error_response(e)
        return json_response({"object": "list", "data": self._models()})

    async def model(self, request: Request) -> Response:
        try:
            self._check_token(request)
        except HttpError as e:
            return error_response(e)
        name = request.path_params["model"]
        for entry in self._models():
            if entry["id"] == name:
                return json_response(entry)
        return error_response(unknown_model(name, [m["id"] for m in self._models()]))

    def _models(self) -> list[dict]:
        routes = [{"id": name, "object": "model", "created": self.created, "owned_by": "qarr",
                   "qarr": {"routes": True}} for name in self._routing_names()]
        tiers = [
            {"id": t.name, "object": "model", "created": self.created, "owned_by": "qarr",
             "qarr": {"routes": False, "model": t.model, "quantization": t.quantization,
                      "max_model_len": t.max_model_len, "serving": t.serving, "breaker": t.breaker.name.lower(),
                      "in_flight": t.in_flight, "replicas": len(t.replicas),
                      "routable": t.profile.routable if t.profile is not None else None}}
            for t in self.router.tiers()
        ]
        return routes + tiers

    async def health(self, request: Request) -> Response:
        serving = self.serving()
        return json_response({"status": "SERVING" if serving else "NOT_SERVING"}, 200 if serving else 503)

    async def ready(self, request: Request) -> Response:
        ready = self.serving() and self.router.ready()
        return json_response({"ready": ready}, 200 if ready else 503)


class Generation:
    """One completion on its way through the core, as an ASGI response: a stream of SSE chunks, or one JSON
    answer. The work runs in its own task beside a watch on the connection; a disconnect cancels the work."""

    __slots__ = ("router", "raw", "request_id", "deadline", "trace", "caller", "chat", "stream", "include_usage", "started")

    def __init__(self, router: Router, raw: bytes, request_id: str, deadline: float | None, trace, caller: str,
                 chat: bool, stream: bool, include_usage: bool) -> None:
        self.router = router
        self.raw = raw
        self.request_id = request_id
        self.deadline = deadline
        self.trace = trace
        self.caller = caller  # the token's caller: the core's per-caller stream limit and log line
        self.chat = chat
        self.stream = stream
        self.include_usage = include_usage
        self.started = False  # response headers sent

    async def __call__(self, scope, receive, send) -> None:
        loop = asyncio.get_running_loop()
        work = loop.create_task(self._run(send))
        gone = loop.create_task(_client_gone(receive))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()  # the client went away (or the server is stopping): the core cancels the tier call
                await asyncio.wait((work,))
        if not work.cancelled() and work.exception() is not None:
            raise work.exception()

    def _time_remaining(self) -> float | None:
        return self.deadline - asyncio.get_running_loop().time() if self.deadline is not None else None

    async def _run(self, send) -> None:
        call = Call(self._time_remaining, self.trace, caller=self.caller)
        chunks = self.router.route(self.raw, call)
        try:
            try:
                async with asyncio.timeout_at(self.deadline):
                    if self.stream:
                        await self._stream(chunks, call, send)
                    else:
                        await self._answer(chunks, send)
                return
            except RouteError as e:
                error = http_error(e)
            except TimeoutError:
                error = deadline_passed()
            except Exception:
                log.exception("HTTP door: request %s failed", self.request_id)
                error = HttpError(500, "internal error in the router's HTTP door", "internal")
            if self.started:
                await send({"type": "http.response.body", "body": error.event() + p.DONE, "more_body": False})
            else:
                await send_error(send, error, self.request_id)
        finally:
            await chunks.aclose()

    def _headers(self, call: Call) -> list[tuple[bytes, bytes]]:
        """Who serves the stream, known once the tier answered: the tier's model and quantization as configured."""
        spec = next((t for t in self.router.config.tiers if t.name == call.tier), None)
        return [
            (b"x-request-id", self.request_id.encode()),
            (b"x-qarr-tier", _ascii(call.tier)),
            (b"x-qarr-model", _ascii(spec.model if spec else "")),
            (b"x-qarr-quantization", _ascii(spec.quantization if spec else "")),
            (b"x-qarr-routing-reason", _ascii(call.routing_reason)),
            (b"x-qarr-attempts", str(call.attempts).encode()),
            (b"x-qarr-replica", _ascii(call.replica)),
        ]

    async def _stream(self, chunks, call: Call, send) -> None:
        fmt = None
        last = None
        async for chunk in chunks:
            if chunk[0] == LAST_MESSAGE_TAG:
                last = chunk  # the core ends right after it
                continue
            text = decode(chunk).text
            if fmt is None:  # the first chunk: the tier is known, so headers go out now
                fmt = self._start_stream(call)
                await send({"type": "http.response.start", "status": 200, "headers": [*SSE, *self._headers(call)]})
                self.started = True
                body = fmt.text(text, first=True)
            else:
                body = fmt.text(text)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if fmt is None:  # no text at all (e.g. a stop at once)
            fmt = self._start_stream(call)
            await send({"type": "http.response.start", "status": 200, "headers": [*SSE, *self._headers(call)]})
            self.started = True
        await send({"type": "http.response.body", "body": fmt.finish(decode(last)), "more_body": False})

    def _start_stream(self, call: Call) -> p.ChunkFormat:
        cid = ("chatcmpl-" if self.chat else "cmpl-") + self.request_id
        return p.chunk_format(self.chat, cid, int(time.time()), call.tier, self.include_usage)

    async def _answer(self, chunks, send) -> None:
        texts = []
        last = None
        async for chunk in chunks:
            if chunk[0] == LAST_MESSAGE_TAG:
                last = decode(chunk)
            else:
                texts.append(decode(chunk).text)
        cid = ("chatcmpl-" if self.chat else "cmpl-") + self.request_id
        shape = p.chat_response if self.chat else p.completion_response
        body = p.dumps(shape(cid, int(time.time()), "".join(texts), last))
        headers = [
            JSON, (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self.request_id.encode()),
            (b"x-qarr-tier", _ascii(last.tier)),
            (b"x-qarr-model", _ascii(last.model)),
            (b"x-qarr-quantization", _ascii(last.quantization)),
            (b"x-qarr-routing-reason", _ascii(last.routing_reason)),
            (b"x-qarr-attempts", str(last.attempts).encode()),
        ]
        self.started = True
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _client_gone(receive) -> None:
    """Returns when the client disconnects (or the response is complete: uvicorn says so the same way)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _ascii(value: str) -> bytes:
    return value.encode("ascii", "replace")


def _header_number(headers, name: str, kind: type, low: float, high: float):
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        raise bad_request(f"header {name} must be a number, got {value[:32]!r}", name) from None
    if not (low <= number <= high):  # NaN fails too
        raise bad_request(f"header {name} must be within [{low:g}, {high:g}], got {value[:32]!r}", name)
    return number


async def send_error(send, error: HttpError, request_id: str | None = None) -> None:
    body = error.body()
    headers = [JSON, (b"content-length", str(len(body)).encode()), *error.headers]
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_response(error: HttpError) -> Response:
    return Response(error.body(), error.status, {k.decode(): v.decode() for k, v in error.headers},
                    media_type="application/json")


def json_response(content, status: int = 200) -> Response:
    return Response(p.dumps(content), status, media_type="application/json")


def build_app(door: Door) -> Starlette:
    async def http_exception(request: Request, exc: HTTPException) -> Response:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(HttpError(exc.status_code, message, exc.detail.lower().replace(" ", "_")))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("HTTP door: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(HttpError(500, "internal error in the router's HTTP door", "internal"))

    routes = [
        Route("/v1/chat/completions", door.chat, methods=["POST"]),
        Route("/v1/completions", door.completions, methods=["POST"]),
        Route("/v1/models", door.models, methods=["GET"]),
        Route("/v1/models/{model:path}", door.model, methods=["GET"]),
        Route("/health", door.health, methods=["GET"]),
        Route("/ready", door.ready, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_exception, Exception: unexpected})
