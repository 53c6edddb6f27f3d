"""Instruments for the zoo's policy tests: a model that holds exactly N bytes, and a probe
that reports what each loaded ballast declares.

The real CPU probe (RSS) is tested on real models elsewhere; the policy tests need figures that
do not move with the rest of the process, so the budget's invariants can be checked exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from addon_server.zoo.interface import Frame, LoadContext, Priority
from addon_server.zoo.memory import Measured
from addon_server.zoo.registry import ModelSpec

T = TypeVar("T")
MB = 1024**2


@dataclass(frozen=True, slots=True)
class Held:
    name: str
    nbytes: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.nbytes}

    def context_lines(self) -> list[str]:
        return []


class Faults:
    """Failures to inject: names whose next load fails (once), or raises out-of-memory (once,
    then as many more times as ``ooms`` says: the manager retries an OOM once)."""

    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.oom: set[str] = set()
        self.ooms: dict[str, int] = {}
        self.gate: threading.Event | None = None
        self.measure_factor: dict[str, float] = {}


class Ballast:
    """Holds ``options['nbytes']`` bytes of real memory; ``infer`` says what it holds."""

    def __init__(self, context: LoadContext) -> None:
        self.name = str(context.options["name"])
        faults: Faults = context.options["faults"]
        gate = faults.gate
        if gate is not None:
            gate.wait(30)
        if self.name in faults.fail:
            faults.fail.discard(self.name)
            raise RuntimeError(f"injected load failure of {self.name}")
        if self.name in faults.oom:
            faults.oom.discard(self.name)
            raise MemoryError(f"injected out of memory loading {self.name}")
        if self.faults_left(faults.ooms):
            raise MemoryError(f"injected out of memory loading {self.name} again")
        factor = faults.measure_factor.get(self.name, 1.0)
        self.nbytes = int(int(context.options["nbytes"]) * factor)
        self.array: np.ndarray | None = np.ones(self.nbytes, dtype=np.uint8)
        self.closed = False

    def faults_left(self, counts: dict[str, int]) -> bool:
        left = counts.get(self.name, 0)
        if left:
            counts[self.name] = left - 1
        return left > 0

    def infer(self, frame: Frame) -> Held:
        assert self.array is not None, f"{self.name} used after close"
        return Held(self.name, int(self.array.nbytes))

    def warmup(self) -> None:
        self.infer(Frame(np.zeros((8, 8, 3), dtype=np.uint8)))

    def close(self) -> None:
        self.array = None
        self.closed = True


def spec(
    name: str,
    nbytes: int,
    priority: Priority = Priority.MEDIUM,
    faults: Faults | None = None,
    *,
    idle_ttl_s: float = 300.0,
    estimate: int | None = None,
) -> ModelSpec:
    return ModelSpec(
        name,
        Ballast,
        category="test",
        priority=priority,
        estimated_bytes=estimate if estimate is not None else nbytes,
        idle_ttl_s=idle_ttl_s,
        options={"name": name, "nbytes": nbytes, "faults": faults or Faults()},
    )


class DeclaredProbe:
    """Measures a load as the bytes the ballast it built holds."""

    device = "cpu"
    free_bytes: int | None = None

    def measure(
        self, work: Callable[[], T], settle: Callable[[], bool] = lambda: True
    ) -> tuple[T, Measured]:
        model = work()
        nbytes = int(getattr(model, "nbytes", 0))
        return model, Measured(nbytes, nbytes, 0.0)

    def release(self) -> None:
        pass

    def refresh(self) -> None:
        pass
