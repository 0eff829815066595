"""Fault injection for the simulator: what can go wrong between erpsync and MachineMetrics.

Kinds, in the order a request meets them:

- ``latency``: wait ``latency_ms`` before handling (all matching latency faults add up);
- ``error``: answer ``status`` (default 500) without handling the request;
- ``rate_limit``: answer 429 with ``Retry-After: retry_after`` without handling it;
- ``drop``: close the connection without an answer, request not handled;
- ``apply_then_fail``: handle the request (the change is made), then answer 500 instead;
- ``drop_after_apply``: handle the request, then close the connection without an answer.

The last two fire only when handling succeeded (2xx): they model "MM did it, the answer was lost",
the case that breaks naive retries. A fault may target some operations (``start``, ``stop``,
``get``, ``import``; none = all), fire only for the next ``times`` matching calls (deterministic
tests), and/or with ``probability`` drawn from the plan's seeded random generator.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

FaultKind = Literal["latency", "error", "rate_limit", "drop", "apply_then_fail", "drop_after_apply"]
FAULT_KINDS: Final = frozenset(get_args(FaultKind))
BEFORE_KINDS: Final = frozenset({"error", "rate_limit", "drop"})
AFTER_KINDS: Final = frozenset({"apply_then_fail", "drop_after_apply"})
OPERATIONS: Final = ("start", "stop", "get", "import")


@dataclass
class Fault:
    """One fault rule; see the module docstring."""

    kind: FaultKind
    operations: frozenset[str] | None = None
    status: int = 500
    retry_after: float = 1.0
    latency_ms: float = 0.0
    times: int | None = None
    probability: float = 1.0
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {sorted(FAULT_KINDS)}")
        if self.operations is not None:
            self.operations = frozenset(self.operations)
            unknown = self.operations - set(OPERATIONS)
            if unknown:
                raise ValueError(f"unknown operations {sorted(unknown)}; expected some of {OPERATIONS}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None for every matching call)")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.latency_ms < 0 or self.retry_after < 0:
            raise ValueError("latency_ms and retry_after must not be negative")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """From JSON: ``operation`` (one name) or ``operations`` (a list) select operations."""
        values = dict(data)
        if "operation" in values:
            values["operations"] = [values.pop("operation")]
        if values.get("operations") is not None:
            values["operations"] = frozenset(values["operations"])
        values.pop("fired", None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "operations": sorted(self.operations) if self.operations is not None else None,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "times": self.times,
            "probability": self.probability,
            "fired": self.fired,
        }

    def matches(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations


class FaultPlan:
    """The active faults; thread-safe; draws probabilities from one seeded generator."""

    def __init__(self, faults: Iterable[Fault] = (), seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults)
        self._rng = random.Random(seed)

    def set(self, faults: Iterable[Fault], *, seed: int | None = None, append: bool = False) -> None:
        with self._lock:
            self._faults = [*self._faults, *faults] if append else list(faults)
            if seed is not None:
                self._rng = random.Random(seed)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def before(self, operation: str) -> tuple[float, Fault | None]:
        """Seconds of latency to add, and the fault (error/rate_limit/drop) that answers instead."""
        with self._lock:
            latency = sum(f.latency_ms for f in self._fire(operation, {"latency"}, first_only=False))
            chosen = self._fire(operation, BEFORE_KINDS, first_only=True)
            return latency / 1000.0, (chosen[0] if chosen else None)

    def after(self, operation: str) -> Fault | None:
        """The fault (apply_then_fail/drop_after_apply) that replaces a successful answer."""
        with self._lock:
            chosen = self._fire(operation, AFTER_KINDS, first_only=True)
            return chosen[0] if chosen else None

    def _fire(self, operation: str, kinds: Collection[str], *, first_only: bool) -> list[Fault]:
        fired: list[Fault] = []
        for fault in self._faults:
            if fault.kind not in kinds or not fault.matches(operation):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.fired += 1
            fired.append(fault)
            if first_only:
                break
        self._faults = [f for f in self._faults if f.times is None or f.fired < f.times]
        return fired
