"""Collect the tables of the latest runs (results/<name>/result.json) into one markdown file.

    python -m bench report --output bench/RESULTS.md.new

Each section gets the date, machine, load average and the command that produced it,
so a re-run after a merge can replace bench/RESULTS.md's measured tables wholesale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import harness as h

ORDER = ("overhead", "cost", "scaling", "routing")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=str(h.REPO / "results"), help="folder holding <name>/result.json")
    p.add_argument("--output", help="write here (default: print)")


def section(result: dict) -> str:
    m = result["machine"]
    head = (f"## {result['benchmark']}\n\n`{m['command']}`  \n{m['date']}, commit {m['commit']}, {m['cpu']} ×{m['cores']}, "
            f"{m['mem_gib']} GiB, Python {m['python']}, grpcio {m['grpc']}; load average (1/5/15 min) "
            f"{result['loadavg_start']} at start, {result['loadavg_end']} at end.\n")
    tables = [f"### {t['title']}\n\n{t['markdown']}\n" for t in result["tables"].values()]
    notes = "".join(f"\n_{n}_\n" for n in result.get("notes", []))
    return "\n".join([head, *tables]) + notes


def run(args) -> dict:
    parts = []
    for name in ORDER:
        path = Path(args.results) / name / "result.json"
        if path.exists():
            parts.append(section(json.loads(path.read_text())))
    text = "\n".join(parts)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return {"markdown": text}
