"""The golden eval set: JSONL items with checkable answers, loaded and sampled deterministically."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

EVALS_DIR = Path(__file__).resolve().parent.parent / "evals"
DEFAULT_EVAL_SET = EVALS_DIR / "golden.jsonl"
DEFAULT_CALIBRATION_SET = EVALS_DIR / "calibration.jsonl"

Scoring = Literal["exact", "contains", "numeric", "choice"]


class EvalItem(BaseModel):
    id: str
    prompt: str
    answer: str
    scoring: Scoring
    category: str = "general"
    aliases: list[str] = Field(default_factory=list)
    choices: list[str] = Field(default_factory=list)
    # numeric only: |got - answer| <= tolerance counts as correct
    tolerance: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "EvalItem":
        if self.scoring == "numeric":
            float(self.answer)
        if self.scoring == "choice":
            letters = "ABCDEFGHIJ"[: len(self.choices)]
            if not self.choices or self.answer.upper() not in letters:
                raise ValueError(f"{self.id}: choice items need choices and an answer letter among {letters!r}")
        return self


def load_eval_set(path: str | Path = DEFAULT_EVAL_SET) -> list[EvalItem]:
    """Every item of a JSONL eval set (blank lines and lines starting with # are skipped)."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            items.append(EvalItem.model_validate(json.loads(line)))
        except Exception as exc:
            raise ValueError(f"{path}:{n}: {exc}") from None
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate item ids")
    return items


def sample(items: list[EvalItem], limit: int | None) -> list[EvalItem]:
    """The first `limit` items, taken round-robin over categories in file order (same answer every run)."""
    if limit is None or limit >= len(items):
        return list(items)
    by_cat: OrderedDict[str, list[EvalItem]] = OrderedDict()
    for item in items:
        by_cat.setdefault(item.category, []).append(item)
    out: list[EvalItem] = []
    depth = 0
    while len(out) < limit:
        for group in by_cat.values():
            if depth < len(group) and len(out) < limit:
                out.append(group[depth])
        depth += 1
    return out


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
