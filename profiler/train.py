"""Train the per-request accuracy predictor (router/predictor.py) from per-item eval outcomes.

    python -m profiler.train [--profiles profiles/default.yaml]     # or: qarr train-router

Reads the outcomes beside the profiles (profiles/outcomes.jsonl), fits one logistic regression
per tier over the predictor's text features, writes profiles/predictor.json and names it in the
profiles file, so a running router picks it up with its next reload.

The model: P(tier t answers x correctly) = sigmoid(b_t + x . (s + v_t)), x the binary feature
vector of the request text, s shared by all tiers (how hard the item looks) and v_t the tier's own
deviation (what this tier is better or worse at), both L2-penalised. The penalty is chosen by
k-fold cross-validation on the training items (held-out log loss). Plain numpy, full-batch
accelerated gradient descent: a few seconds for hundreds of items.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from profiler.outcomes import Example, eval_set_of, examples, load_outcomes, tiers_of
from router.predictor import FEATURE_VERSION, FORMAT, VERSION, AccuracyPredictor, PredictorFile, dump_predictor, features

L2_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
L2_BIAS = 1e-3  # keeps a tier that got every item right (or wrong) at a finite bias
MIN_FEATURE_COUNT = 2  # a feature seen in fewer training items carries nothing that generalises
MIN_ITEMS = 20


def _np():
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with the engine and the dev/train extras
        raise SystemExit("training the router needs numpy: pip install 'qarr[train]'") from None
    return numpy


def vocabulary(texts: Sequence[str], min_count: int = MIN_FEATURE_COUNT) -> list[str]:
    counts = Counter(f for t in texts for f in features(t))
    return sorted(f for f, c in counts.items() if c >= min_count)


def _design(texts: Sequence[str], vocab: list[str]):
    np = _np()
    index = {f: j for j, f in enumerate(vocab)}
    x = np.zeros((len(texts), len(vocab)))
    for i, t in enumerate(texts):
        for f in features(t):
            j = index.get(f)
            if j is not None:
                x[i, j] = 1.0
    return x


def fit_logistic(x, y, l2: float, max_iter: int = 5000, tol: float = 1e-6):
    """Multi-tier logistic regression: x (n, F) features, y (n, T) 0/1 outcomes.
    Returns (bias (T,), weights (F, T)) with weights = shared + per-tier."""
    np = _np()
    n, f = x.shape
    t = y.shape[1]
    # Step 1/L: the loss is a mean over n*T pairs with z = [X 1] theta per tier, |dz|^2 <= 2 T sigma^2 |dtheta|^2,
    # so L <= sigma^2 / (2 n) (+ the penalties); sigma^2 by power iteration.
    xa = np.hstack([x, np.ones((n, 1))])
    v = np.ones(f + 1) / np.sqrt(f + 1)
    for _ in range(50):
        w = xa.T @ (xa @ v)
        norm = np.linalg.norm(w)
        if norm == 0:
            break
        v = w / norm
    sigma2 = float(v @ (xa.T @ (xa @ v)))
    lipschitz = sigma2 / (2 * n) + l2 + L2_BIAS
    step = 1.0 / lipschitz

    def grad(s, vt, b):
        z = x @ (s[:, None] + vt) + b
        r = (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))) - y) / (n * t)
        gv = x.T @ r
        return gv.sum(axis=1) + l2 * s, gv + l2 * vt, r.sum(axis=0) + L2_BIAS * b

    s, vt, b = np.zeros(f), np.zeros((f, t)), np.zeros(t)
    ys, yv, yb = s, vt, b
    momentum = 1.0
    for _ in range(max_iter):
        gs, gv, gb = grad(ys, yv, yb)
        ns, nv, nb = ys - step * gs, yv - step * gv, yb - step * gb
        # Restart the momentum when it points uphill (O'Donoghue & Candes).
        if (gs @ (ns - s)) + (gv * (nv - vt)).sum() + (gb @ (nb - b)) > 0:
            momentum = 1.0
        nm = (1 + (1 + 4 * momentum * momentum) ** 0.5) / 2
        beta = (momentum - 1) / nm
        ys, yv, yb = ns + beta * (ns - s), nv + beta * (nv - vt), nb + beta * (nb - b)
        s, vt, b, momentum = ns, nv, nb, nm
        if max(np.abs(gs).max(initial=0), np.abs(gv).max(initial=0), np.abs(gb).max()) < tol:
            break
    return b, s[:, None] + vt


def _log_loss(x, y, bias, weights) -> float:
    np = _np()
    z = np.clip(x @ weights + bias, -60, 60)
    return float(np.mean(np.logaddexp(0, z) - y * z))


def folds_of(items: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """A fold number per item, balanced and fixed by the item ids and the seed (not by file order)."""
    order = sorted(range(len(items)), key=lambda i: hashlib.sha256(f"{seed}:{items[i]}".encode()).hexdigest())
    fold = [0] * len(items)
    for rank, i in enumerate(order):
        fold[i] = rank % k
    return fold


def _fit_examples(train: Sequence[Example], tiers: Sequence[str], l2: float):
    np = _np()
    texts = [e.prompt for e in train]
    vocab = vocabulary(texts)
    x = _design(texts, vocab)
    y = np.array([[float(e.correct(t)) for t in tiers] for e in train])
    bias, weights = fit_logistic(x, y, l2)
    return vocab, bias, weights


def choose_l2(data: Sequence[Example], tiers: Sequence[str], k: int = 5, seed: int = 0) -> tuple[float, dict]:
    """The L2 penalty of L2_GRID with the lowest k-fold held-out log loss on `data`."""
    np = _np()
    fold = folds_of([e.item for e in data], k, seed)
    scores = {}
    for l2 in L2_GRID:
        losses, weights_n = [], []
        for f in range(k):
            train = [e for e, g in zip(data, fold) if g != f]
            test = [e for e, g in zip(data, fold) if g == f]
            if not train or not test:
                continue
            vocab, bias, weights = _fit_examples(train, tiers, l2)
            x = _design([e.prompt for e in test], vocab)
            y = np.array([[float(e.correct(t)) for t in tiers] for e in test])
            losses.append(_log_loss(x, y, bias, weights))
            weights_n.append(len(test))
        scores[l2] = float(np.average(losses, weights=weights_n))
    best = min(scores, key=scores.get)
    return best, {f"{k:g}": round(v, 5) for k, v in scores.items()}


def train_predictor(data: Sequence[Example], tiers: Sequence[str], *, eval_set: str = "", eval_set_sha256: str = "",
                    l2: float | None = None, cv_folds: int = 5, seed: int = 0, note: dict | None = None) -> PredictorFile:
    """Fit on every example in `data` (L2 by cross-validation unless given) and return the predictor file."""
    if len(data) < MIN_ITEMS:
        raise ValueError(f"{len(data)} eval items with an outcome on every tier; training needs at least {MIN_ITEMS}")
    trained: dict = {"items": len(data), "tiers": len(tiers)}
    if l2 is None:
        l2, cv = choose_l2(data, tiers, cv_folds, seed)
        trained["cv_log_loss_by_l2"] = cv
    vocab, bias, weights = _fit_examples(data, tiers, l2)
    trained.update(
        l2=l2, features=len(vocab), date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        accuracy={t: round(sum(e.correct(t) for e in data) / len(data), 4) for t in tiers},
        **(note or {}),
    )
    return PredictorFile(
        format=FORMAT, version=VERSION, model="ngram-logistic", features=FEATURE_VERSION,
        eval_set=eval_set, eval_set_sha256=eval_set_sha256, trained=trained, tiers=list(tiers),
        bias=[round(float(v), 6) for v in bias],
        weights={f: [round(float(v), 6) for v in row] for f, row in zip(vocab, weights)},
    )


def fit_predictor(data: Sequence[Example], tiers: Sequence[str], **kw) -> AccuracyPredictor:
    """train_predictor, loaded: what the offline benchmark uses per fold."""
    return AccuracyPredictor(train_predictor(data, tiers, **kw))


def train_from_files(outcomes_path: Path, out: Path, tiers: Sequence[str] | None = None, l2: float | None = None) -> PredictorFile:
    outcomes = load_outcomes(outcomes_path)
    if not outcomes:
        raise ValueError(f"{outcomes_path}: no outcomes")
    tiers = list(tiers or tiers_of(outcomes))
    name, sha = eval_set_of(outcomes)
    note = {"outcomes_sha256": hashlib.sha256(outcomes_path.read_bytes()).hexdigest()}
    data = train_predictor(examples(outcomes, tiers), tiers, eval_set=name, eval_set_sha256=sha, l2=l2, note=note)
    dump_predictor(data, out)
    return data


def link_predictor(profiles_path: Path, predictor_path: Path) -> None:
    """Name the predictor in the profiles file (relative to it), so the router loads it with the profiles."""
    from router.profiles import dump_profiles, load_profiles

    profiles = load_profiles(profiles_path)
    rel = predictor_path.resolve()
    try:
        rel = rel.relative_to(profiles_path.resolve().parent)
    except ValueError:
        pass
    profiles.predictor = str(rel)
    dump_profiles(profiles, profiles_path)
    load_profiles(profiles_path)  # the router must be able to read what we wrote, predictor included


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qarr train-router", description=__doc__.splitlines()[0])
    p.add_argument("--profiles", type=Path, default=Path("profiles/default.yaml"),
                   help="profiles file to name the predictor in (default %(default)s)")
    p.add_argument("--outcomes", type=Path, help="per-item outcomes (default: outcomes.jsonl beside the profiles)")
    p.add_argument("--out", type=Path, help="predictor file (default: predictor.json beside the profiles)")
    p.add_argument("--tiers", nargs="*", help="only these tiers (default: every tier in the outcomes)")
    p.add_argument("--l2", type=float, help="L2 penalty (default: chosen by 5-fold cross-validation)")
    p.add_argument("--no-link", action="store_true", help="write the predictor without naming it in the profiles file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcomes = args.outcomes or args.profiles.parent / "outcomes.jsonl"
    out = args.out or args.profiles.parent / "predictor.json"
    try:
        data = train_from_files(outcomes, out, args.tiers, args.l2)
        if not args.no_link:
            link_predictor(args.profiles, out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t = data.trained
    print(f"wrote {out}: {t['items']} items x {len(data.tiers)} tiers ({', '.join(data.tiers)}), "
          f"{t['features']} features, L2 {t['l2']:g}" + ("" if args.no_link else f"; named in {args.profiles}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
