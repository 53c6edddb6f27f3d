"""Which loaded models give their memory back when a request needs room: a pure function.

Kept apart from the manager so the rule can be read, tested and timed on its own (the decision
runs on the event loop for every admission that does not fit, so it must stay far below 1 ms with
twenty models loaded, and it never touches a device).

The rule, from the anchors' failures: only models nobody holds (refcount 0), never a pinned or
CRITICAL one, never one more important than the requester; among the rest the least important
first, then the least recently used; the smallest prefix of that order that frees enough, then
any member whose bytes turn out not to be needed is spared again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from addon_server.zoo.interface import Priority


@dataclass(frozen=True, slots=True)
class Candidate:
    """A loaded model as the policy sees it."""

    name: str
    priority: Priority
    last_used: float
    nbytes: int
    refcount: int = 0
    pinned: bool = False


def evictable(candidate: Candidate, requester: Priority) -> bool:
    return (
        candidate.refcount == 0
        and not candidate.pinned
        and candidate.priority is not Priority.CRITICAL
        and candidate.priority <= requester
    )


def choose_victims(
    candidates: Sequence[Candidate], shortfall: int, requester: Priority
) -> list[Candidate] | None:
    """The victims that free at least ``shortfall`` bytes, or None when no set can."""
    if shortfall <= 0:
        return []
    order = sorted(
        (c for c in candidates if evictable(c, requester)),
        key=lambda c: (int(c.priority), c.last_used),
    )
    chosen: list[Candidate] = []
    freed = 0
    for candidate in order:
        if freed >= shortfall:
            break
        chosen.append(candidate)
        freed += candidate.nbytes
    if freed < shortfall:
        return None
    # Spare the most valuable members first (last in the order) whose bytes are not needed.
    for candidate in reversed(list(chosen)):
        if freed - candidate.nbytes >= shortfall:
            chosen.remove(candidate)
            freed -= candidate.nbytes
    return chosen
