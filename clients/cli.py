"""`qarr`: talk to a QARR router from a terminal or a script."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path

from clients.batch import FIELDS, Batch
from clients.client import DEFAULT_MAX_RETRIES, DEFAULT_TARGET, TARGET_ENV, Client
from clients.errors import QarrError

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _token(args) -> str | None:
    """--token-file, else --token, else $QARR_TOKEN (the SDK's default)."""
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        if not token:
            raise ValueError(f"{args.token_file}: empty token file")
        return token
    return args.token


def _client_options(args) -> dict:
    if bool(args.cert_file) != bool(args.key_file):
        raise ValueError("--cert-file and --key-file go together (a client certificate for mutual TLS)")
    return dict(
        timeout=args.timeout, tls=args.tls, root_certificates=_read(args.ca_file), token=_token(args),
        private_key=_read(args.key_file), certificate_chain=_read(args.cert_file), max_retries=args.max_retries,
    )


def _sampling_options(args) -> dict:
    """Sampling and routing flags that were given (unset flags leave the server's defaults)."""
    names = ("max_tokens", "temperature", "tier", "latency_budget_ms", "min_accuracy")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _generate(args) -> int:
    options = _sampling_options(args)
    prompt, messages = (args.prompt, None) if args.raw else (None, [{"role": "user", "content": args.prompt}])
    last = None
    with Client(args.target, **_client_options(args)) as client:
        for chunk in client.generate(prompt, messages=messages, **options):
            if args.json:
                print(json.dumps(asdict(chunk)), flush=True)
            else:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            last = chunk
    if not args.json and last is not None:
        print(flush=True)
        u = last.usage
        print(
            f"[tier={last.tier} quantization={last.quantization} reason={last.routing_reason} "
            + (f"predictor={last.predictor} " if last.predictor else "")
            + f"finish={last.finish_reason} tokens={u.prompt_tokens}+{u.completion_tokens}]",
            file=sys.stderr,
        )
    return EXIT_OK


def _batch(args) -> int:
    def report(bad) -> None:
        print(f"{args.input}:{bad.line}: skipped: {bad.error}", file=sys.stderr)

    batch = Batch(
        args.input,
        args.output,
        target=args.target,
        concurrency=args.concurrency,
        defaults=_sampling_options(args),
        retry_errors=args.retry_errors,
        progress=False if args.no_progress else None,
        progress_interval_s=args.progress_interval,
        on_bad_line=report,
        **_client_options(args),
    )
    try:
        summary = asyncio.run(batch.run())
    except KeyboardInterrupt:
        batch.summary.interrupted = True
        print(batch.summary.format(), file=sys.stderr)
        print("interrupted: results so far are saved; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary.format(), file=sys.stderr)
    return EXIT_OK if not summary.failed and not summary.bad_lines else EXIT_FAILED


def _tiers(args) -> int:
    with Client(args.target, **_client_options(args)) as client:
        tiers = client.tiers()
    # stdout stays the table (or JSON list) that scripts read; the predictor in force goes to stderr, as
    # `qarr generate` puts the tier and usage there.
    print(f"predictor: {tiers.predictor or 'none (tiers ranked by their profiled accuracy)'}", file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(t) for t in tiers], indent=2))
        return EXIT_OK
    header = ("NAME", "QUANT", "HEALTH", "BREAKER", "IN-FLIGHT", "RUN/WAIT", "KV", "LIVE TTFT", "ADDRESS", "MODEL")
    rows = []
    for t in tiers:
        rows.append((t.name, t.quantization, t.health, t.breaker if t.breaker not in ("", "UNSPECIFIED") else "-", str(t.in_flight),
                     f"{t.running_requests}/{t.waiting_requests}", f"{t.kv_cache_usage:.0%}", _ms(t.live.get("ttft_ms")),
                     t.address, t.model))
        if len(t.replicas) > 1 or (t.replicas and t.replicas[0]["address"] != t.address):
            rows += [("  └ replica", "", r["health"], r["breaker"], str(r["in_flight"]), f"{r['running_requests']}/{r['waiting_requests']}",
                      f"{r['kv_cache_usage']:.0%}", _ms(r.get("ttft_ms")), r["address"], "") for r in t.replicas]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return EXIT_OK


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _health(args) -> int:
    with Client(args.target, **_client_options(args)) as client:
        status = client.health(args.service)
    print(status)
    return EXIT_OK if status == "SERVING" else EXIT_FAILED


def _connection_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    c = p.add_argument_group("connection")
    c.add_argument("--target", help=f"router address HOST:PORT (default: env {TARGET_ENV}, else {DEFAULT_TARGET})")
    c.add_argument("--timeout", type=float, default=120.0, help="deadline per call in seconds, retries included (default %(default)s)")
    c.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES,
                   help="retries of UNAVAILABLE/RESOURCE_EXHAUSTED before the first chunk (default %(default)s)")
    c.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca-file)")
    c.add_argument("--ca-file", help="PEM file of root certificates for TLS (implies --tls)")
    c.add_argument("--cert-file", help="PEM client certificate, for a router that requires one (mutual TLS; implies --tls)")
    c.add_argument("--key-file", help="PEM private key of --cert-file")
    c.add_argument("--token-file", help="file holding the bearer token (default: env QARR_TOKEN)")
    c.add_argument("--token", help="bearer token (discouraged: visible in `ps` and shell history; use --token-file or QARR_TOKEN)")
    return p


def _sampling_parent(default_max_tokens: int | None, default_temperature: float | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    s = p.add_argument_group("sampling and routing")
    s.add_argument("--max-tokens", type=int, default=default_max_tokens,
                   help="most tokens to generate" + (" (default %(default)s)" if default_max_tokens else " (default: the tier's, 256)"))
    s.add_argument("--temperature", type=float, default=default_temperature,
                   help="sampling temperature, 0 = greedy" + (" (default %(default)s)" if default_temperature is not None else " (default: the tier's, 1.0)"))
    s.add_argument("--tier", help="pin a tier by name (see `qarr tiers`)")
    s.add_argument("--latency-budget-ms", type=int, help="end-to-end latency budget for the tier choice (default: class default)")
    s.add_argument("--min-accuracy", type=float, help="accuracy floor 0-1 for the tier choice")
    return p


BATCH_EPILOG = f"""\
input (JSONL, one object per line):
  {{"id": "q1", "prompt": "Translate to French: cat", "max_tokens": 32}}
  {{"id": 2, "messages": [{{"role": "user", "content": "Hi"}}], "tier": "bf16", "metadata": {{"row": 7}}}}
  fields: {', '.join(sorted(FIELDS))}
  `id` defaults to the line number; flags above are defaults for lines that do not set a field.

output (JSONL, appended and flushed as each prompt finishes):
  {{"id", "text", "finish_reason", "usage": {{"prompt_tokens", "completion_tokens"}}, "tier", "model",
   "quantization", "routing_reason", "latency_ms", "ttft_ms", "line", "error": null | {{"type", "code", "message", "reason"}}}}

resume: run the same command again after a crash or Ctrl-C; ids already in the output are skipped
(with --retry-errors, ids whose result was an error are sent again and get a new line).
Bad input lines are reported as FILE:LINE and skipped.

exit status: 0 all succeeded, 1 some results are errors or some lines were bad, 2 usage or
connection error, 130 interrupted.

example:
  qarr batch prompts.jsonl -o results.jsonl --concurrency 16 --max-tokens 64
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qarr",
        description="Client for the QARR routing mesh. Run `qarr COMMAND --help` for each command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = _connection_parent()
    # Operator tools with their own parsers (run `qarr quantize --help` etc.); listed here for --help.
    for name, text in TOOLS.items():
        sub.add_parser(name, help=text, add_help=False)

    g = sub.add_parser(
        "generate", parents=[connection, _sampling_parent(256, 0.0)], help="stream an answer to a prompt",
        description="Stream an answer to one prompt; text goes to stdout, the tier and token counts to stderr.",
        epilog='example: qarr generate "What is the capital of France?" --max-tokens 32',
    )
    g.add_argument("prompt", help="the question or instruction (sent as a user chat message unless --raw)")
    g.add_argument("--raw", action="store_true", help="send as a plain prompt, without the chat template")
    g.add_argument("--json", action="store_true", help="print each chunk as a JSON line instead of text")
    g.set_defaults(func=_generate)

    b = sub.add_parser(
        "batch", parents=[connection, _sampling_parent(None, None)], help="run a JSONL file of prompts, resumably",
        description="Send every prompt of a JSONL file with bounded concurrency and write one result line per prompt.",
        epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("input", help="JSONL file of prompts")
    b.add_argument("-o", "--output", required=True, help="JSONL file of results (appended to; read first to resume)")
    b.add_argument("-c", "--concurrency", type=int, default=16, help="requests in flight at once (default %(default)s)")
    b.add_argument("--retry-errors", action="store_true", help="send again the ids whose earlier result was an error")
    b.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    b.add_argument("--progress-interval", type=float, default=10.0,
                   help="seconds between progress lines when stderr is not a terminal (default %(default)s)")
    b.set_defaults(func=_batch)

    t = sub.add_parser("tiers", parents=[connection], help="list tiers with health, breaker state and load, and the predictor in force",
                       description="List the router's tiers (health, breaker state, in-flight calls, engine load) and the "
                                   "accuracy predictor in force (on stderr).")
    t.add_argument("--json", action="store_true", help="print JSON (with each tier's profile) instead of a table")
    t.set_defaults(func=_tiers)

    h = sub.add_parser("health", parents=[connection], help="check the router's health (exit 1 unless SERVING)",
                       description="Print the router's grpc.health.v1 status; exit 0 when SERVING, 1 otherwise, 2 if unreachable.")
    h.add_argument("--service", default="", help="service name to check ('' = whole server)")
    h.set_defaults(func=_health)
    return parser


# `qarr quantize|profile|train-router|bench ...` hand their arguments to the tool's own entry point.
TOOLS = {
    "quantize": "quantize a model folder with llm-compressor (W8A8, W4A16, ...); see docs/quantize.md",
    "profile": "measure every tier of a mesh into the profiles file the router reads; see docs/profile.md",
    "train-router": "train the per-request accuracy predictor from the profiler's per-item outcomes; see docs/profile.md",
    "bench": "router overhead, cost, scaling and routing-benefit benchmarks; see docs/bench.md",
}


def _run_tool(name: str, argv: list[str]) -> int:
    module = {"quantize": "quantize.__main__", "profile": "profiler.__main__", "train-router": "profiler.train",
              "bench": "bench.__main__"}[name]
    import importlib

    return importlib.import_module(module).main(argv) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return _run_tool(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    if args.ca_file or args.cert_file:
        args.tls = True
    try:
        return args.func(args)
    except QarrError as e:
        print(f"error: {type(e).__name__}: {e.message}" + (f" ({e.reason})" if e.reason else ""), file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
