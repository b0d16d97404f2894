"""The load generator: its own process, raw-bytes gRPC calls, driven by JSON lines.

stdin, one command a line:
  {"cmd": "closed", "target", "method", "concurrency", "requests", "max_tokens", "prompt", "deadline_s",
   "report_open", "ramp_s", "channels"}
  {"cmd": "open", "target", "method", "items": [{"at_s", "prompt"|"messages", "max_tokens", "tier",
   "latency_budget_ms", "min_accuracy"}], "deadline_s"}
  {"cmd": "closed_http", "url": "http://HOST:PORT/v1", "model", "concurrency", "requests", "max_tokens", "prompt",
   "deadline_s"}   (streaming POST /v1/chat/completions over keep-alive HTTP/1.1 connections)
  {"cmd": "quit"}
stdout: {"event": "open", ...} lines while running (closed with report_open), then one result line.

Calls go through `channel.unary_stream(method)` with no serializers: the request is
encoded once and responses are not decoded in closed loops (the last message is told
apart by its first byte, 0x10), so the client spends as little CPU as it can.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from qarr.v1 import common_pb2, router_service_pb2 as pb

LAST_MESSAGE_TAG = 0x10
CHANNEL_OPTIONS = (("grpc.enable_retries", 0), ("grpc.max_receive_message_length", 64 << 20))


def emit(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def build_request(item: dict) -> bytes:
    sampling = common_pb2.SamplingParams(max_tokens=int(item.get("max_tokens", 16)), temperature=0.0)
    routing = pb.RoutingHints(tier=item.get("tier", ""), latency_budget_ms=int(item.get("latency_budget_ms", 0)))
    if item.get("min_accuracy") is not None:
        routing.min_accuracy = float(item["min_accuracy"])
    req = pb.GenerateRequest(sampling=sampling, routing=routing)
    if item.get("messages"):
        req.messages.extend(common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in item["messages"])
    else:
        req.prompt = item.get("prompt") or "Say something."
    return req.SerializeToString()


class Channels:
    def __init__(self) -> None:
        self._channels: dict[tuple[str, int], grpc.aio.Channel] = {}

    async def get(self, target: str, i: int = 0) -> grpc.aio.Channel:
        """Channel `i` to `target`; channels other than 0 have their own TCP connection (a local subchannel
        pool), so a server with several processes on one port (SO_REUSEPORT) sees several connections."""
        ch = self._channels.get((target, i))
        if ch is None:
            options = CHANNEL_OPTIONS + ((("grpc.use_local_subchannel_pool", 1),) if i else ())
            ch = grpc.aio.insecure_channel(target, options=options)
            await asyncio.wait_for(ch.channel_ready(), 10)
            self._channels[(target, i)] = ch
        return ch

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()


async def closed(channels: Channels, cmd: dict) -> dict:
    n_channels = max(1, int(cmd.get("channels", 1)))
    call_fns = [(await channels.get(cmd["target"], i)).unary_stream(cmd["method"]) for i in range(n_channels)]
    payload = build_request({"prompt": cmd.get("prompt"), "max_tokens": cmd["max_tokens"]})
    n_total = int(cmd["requests"])
    concurrency = max(1, min(int(cmd["concurrency"]), n_total))
    deadline_s = float(cmd.get("deadline_s", 300))
    ramp_s = float(cmd.get("ramp_s", 0.0))
    report_open = bool(cmd.get("report_open"))
    ttft: list[float] = []
    total: list[float] = []
    errors: dict[str, int] = {}
    chunks = 0
    issued = 0
    open_now = 0
    open_reported = False
    stop_at = time.perf_counter() + deadline_s

    async def one(call_fn) -> None:
        nonlocal chunks, open_now, open_reported
        t0 = time.perf_counter()
        first = None
        is_open = False
        n = 0
        call = call_fn(payload, timeout=max(1.0, stop_at - t0))
        try:
            async for chunk in call:
                n += 1
                if first is None:
                    first = time.perf_counter() - t0
                    if report_open:
                        open_now += 1
                        is_open = True
                        if not open_reported and open_now >= concurrency:
                            open_reported = True
                            emit({"event": "open", "open": open_now, "t": time.time()})
            total.append(time.perf_counter() - t0)
            ttft.append(first if first is not None else total[-1])
        except grpc.aio.AioRpcError as e:
            errors[e.code().name] = errors.get(e.code().name, 0) + 1
        finally:
            chunks += n
            if is_open:
                open_now -= 1

    async def worker(i: int) -> None:
        nonlocal issued
        if ramp_s:
            await asyncio.sleep(ramp_s * i / concurrency)
        while issued < n_total and time.perf_counter() < stop_at:
            issued += 1
            await one(call_fns[i % n_channels])

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    return {"ttft": ttft, "total": total, "errors": errors, "chunks": chunks, "wall_s": wall,
            "completed": len(total), "open_reported": open_reported}


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that POSTs a prebuilt streaming request and reads the SSE reply.

    A minimal client on purpose (no library between the measurement and the socket): it reads the
    status line and headers, then the chunked body, and notes when the first chunk carrying text
    arrives (TTFT) and whether `data: [DONE]` came."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, payload: bytes) -> tuple[float | None, int, bool]:
        """(seconds to the first text chunk or None, HTTP status, saw [DONE])."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        t0 = time.perf_counter()
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        first, done = None, False
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")  # no trailers: the blank line
                    break
                data = await self.reader.readexactly(size + 2)
                if first is None and TEXT_MARK in data and EMPTY_TEXT not in data:
                    first = time.perf_counter() - t0
                if DONE_MARK in data:
                    done = True
        else:
            length = 0
            for line in lower.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await self.reader.readexactly(length)
        if b"connection: close" in lower:
            await self.close()
        return first, status, done

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


TEXT_MARK, EMPTY_TEXT, DONE_MARK = b'"content":"', b'"content":""', b"data: [DONE]"


def http_request(url: str, model: str, prompt: str, max_tokens: int) -> tuple[str, int, bytes]:
    """(host, port, the raw bytes of a streaming POST /v1/chat/completions)."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True}).encode()
    head = (f"POST /{path}/chat/completions HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer unused\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return host, int(port), head + body


async def closed_http(cmd: dict) -> dict:
    """Like `closed`, over HTTP: {"cmd": "closed_http", "url": "http://H:P/v1", "model", ...}."""
    host, port, payload = http_request(cmd["url"], cmd.get("model", "auto"), cmd.get("prompt") or "Say something.",
                                       int(cmd["max_tokens"]))
    n_total = int(cmd["requests"])
    concurrency = max(1, min(int(cmd["concurrency"]), n_total))
    stop_at = time.perf_counter() + float(cmd.get("deadline_s", 300))
    ttft: list[float] = []
    total: list[float] = []
    errors: dict[str, int] = {}
    issued = 0

    async def worker() -> None:
        nonlocal issued
        conn = HttpConnection(host, port)
        try:
            while issued < n_total and time.perf_counter() < stop_at:
                issued += 1
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(max(1.0, stop_at - t0)):
                        first, status, done = await conn.request(payload)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    await conn.close()
                    continue
                if status != 200 or not done:
                    key = f"HTTP_{status}" if status != 200 else "NO_DONE"
                    errors[key] = errors.get(key, 0) + 1
                    continue
                total.append(time.perf_counter() - t0)
                ttft.append(first if first is not None else total[-1])
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"ttft": ttft, "total": total, "errors": errors, "wall_s": time.perf_counter() - started,
            "completed": len(total)}


async def open_loop(channels: Channels, cmd: dict) -> dict:
    channel = await channels.get(cmd["target"])
    call_fn = channel.unary_stream(cmd["method"])
    deadline_s = float(cmd.get("deadline_s", 600))
    items = cmd["items"]
    results: list[dict] = [{} for _ in items]
    started = time.perf_counter()
    stop_at = started + deadline_s

    async def one(i: int, item: dict) -> None:
        delay = started + float(item.get("at_s", 0)) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = build_request(item)
        t0 = time.perf_counter()
        r = results[i]
        r["sent_s"] = t0 - started
        text: list[str] = []
        call = call_fn(payload, timeout=max(1.0, stop_at - t0))
        try:
            async for chunk in call:
                msg = pb.GenerateResponse.FromString(chunk)
                if msg.text:
                    if "ttft_s" not in r:
                        r["ttft_s"] = time.perf_counter() - t0
                    text.append(msg.text)
                if msg.finish_reason:
                    r.update(tier=msg.tier, finish=int(msg.finish_reason), prompt_tokens=msg.usage.prompt_tokens,
                             completion_tokens=msg.usage.completion_tokens, routing_reason=msg.routing_reason)
            r["total_s"] = time.perf_counter() - t0
            r["done_s"] = time.perf_counter() - started
        except grpc.aio.AioRpcError as e:
            r["error"] = e.code().name
            r["error_details"] = (e.details() or "")[:200]
        r["text"] = "".join(text)

    await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    return {"results": results, "wall_s": time.perf_counter() - started}


async def main() -> None:
    loop = asyncio.get_running_loop()
    channels = Channels()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "quit":
                    break
                if cmd["cmd"] == "closed":
                    emit(await closed(channels, cmd))
                elif cmd["cmd"] == "closed_http":
                    emit(await closed_http(cmd))
                elif cmd["cmd"] == "open":
                    emit(await open_loop(channels, cmd))
                else:
                    emit({"error": f"unknown command {cmd['cmd']!r}"})
            except Exception as e:  # report and keep serving commands
                emit({"error": f"{type(e).__name__}: {e}"})
    finally:
        await channels.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
