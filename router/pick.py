"""pick_replica: a pure function from a request's prefix key and snapshots of one tier's replicas to the replica to try.

choose_tier has already picked the model-quantization pair; this picks the endpoint, in three
stages over a snapshot (the Gateway API Inference Extension's filter -> score -> pick):

1. filter - replicas that can take a stream now: SERVING, breaker lets traffic through, below
            the per-replica stream limit, and not already tried by this request.
2. score  - load = max(streams this router has open, streams the engine runs) + requests it queues,
            then KV-cache use; and, for the request's prefix key, each replica's rendezvous weight.
3. pick   - the affinity replica unless it is past the load threshold; then the least-loaded
            replica. The affinity replica is the one that last served the prefix in this process,
            when the caller remembers one (a prefix moved off an overloaded replica stays where
            its cache is now warm), else the highest rendezvous weight: the same for every request
            that shares the prefix, on every router process, moving only if that replica goes.

No I/O, no clock, no randomness: ties go by a rendezvous order of the caller's `seed` (a request
counter), so equal replicas share ties evenly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

AFFINITY = "affinity"
LEAST_LOAD = "least_load"
OVER_THRESHOLD = "affinity_over_threshold"  # the affinity replica was past the load threshold

_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica at the moment of the pick."""

    address: str
    id: int  # stable 64-bit id of the address (stable_id), for rendezvous weights
    serving: bool | None = True
    breaker_allows: bool = True
    in_flight: int = 0
    max_in_flight: int = 256
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0

    @property
    def load(self) -> int:
        return max(self.in_flight, self.running) + self.waiting

    @property
    def usable(self) -> bool:
        return bool(self.serving) and self.breaker_allows and self.in_flight < self.max_in_flight


@dataclass(frozen=True, slots=True)
class Pick:
    address: str
    reason: str


def stable_id(data: str | bytes) -> int:
    """A 64-bit id that every process computes alike (Python's hash() is salted per process)."""
    if isinstance(data, str):
        data = data.encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def affinity_key(prompt: str, messages: Iterable[tuple[str, str]], n: int) -> int | None:
    """The prefix key of a request: a hash of the first `n` bytes of its prompt, or of its messages up
    to and including the first user message (the part every turn of a conversation repeats: later turns
    add to the end). None when n is 0 (affinity off) or the request has no text."""
    if n <= 0:
        return None
    if prompt:
        head = prompt[:n].encode()[:n]
    else:
        parts: list[bytes] = []
        size = 0
        for role, content in messages:
            part = role.encode() + b"\x00" + content[:n].encode() + b"\x00"
            parts.append(part)
            size += len(part)
            if size >= n or role == "user":
                break
        head = b"".join(parts)[:n]
    return stable_id(head) if head else None


def weight(key: int, replica_id: int) -> int:
    """Rendezvous (highest random weight) score of a replica for a key: splitmix64's finalizer of both."""
    x = (key ^ replica_id) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def within_threshold(load: float, least: float, ratio: float, slack: float) -> bool:
    """Whether a replica carrying `load` may still take affinity traffic while the least-loaded carries `least`:
    up to `ratio` x as much, or `slack` streams more, whichever is more (few streams apart cost an engine nothing)."""
    return load <= max(least * ratio, least + slack)


def pick_replica(
    replicas: Sequence[ReplicaView],
    key: int | None,
    seed: int,
    *,
    ratio: float = 1.5,
    slack: float = 4.0,
    kv_threshold: float = 1.0,
    exclude: frozenset[str] | set[str] = frozenset(),
    preferred: str | None = None,
) -> Pick | None:
    """The replica to try for a request with prefix key `key` (None: no affinity), or None when no replica
    can take it. `exclude`: addresses this request already tried. `preferred`: the replica that last served
    this key (it is the affinity replica while it can take the request)."""
    usable = [r for r in replicas if r.usable and r.address not in exclude]
    if not usable:
        return None
    if len(usable) == 1:
        return Pick(usable[0].address, AFFINITY if key is not None else LEAST_LOAD)
    # A replica past the KV-cache threshold gets no new work while another has headroom.
    calm = [r for r in usable if r.kv_cache_usage <= kv_threshold] or usable
    least = min(r.load for r in calm)
    if key is not None:
        home = next((r for r in usable if r.address == preferred), None) or max(usable, key=lambda r: weight(key, r.id))
        home_calm = home.kv_cache_usage <= kv_threshold or calm is usable
        if home_calm and within_threshold(home.load, least, ratio, slack):
            return Pick(home.address, AFFINITY)
    tie = seed & _MASK
    best = min(calm, key=lambda r: (r.load, r.kv_cache_usage, -weight(tie, r.id)))
    return Pick(best.address, LEAST_LOAD if key is None else OVER_THRESHOLD)
