"""Routing quality as RouteLLM measures it (lm-sys/RouteLLM, routellm/evals), for a weak and a strong tier.

A router gives every item a score (how much it wants the strong tier). Sweeping a threshold
over the scores sends the top share of items to the strong tier and the rest to the weak one,
tracing accuracy against the share of strong calls from 0 % to 100 %:

    PGR(share)  = (accuracy(share) - accuracy(weak)) / (accuracy(strong) - accuracy(weak))
    APGR        = the area under PGR over share in [0, 1]    (random routing: 0.5)
    CPT(x %)    = the smallest share of strong calls at which PGR reaches x %

Items with equal scores cannot be told apart by the router, so they move as one group and the
curve is linear across the group: the expected accuracy over every order of the tied items
(a router with one score for everything traces the random diagonal, APGR 0.5). The whole
sweep is exact (every threshold, not RouteLLM's 10 quantile bins).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    share: float  # of items sent to the strong tier
    accuracy: float
    cost: float  # mean per item


def sweep(scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool],
          weak_cost: Sequence[float] | None = None, strong_cost: Sequence[float] | None = None) -> list[Point]:
    """Curve points from share 0 to 1: items go to the strong tier in descending score, ties together."""
    n = len(scores)
    if not n or not len(weak) == len(strong) == n:
        raise ValueError("need one score, one weak and one strong outcome per item")
    wc = list(weak_cost) if weak_cost is not None else [0.0] * n
    sc = list(strong_cost) if strong_cost is not None else [0.0] * n
    order = sorted(range(n), key=lambda i: -scores[i])
    correct, cost = float(sum(weak)), float(sum(wc))
    points = [Point(0.0, correct / n, cost / n)]
    i = 0
    while i < n:
        j = i
        while j < n and scores[order[j]] == scores[order[i]]:
            k = order[j]
            correct += strong[k] - weak[k]
            cost += sc[k] - wc[k]
            j += 1
        points.append(Point(j / n, correct / n, cost / n))
        i = j
    return points


def pgr(accuracy: float, weak_accuracy: float, strong_accuracy: float) -> float:
    gap = strong_accuracy - weak_accuracy
    return (accuracy - weak_accuracy) / gap if gap > 0 else math.nan


def apgr(points: Sequence[Point], weak_accuracy: float, strong_accuracy: float) -> float:
    """Area under PGR(share) over [0, 1] (trapezoids are exact: the curve is piecewise linear)."""
    area = sum((b.share - a.share) * (a.accuracy + b.accuracy) / 2 for a, b in zip(points, points[1:]))
    return pgr(area, weak_accuracy, strong_accuracy)


def cpt(points: Sequence[Point], weak_accuracy: float, strong_accuracy: float, target: float) -> float:
    """Smallest share of strong calls at which PGR reaches `target` (0.5 for CPT(50 %)); nan if never."""
    goal = weak_accuracy + target * (strong_accuracy - weak_accuracy)
    if not strong_accuracy > weak_accuracy:
        return math.nan
    for a, b in zip(points, points[1:]):
        if a.accuracy >= goal:
            return a.share
        if b.accuracy >= goal:
            return a.share + (b.share - a.share) * (goal - a.accuracy) / (b.accuracy - a.accuracy)
    return points[-1].share if points and points[-1].accuracy >= goal else math.nan
