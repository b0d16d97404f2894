"""choose_tier: a pure function from a request and the tiers' state to ranked candidates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class NoTier(Exception):
    """No tier can serve this request; `code` says which gRPC status fits."""

    def __init__(self, message: str, reason: str, invalid_argument: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.invalid_argument = invalid_argument


@dataclass(frozen=True, slots=True)
class TierView:
    """What choose_tier may know about a tier (a snapshot, not the live object)."""

    name: str
    serving: bool | None


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    reason: str


def choose_tier(pinned: str, tiers: Sequence[TierView]) -> list[Candidate]:
    """Pinned tier if named, else every serving tier in config order."""
    if pinned:
        names = [t.name for t in tiers]
        if pinned not in names:
            raise NoTier(f"routing.tier {pinned!r} is not a known tier; known tiers: {names}", "UNKNOWN_TIER", True)
        return [Candidate(pinned, "pinned")]
    ranked = [Candidate(t.name, "first_healthy") for t in tiers if t.serving]
    if not ranked:
        raise NoTier("no tier is serving", "NO_HEALTHY_TIER")
    return ranked
