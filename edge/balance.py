"""Load balancing over a site's usable origins: which one gets the next request.  Pure: no I/O, no
clock; the caller passes who is usable, their weights and how many requests each has in flight.

* ``round_robin``: smooth weighted round robin (nginx's): over any window each origin gets its share
  of requests in proportion to its weight, interleaved rather than in bursts.
* ``least_conn``: the fewest requests in flight per unit of weight; ties by round robin.
* ``consistent_hash``: weighted rendezvous hashing on the cache key — a key goes to the same origin
  while it is usable, and when one becomes unusable only its keys move (to where they rank next).
* ``random_two``: two origins drawn at random by weight, the less loaded of them (the "power of two
  choices": close to least_conn without its herding on a shared snapshot).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Policy = Literal["round_robin", "least_conn", "consistent_hash", "random_two"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An origin the next request may go to."""

    index: int  # position in the site's origin list (stable for the balancer's state)
    ident: str  # stable identity for hashing: the origin URL
    weight: int
    in_flight: int = 0


class Balancer:
    def __init__(self, policy: Policy, size: int, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._current = [0] * size  # smooth weighted round robin state
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[Candidate], affinity: str = "") -> Candidate:
        if not candidates:
            raise ValueError("no candidate to pick from")
        if len(candidates) == 1:
            return candidates[0]
        if self.policy == "consistent_hash":
            return max(candidates, key=lambda item: rendezvous_score(affinity, item.ident, item.weight))
        if self.policy == "least_conn":
            lowest = min(item.in_flight / item.weight for item in candidates)
            return self._round_robin([item for item in candidates if item.in_flight / item.weight == lowest])
        if self.policy == "random_two":
            first = self._weighted_choice(candidates)
            others = [item for item in candidates if item.index != first.index]
            second = self._weighted_choice(others)
            return min((first, second), key=lambda item: (item.in_flight / item.weight, -item.weight))
        return self._round_robin(candidates)

    def _round_robin(self, candidates: Sequence[Candidate]) -> Candidate:
        """nginx's smooth weighted round robin over ``candidates`` (the others keep their state)."""
        if len(candidates) == 1:
            return candidates[0]
        total = 0
        best: Candidate | None = None
        for item in candidates:
            self._current[item.index] += item.weight
            total += item.weight
            if best is None or self._current[item.index] > self._current[best.index]:
                best = item
        assert best is not None
        self._current[best.index] -= total
        return best

    def _weighted_choice(self, candidates: Sequence[Candidate]) -> Candidate:
        point = self._rng.uniform(0, sum(item.weight for item in candidates))
        for item in candidates:
            point -= item.weight
            if point <= 0:
                return item
        return candidates[-1]


def rendezvous_score(key: str, ident: str, weight: int) -> float:
    """Weighted highest-random-weight score: ``-weight / ln(u)`` with ``u`` uniform in (0, 1) from a
    hash of key and origin — the origin with the highest score owns the key."""
    digest = hashlib.blake2b(f"{ident}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 2)
    return -weight / math.log(unit)
