"""Prefix affinity on real replicas: TTFT of conversation follow-ups with affinity versus without.

Two replicas of one tier (vLLM CPU by default: the bundled SmolLM2-135M-Instruct in fp32, max_model_len
2048, 0.5 GiB of KV cache each, prefix caching on as vLLM has it by default) behind two routers:
`affinity` (the default picker) and `no-affinity` (affinity_prefix_bytes 0: least load, ties rotated).
A conversation opens with a document of about --prefix-tokens tokens and a question, then asks a
follow-up that repeats the document and the first answer, as chat clients do. Conversations run one at
a time, the two routers taking turns; every conversation has its own document (the engines' caches are
shared by both arms, so an arm never finds the other's prefix warm). Reported per arm: TTFT p50/p95 of
first turns (cold) and of follow-ups, and the share of follow-ups served by the replica that served the
first turn. With --engine fake (no prefix cache) it checks the placement only (the smoke test).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import grpc
import yaml

from bench import harness as h
from launcher.process import tier_processes
from mesh.config import MeshConfig, parse_mesh
from qarr.v1 import common_pb2, router_service_pb2 as pb, router_service_pb2_grpc

ARMS = {"affinity": {}, "no-affinity": {"affinity_prefix_bytes": 0}}
WORDS = ("river", "market", "ledger", "harbor", "signal", "orchard", "copper", "lantern", "meadow", "quarry",
         "beacon", "canyon", "ember", "glacier", "hollow", "island", "juniper", "kettle", "marble", "nectar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["vllm", "fake"], default="vllm")
    p.add_argument("--model", default=str(h.REPO / ".cache/models/smollm2-135m-instruct"), help="model folder (vllm)")
    p.add_argument("--dtype", default="float32", help="vLLM dtype of both replicas (fp32 is the faster one on this CPU)")
    p.add_argument("--kv-cache-gib", type=float, default=0.5)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--conversations", type=int, default=8, help="conversations per arm")
    p.add_argument("--prefix-tokens", type=int, default=1500, help="tokens of each conversation's opening document")
    p.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each turn")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=11)


def document(seed: int, tokens: int, count) -> str:
    """Deterministic text of about `tokens` tokens (by `count`), different for every seed."""
    rng = random.Random(seed)
    words: list[str] = []
    while True:
        words += [rng.choice(WORDS) for _ in range(50)]
        if count(" ".join(words)) >= tokens:
            return " ".join(words)


def token_counter(args):
    if args.engine == "fake":
        return lambda text: len(text.split())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.model) / "tokenizer.json"))
    return lambda text: len(tok.encode(text).ids)


def turn(stub, messages: list[tuple[str, str]], max_tokens: int) -> dict:
    """One Generate call: TTFT (to the first text), the reply, and the replica that served it."""
    req = pb.GenerateRequest(messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages],
                             sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
                             routing=pb.RoutingHints(min_accuracy=0.0, latency_budget_ms=600_000))
    t0 = time.perf_counter()
    ttft, text, last = None, [], None
    for msg in stub.Generate(req, timeout=300):
        if msg.text:
            if ttft is None:
                ttft = time.perf_counter() - t0
            text.append(msg.text)
        last = msg
    return {"ttft_ms": 1000 * (ttft if ttft is not None else time.perf_counter() - t0), "text": "".join(text),
            "replica": last.replica}


def router_config(path: Path, mesh: MeshConfig, picker: dict) -> Path:
    config = mesh.model_copy(update={"picker": mesh.picker.model_copy(update=picker), "grace_seconds": 1})
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    return path


def run(args) -> dict:
    out = h.Output("affinity", args.out)
    if args.engine == "vllm" and not Path(args.model).exists():
        raise SystemExit(f"model folder {args.model} not found (make model, or --model DIR)")
    serve = {"engine": args.engine, "log_level": "WARNING", "grace_seconds": 1}
    if args.engine == "vllm":
        serve.update(dtype=args.dtype, kv_cache_gib=args.kv_cache_gib)
    mesh = parse_mesh({"tiers": [{
        "name": "t", "addresses": [f"127.0.0.1:{h.free_port()}" for _ in range(2)],
        "model": args.model if args.engine == "vllm" else "fake", "quantization": args.dtype,
        "max_model_len": args.max_model_len, "serve": serve,
    }]}, "bench affinity")
    count = token_counter(args)
    servers: list = []
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    try:
        tiers = tier_processes(mesh.tiers[0], log=lambda name: out.dir / f"{name}.log")
        servers += [s.start() for s in tiers]
        h.wait_all(*tiers, timeout=args.start_timeout)
        routers = {}
        for arm, picker in ARMS.items():
            port = h.free_port()
            config = router_config(out.dir / f"router-{arm}.yaml", mesh, picker)
            routers[arm] = h.Server(f"router {arm}", [sys.executable, "-m", "router", "--config", str(config),
                                                      "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"],
                                    port, out.dir / f"router-{arm}.log")
            servers.append(routers[arm])
        h.wait_all(*routers.values(), timeout=60)
        channels = {arm: grpc.insecure_channel(r.address) for arm, r in routers.items()}
        stubs = {arm: router_service_pb2_grpc.RouterServiceStub(ch) for arm, ch in channels.items()}
        turn(stubs["affinity"], [("user", "Warm up.")], 2)  # first-call costs (graphs, allocations) out of the way
        turn(stubs["no-affinity"], [("user", "Warm up.")], 2)
        for i in range(args.conversations):
            for k, arm in enumerate(h.rotated(list(ARMS), i)):
                doc = document(args.seed * 1000 + 2 * i + (arm == "no-affinity"), args.prefix_tokens, count)
                opening = [("system", "You answer questions about the document the user gives."),
                           ("user", f"Document:\n{doc}\n\nWhich word comes first in the document?")]
                first = turn(stubs[arm], opening, args.max_tokens)
                follow = turn(stubs[arm], [*opening, ("assistant", first["text"]), ("user", "And which word comes last?")],
                              args.max_tokens)
                results[arm].append({"first": first, "follow_up": follow, "prompt_tokens": count(doc)})
            print(f"  conversation {i + 1}/{args.conversations}: " + ", ".join(
                f"{arm} {results[arm][-1]['first']['ttft_ms']:.0f} -> {results[arm][-1]['follow_up']['ttft_ms']:.0f} ms"
                for arm in ARMS), flush=True)
        for ch in channels.values():
            ch.close()
    finally:
        h.stop_all(reversed(servers))
    rows, stats = [], {}
    for arm, convs in results.items():
        first = [c["first"]["ttft_ms"] / 1000 for c in convs]
        follow = [c["follow_up"]["ttft_ms"] / 1000 for c in convs]
        same = [c["follow_up"]["replica"] == c["first"]["replica"] for c in convs]
        warm = [c["follow_up"]["ttft_ms"] / 1000 for c, s in zip(convs, same) if s]
        cold = [c["follow_up"]["ttft_ms"] / 1000 for c, s in zip(convs, same) if not s]
        stats[arm] = {"first": h.summary_ms(first), "follow_up": h.summary_ms(follow), "same_replica": sum(same) / len(same),
                      "follow_up_same_replica": h.summary_ms(warm), "follow_up_other_replica": h.summary_ms(cold)}
        rows.append([arm, stats[arm]["first"]["p50"], stats[arm]["follow_up"]["p50"], stats[arm]["follow_up"]["p95"],
                     f"{sum(same)}/{len(same)}", stats[arm]["follow_up_same_replica"]["p50"],
                     stats[arm]["follow_up_other_replica"]["p50"]])
    tokens = sum(c["prompt_tokens"] for convs in results.values() for c in convs) / sum(len(c) for c in results.values())
    out.print_table(
        "affinity", f"Follow-up TTFT with and without prefix affinity: two {args.engine} replicas, {args.conversations} "
        f"conversations per arm, ~{tokens:.0f}-token documents, one request at a time",
        ["router", "first turn TTFT p50 ms", "follow-up TTFT p50 ms", "follow-up p95 ms", "follow-ups on the first replica",
         "p50 there ms", "p50 elsewhere ms"], rows, 0)
    out.result.update(stats=stats, conversations=results, params={k: v for k, v in vars(args).items() if k != "func"})
    out.save()
    return out.result
