"""Tokens per word of a tier's tokenizer, over a fixed English text (the eval and calibration prompts)."""

from __future__ import annotations

import json
from pathlib import Path

from profiler.evalset import DEFAULT_CALIBRATION_SET, DEFAULT_EVAL_SET


def reference_text() -> str:
    lines = []
    for path in (DEFAULT_EVAL_SET, DEFAULT_CALIBRATION_SET):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                lines.append(row.get("prompt") or row.get("text") or "")
    return "\n".join(lines)


def tokens_per_word(model_dir: str | Path, text: str | None = None) -> float:
    """Tokenizer tokens / whitespace-separated words (no special tokens)."""
    from tokenizers import Tokenizer

    text = text if text is not None else reference_text()
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_truncation()  # a saved truncation setting would cap the count
    tok.no_padding()
    n_tokens = len(tok.encode(text, add_special_tokens=False).ids)
    n_words = len(text.split())
    return n_tokens / n_words if n_words else 0.0
