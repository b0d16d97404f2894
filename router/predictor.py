"""Per-request accuracy predictor: P(correct) on each tier, from the request's text.

Trained offline from the profiler's per-item eval outcomes (profiler/train.py), saved as
JSON beside the profiles and loaded read-only here. The model is a logistic regression per
tier over word and word-pair features of the text, so a prediction is a few dict lookups
and one sigmoid per tier: no numpy, no allocation beyond the feature list.

    {"format": "qarr-accuracy-predictor", "version": 1, "model": "ngram-logistic", "features": 1,
     "eval_set": "golden.jsonl", "eval_set_sha256": "3f6c...", "trained": {...},
     "tiers": ["small", "large"], "bias": [-0.4, 0.1],
     "weights": {"capital": [0.8, 1.2], "what is": [-0.1, 0.0], "00": [0.3, -0.2], ...}}

`features` is shared by training and serving, so both see a text the same way; a file
written with another feature version is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

FORMAT = "qarr-accuracy-predictor"
VERSION = 1
FEATURE_VERSION = 1
# Long prompts: the head and the tail (where a question usually is) are read, so the cost is bounded.
HEAD_CHARS = 384
TAIL_CHARS = 128
_TOKEN = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
_DIGITS = str.maketrans("123456789", "000000000")


def features(text: str) -> set[str]:
    """Words, numbers and symbols of the lower-cased text (every digit read as 0, so a number counts by its
    length), adjacent pairs of them ("capital of"), and a length bucket ("#n3": no token or pair looks like it). Bounded cost: at most
    HEAD_CHARS + TAIL_CHARS characters are read."""
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + " " + text[-TAIL_CHARS:]
    tokens = _TOKEN.findall(text.lower().translate(_DIGITS))
    out = set(tokens)
    out.update(map(" ".join, zip(tokens, tokens[1:])))
    out.add("#n%d" % min(len(tokens) // 8, 8))
    return out


class PredictorFile(BaseModel):
    """The predictor file as written by profiler/train.py."""

    format: str
    version: int
    model: str = "ngram-logistic"
    features: int
    eval_set: str = ""
    eval_set_sha256: str = ""
    trained: dict = Field(default_factory=dict)
    tiers: list[str] = Field(min_length=1)
    bias: list[float]
    weights: dict[str, list[float]]

    @model_validator(mode="after")
    def _check(self) -> "PredictorFile":
        if self.format != FORMAT:
            raise ValueError(f"not an accuracy predictor (format {self.format!r})")
        if self.version != VERSION:
            raise ValueError(f"predictor file version {self.version}, this router reads {VERSION}")
        if self.features != FEATURE_VERSION:
            raise ValueError(f"predictor uses feature version {self.features}, this router computes {FEATURE_VERSION}")
        if len(set(self.tiers)) != len(self.tiers):
            raise ValueError(f"duplicate tier names {self.tiers}")
        n = len(self.tiers)
        if len(self.bias) != n:
            raise ValueError(f"bias has {len(self.bias)} values for {n} tiers")
        for name, w in self.weights.items():
            if len(w) != n:
                raise ValueError(f"weights[{name!r}] has {len(w)} values for {n} tiers")
        if not all(math.isfinite(v) for v in self.bias) or not all(
            math.isfinite(v) for w in self.weights.values() for v in w
        ):
            raise ValueError("weights must be finite numbers")
        return self


class AccuracyPredictor:
    """P(correct) per tier for a request text. Immutable once loaded; share it freely."""

    __slots__ = ("id", "tiers", "eval_set", "eval_set_sha256", "trained", "_bias", "_weights")

    def __init__(self, data: PredictorFile, digest: str = "") -> None:
        self.tiers = tuple(data.tiers)
        self.eval_set = data.eval_set
        self.eval_set_sha256 = data.eval_set_sha256
        self.trained = dict(data.trained)
        self._bias = tuple(data.bias)
        self._weights = {name: tuple(w) for name, w in data.weights.items()}
        digest = digest or hashlib.sha256(json.dumps(data.model_dump(), sort_keys=True).encode()).hexdigest()
        # Names the model, what it was trained on and the exact weights, e.g.
        # "ngram-logistic:golden.jsonl@3f6c832cf4ad:9b1e04c2".
        self.id = f"{data.model}:{data.eval_set or 'eval'}@{data.eval_set_sha256[:12]}:{digest[:8]}"

    def logits(self, text: str) -> tuple[float, ...]:
        get = self._weights.get
        rows = [w for w in map(get, features(text)) if w is not None]
        if not rows:
            return self._bias
        return tuple(b + sum(col) for b, col in zip(self._bias, zip(*rows)))

    def predict(self, text: str) -> dict[str, float]:
        """{tier: probability that the tier answers this request correctly}."""
        return {t: 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z)))) for t, z in zip(self.tiers, self.logits(text))}


def load_predictor(path: str | Path) -> AccuracyPredictor:
    """Read and check a predictor file; ValueError naming the file when it is not a valid one."""
    raw = Path(path).read_bytes()
    try:
        data = PredictorFile.model_validate(json.loads(raw))
    except ValueError as e:  # JSON and pydantic errors both derive from ValueError
        raise ValueError(f"{path}: invalid accuracy predictor: {e}") from None
    return AccuracyPredictor(data, hashlib.sha256(raw).hexdigest())


def dump_predictor(data: PredictorFile, path: str | Path) -> None:
    """Write atomically (temp file + rename), so a router reloading it never reads half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data.model_dump(), separators=(",", ":")) + "\n")
    tmp.replace(path)
