"""python -m profiler --mesh mesh.yaml  — measure every tier, write the profiles the router reads, every tier's
outcome on every eval item, and the per-request accuracy predictor trained from them (see --help)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from profiler.evalset import DEFAULT_EVAL_SET, file_sha256
from profiler.outcomes import write_outcomes
from profiler.report import table, write_report
from profiler.run import ProfileSettings, profile_tiers
from profiler.tiers import read_mesh, read_tier_tls
from profiler.train import link_predictor, train_from_files
from router.profiles import dump_profiles, load_profiles


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qarr-profile", description=__doc__.splitlines()[0])
    p.add_argument("--mesh", type=Path, default=Path("mesh.yaml"), help="mesh file with the tiers (default %(default)s)")
    p.add_argument("--tiers", nargs="*", help="only these tiers (default: all)")
    p.add_argument("--running", action="store_true", help="profile tiers already running at their addresses "
                   "(default: start each tier server in turn, one at a time)")
    p.add_argument("--out", type=Path, default=Path("profiles/default.yaml"), help="profiles file (default %(default)s)")
    p.add_argument("--report", type=Path, default=Path("profiles/REPORT.md"),
                   help="Markdown report; PNG plots go beside it (default %(default)s)")
    p.add_argument("--eval-set", type=Path, default=DEFAULT_EVAL_SET, help="JSONL eval set (default: the golden set)")
    p.add_argument("--eval-limit", type=int, default=0, help="eval items, round-robin over categories "
                   "(0 = all, which the accuracy predictor wants; default %(default)s)")
    p.add_argument("--outcomes", type=Path, help="per-item outcomes, JSONL (default: outcomes.jsonl beside --out)")
    p.add_argument("--predictor", type=Path, help="accuracy predictor trained from the outcomes and named in the "
                   "profiles (default: predictor.json beside --out)")
    p.add_argument("--no-train", action="store_true", help="write the outcomes but train no predictor (the "
                   "router then uses each tier's profiled accuracy)")
    p.add_argument("--eval-concurrency", type=int, default=1,
                   help="eval requests in flight (1 keeps greedy output independent of batching; default %(default)s)")
    p.add_argument("--ttft-requests", type=int, default=10, help="sequential requests for TTFT (default %(default)s)")
    p.add_argument("--decode-tokens", type=int, default=64, help="max tokens per speed request (default %(default)s)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8],
                   help="concurrency levels; the largest is N in the profiles (default %(default)s)")
    p.add_argument("--prompt-tokens", type=int, default=480, help="prompt length for prompt tok/s (default %(default)s)")
    p.add_argument("--price-per-hour", type=float, default=0.10,
                   help="hardware price in $/hour, for cost per 1M tokens (default %(default)s)")
    p.add_argument("--gate-points", type=float, default=10.0,
                   help="a tier more than this many accuracy points below the reference is not routable "
                        "(default %(default)s)")
    p.add_argument("--reference", help="reference tier for the gate (default: the most precise by quantization label)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds for a tier to start (default %(default)s)")
    p.add_argument("--log-dir", type=Path, default=Path(".cache/profile-logs"), help="tier server logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the tier servers this command started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = ProfileSettings(
        eval_set=args.eval_set, eval_limit=args.eval_limit or None, eval_concurrency=args.eval_concurrency,
        ttft_requests=args.ttft_requests, decode_tokens=args.decode_tokens,
        concurrency_levels=tuple(sorted(set([1, *args.concurrency]))), prompt_tokens=args.prompt_tokens,
        price_per_hour=args.price_per_hour, gate_points=args.gate_points, reference=args.reference,
        start_tiers=not args.running, start_timeout_s=args.start_timeout, log_dir=args.log_dir,
        tls=read_tier_tls(args.mesh),
    )
    specs = read_mesh(args.mesh, args.tiers)
    profiles, results = profile_tiers(specs, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    outcomes_path = args.outcomes or args.out.parent / "outcomes.jsonl"
    write_outcomes((o for r in results for o in r.outcomes(args.eval_set.name, file_sha256(args.eval_set))),
                   outcomes_path)
    profiles.measured["outcomes"] = outcomes_path.name
    dump_profiles(profiles, args.out)
    load_profiles(args.out)  # the router must be able to read what we wrote
    trained = ""
    if not args.no_train:
        predictor_path = args.predictor or args.out.parent / "predictor.json"
        try:
            data = train_from_files(outcomes_path, predictor_path)
            link_predictor(args.out, predictor_path)
            trained = f", {predictor_path} ({data.trained['items']} items, {data.trained['features']} features)"
        except ValueError as e:  # too few items, for one
            print(f"no accuracy predictor trained: {e}", file=sys.stderr)
    command = "python -m profiler " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    written = write_report(profiles, results, args.report, command.strip())
    print(table(profiles))
    print(f"\nwrote {args.out}, {outcomes_path}{trained}, " + ", ".join(str(p) for p in written), file=sys.stderr)
    blocked = [n for n, t in profiles.tiers.items() if not t.routable]
    if blocked:
        print(f"not routable (eval gate): {', '.join(blocked)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
