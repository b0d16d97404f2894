"""Resumable batch runner: JSONL prompts in, one JSONL result line per prompt out.

    summary = run_batch("prompts.jsonl", "results.jsonl", concurrency=16)

Each input line is a JSON object with an `id` (string or integer; the line
number when absent), exactly one of `prompt` and `messages`, and optionally the
sampling fields (max_tokens, temperature, top_p, top_k, seed, stop), the routing
fields (tier, latency_budget_ms, min_accuracy) and `metadata` (copied to the
result as it is). A line that is not such an object is reported with its line
number and skipped.

Results are appended and flushed one line at a time as each request finishes,
so a crash loses only the requests in flight. A re-run reads the output first
and skips every id it already holds (and, with `retry_errors`, re-sends those
whose result was an error), so nothing is paid for twice. A torn last line,
as a kill can leave, is cut off before appending.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from clients._convert import to_completion
from clients.client import DEFAULT_TIMEOUT_S, AsyncClient
from clients.errors import QarrError

_INT_FIELDS = ("max_tokens", "top_k", "seed", "latency_budget_ms")
_FLOAT_FIELDS = ("temperature", "top_p", "min_accuracy")
OPTION_FIELDS = (*_INT_FIELDS, *_FLOAT_FIELDS, "stop", "tier")
FIELDS = frozenset(("id", "prompt", "messages", "metadata", *OPTION_FIELDS))


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One valid input line."""

    id: str
    line: int
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class BadLine:
    """An input line that was skipped, and why."""

    line: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


@dataclass(slots=True)
class BatchSummary:
    """What one run did. Counts cover this run; `already_done` were skipped from earlier runs."""

    input_items: int = 0
    already_done: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    tiers: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    output: str = ""

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def remaining(self) -> int:
        return self.input_items - self.already_done - self.finished

    def latency_ms(self, q: float) -> float | None:
        """Nearest-rank percentile (0 < q <= 100) of this run's request latencies."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    def format(self) -> str:
        rate = self.finished / self.wall_s if self.wall_s > 0 else 0.0
        head = "interrupted" if self.interrupted else "done"
        lines = [
            f"batch {head}: {self.finished} results written to {self.output} in {self.wall_s:.1f} s ({rate:.1f}/s); "
            f"{self.already_done} already done, {self.remaining} left, {len(self.bad_lines)} bad lines",
            f"  ok {self.succeeded}, errors {self.failed}"
            + (" (" + ", ".join(f"{k} {v}" for k, v in self.errors.most_common()) + ")" if self.errors else ""),
        ]
        if self.tiers:
            lines.append(
                "  tiers: " + ", ".join(f"{t or '?'} {n} ({n / self.finished:.0%})" for t, n in self.tiers.most_common())
            )
        if self.latencies_ms:
            lines.append(f"  latency p50 {self.latency_ms(50):.0f} ms, p95 {self.latency_ms(95):.0f} ms")
        lines.append(f"  tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion")
        return "\n".join(lines)


def parse_line(text: str, line: int, defaults: dict[str, Any] | None = None) -> BatchItem:
    """One JSONL line to a BatchItem; raises ValueError saying what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    raw_id = obj.get("id", line)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raise ValueError("id must be a non-empty string or an integer")
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        raise ValueError("set exactly one of prompt and messages")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise ValueError("prompt must be a non-empty string")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {role, content} objects")
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise ValueError(f"messages[{i}] must be an object with string role and content")
        messages = tuple({"role": m["role"], "content": m["content"]} for m in messages)
    options = dict(defaults or {})
    for name in OPTION_FIELDS:
        if name in obj and obj[name] is not None:
            options[name] = _checked_option(name, obj[name])
    return BatchItem(id=str(raw_id), line=line, prompt=prompt, messages=messages, options=options, metadata=obj.get("metadata"))


def _checked_option(name: str, value: Any) -> Any:
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    elif name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
    elif name == "stop":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError("stop must be a string or a list of strings")
    elif name == "tier" and not isinstance(value, str):
        raise ValueError(f"tier must be a string, got {value!r}")
    return value


def read_items(path: str | Path, defaults: dict[str, Any] | None = None) -> tuple[list[BatchItem], list[BadLine]]:
    """Every valid item of a JSONL file, and the lines that were not (blank lines are ignored)."""
    items: list[BatchItem] = []
    bad: list[BadLine] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                item = parse_line(text, number, defaults)
            except ValueError as e:
                bad.append(BadLine(number, str(e)))
                continue
            if item.id in first_line:
                bad.append(BadLine(number, f"duplicate id {item.id!r} (first on line {first_line[item.id]})"))
                continue
            first_line[item.id] = number
            items.append(item)
    return items, bad


def load_results(path: str | Path) -> dict[str, bool]:
    """Ids already in an output file, mapped to whether their last result succeeded.

    A torn last line (no newline at its end, as a kill mid-write leaves) is cut
    off the file so the next append starts on a line of its own.
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        os.truncate(path, end)
    done: dict[str, bool] = {}
    for raw in data[:end].splitlines():
        try:
            record = json.loads(raw)
            done[str(record["id"])] = record.get("error") is None
        except (ValueError, KeyError, TypeError):
            continue  # an unreadable line holds no id: that prompt runs again
    return done


class _PlainProgress:
    """A line every `interval` seconds, for logs and pipes."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._summary: BatchSummary | None = None
        self._total = 0
        self._started = 0.0

    def start(self, total: int, summary: BatchSummary) -> None:
        self._total, self._summary, self._started = total, summary, time.monotonic()
        self._line()
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._line()

    def _line(self) -> None:
        s = self._summary
        elapsed = time.monotonic() - self._started
        rate = s.finished / elapsed if elapsed > 0 else 0.0
        eta = f"{(self._total - s.finished) / rate:.0f} s" if rate > 0 else "?"
        pct = s.finished / self._total if self._total else 1.0
        print(
            f"batch: {s.finished}/{self._total} ({pct:.0%}) ok={s.succeeded} errors={s.failed} "
            f"rate={rate:.1f}/s eta={eta}",
            file=self.stream,
            flush=True,
        )

    def advance(self) -> None:
        pass

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._line()


class _RichProgress:
    """A live bar with count, rate and ETA, on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}/s  errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._task = None
        self._summary: BatchSummary | None = None
        self._started = 0.0

    def start(self, total: int, summary: BatchSummary) -> None:
        self._summary, self._started = summary, time.monotonic()
        self._progress.start()
        self._task = self._progress.add_task("batch", total=total, rate="0.0", errors=0)

    def advance(self) -> None:
        s = self._summary
        elapsed = time.monotonic() - self._started
        rate = f"{s.finished / elapsed:.1f}" if elapsed > 0 else "0.0"
        self._progress.update(self._task, completed=s.finished, rate=rate, errors=s.failed)

    def stop(self) -> None:
        self._progress.stop()


class _NoProgress:
    def start(self, total: int, summary: BatchSummary) -> None:
        pass

    def advance(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _progress(progress: bool | None, stream: TextIO, interval: float):
    if progress is False:
        return _NoProgress()
    if stream.isatty():
        return _RichProgress(stream)
    return _PlainProgress(stream, interval)


class Batch:
    """One run over an input file. `await batch.run()`; `batch.summary` stays readable
    after an interruption (Ctrl-C), with what was written so far."""

    def __init__(
        self,
        input: str | Path,
        output: str | Path,
        *,
        client: AsyncClient | None = None,
        target: str | None = None,
        concurrency: int = 16,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        defaults: dict[str, Any] | None = None,
        retry_errors: bool = False,
        progress: bool | None = None,
        progress_stream: TextIO | None = None,
        progress_interval_s: float = 10.0,
        on_bad_line: Callable[[BadLine], None] | None = None,
        **client_options: Any,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.input = Path(input)
        self.output = Path(output)
        self.concurrency = concurrency
        self.timeout = timeout
        self.defaults = dict(defaults or {})
        self.retry_errors = retry_errors
        self.progress = progress
        self.progress_stream = progress_stream or sys.stderr
        self.progress_interval_s = progress_interval_s
        self.on_bad_line = on_bad_line
        self._client = client
        self._client_args = dict(target=target, timeout=timeout, **client_options)
        self.summary = BatchSummary(output=str(self.output))

    async def run(self) -> BatchSummary:
        items, bad = read_items(self.input, self.defaults)
        s = self.summary
        s.input_items, s.bad_lines = len(items), bad
        for b in bad:
            if self.on_bad_line:
                self.on_bad_line(b)
        done = load_results(self.output)
        skip = {i for i, ok in done.items() if ok or not self.retry_errors}
        todo = [item for item in items if item.id not in skip]
        s.already_done = len(items) - len(todo)
        started = time.monotonic()
        progress = _progress(self.progress, self.progress_stream, self.progress_interval_s)
        client = self._client or AsyncClient(**self._client_args)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.output, "a", encoding="utf-8") as out:
                progress.start(len(todo), s)
                queue = iter(todo)
                workers = [asyncio.create_task(self._worker(client, queue, out, progress)) for _ in range(min(self.concurrency, len(todo)))]
                try:
                    await asyncio.gather(*workers)
                except BaseException:
                    s.interrupted = True
                    for w in workers:
                        w.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                    raise
        finally:
            progress.stop()
            s.wall_s = time.monotonic() - started
            if self._client is None:
                await client.close()
        return s

    async def _worker(self, client: AsyncClient, queue: Iterable[BatchItem], out: TextIO, progress) -> None:
        # One shared iterator: each worker takes the next item when it is free.
        for item in queue:
            record = await self._one(client, item)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            progress.advance()

    async def _one(self, client: AsyncClient, item: BatchItem) -> dict[str, Any]:
        s = self.summary
        started = time.perf_counter()
        ttft = None
        chunks = []
        error = None
        try:
            async for chunk in client.generate(
                item.prompt, messages=item.messages, request_id=f"{item.id}:{uuid.uuid4().hex[:8]}", **item.options
            ):
                if ttft is None and chunk.text:
                    ttft = time.perf_counter() - started
                chunks.append(chunk)
            completion = to_completion(chunks)
        except QarrError as e:
            error = e
        latency = time.perf_counter() - started
        record: dict[str, Any] = {"id": item.id}
        if error is None:
            u = completion.usage
            record.update(
                text=completion.text,
                finish_reason=completion.finish_reason,
                usage={"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens},
                tier=completion.tier,
                model=completion.model,
                quantization=completion.quantization,
                routing_reason=completion.routing_reason,
            )
            s.succeeded += 1
            s.tiers[completion.tier] += 1
            s.latencies_ms.append(latency * 1000)
            s.prompt_tokens += u.prompt_tokens
            s.completion_tokens += u.completion_tokens
        else:
            partial = "".join(c.text for c in chunks)
            record.update(
                text=partial,
                finish_reason="error",
                error={"type": type(error).__name__, "code": error.code.name if error.code else "", "message": error.message, "reason": error.reason},
            )
            s.failed += 1
            s.errors[type(error).__name__] += 1
            if chunks and chunks[-1].tier:
                s.tiers[chunks[-1].tier] += 1
        record["latency_ms"] = round(latency * 1000, 1)
        record["ttft_ms"] = None if ttft is None else round(ttft * 1000, 1)
        record["line"] = item.line
        if item.metadata is not None:
            record["metadata"] = item.metadata
        record.setdefault("error", None)
        return record


async def arun_batch(input: str | Path, output: str | Path, **kwargs: Any) -> BatchSummary:
    """Run a batch from asyncio code (arguments as `Batch`)."""
    return await Batch(input, output, **kwargs).run()


def run_batch(input: str | Path, output: str | Path, **kwargs: Any) -> BatchSummary:
    """Run a batch from a script: `run_batch("prompts.jsonl", "results.jsonl", concurrency=16)`.

    Keyword arguments as `Batch`: target, concurrency, timeout, defaults (sampling and
    routing fields for lines that do not set them), retry_errors, progress, and
    AsyncClient options (tls, root_certificates, token, max_retries).
    """
    return asyncio.run(arun_batch(input, output, **kwargs))
