"""A simulated job run and how it makes parts while it runs.

Running runs make parts: one per part time of wall-clock time x ``time_scale``, counted from when
the simulator received the start; each part is scrap or nonconform with the configured shares (a
per-run generator seeded from the model's ``seed`` and the run id). A run started in setup with an
``expectedSetupTime`` (seconds, shortened by ``time_scale``) switches to production by itself once
that much time has passed (MM's "Auto Setup"). Parts made in setup are counted apart: MM's metrics
report production only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from erpsync.adapters.mm.simulator.wire import fmt, millis

BULK_PARTS: Final = 10_000


@dataclass
class Counts:
    total: int = 0
    good: int = 0
    scrap: int = 0
    nonconform: int = 0

    def metrics(self) -> dict[str, int]:
        return {
            "totalParts": self.total,
            "goodParts": self.good,
            "scrapParts": self.scrap,
            "nonconformParts": self.nonconform,
        }


@dataclass
class SimRun:
    run_id: str
    machine_id: str
    values: dict[str, Any]  # the normalised start body
    start_at: datetime
    received_at: datetime
    received_mono: float
    part_time_ms: int
    rng: random.Random
    in_setup: bool
    production_at: datetime | None = None
    production_mono: float | None = None
    end_at: datetime | None = None
    ended_mono: float | None = None
    ended_by: str | None = None
    counts: Counts = field(default_factory=Counts)
    setup_counts: Counts = field(default_factory=Counts)
    manual_counts: bool = False

    @property
    def started_in_setup(self) -> bool:
        return bool(self.values["startInSetup"])


@dataclass(frozen=True)
class PartRules:
    """How fast simulated time runs and how many parts go bad; brings runs' counts up to date."""

    time_scale: float = 1.0
    scrap_share: float = 0.02
    nonconform_share: float = 0.01

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if self.scrap_share < 0 or self.nonconform_share < 0 or self.scrap_share + self.nonconform_share > 1:
            raise ValueError("scrap_share and nonconform_share must be at least 0 and add up to at most 1")

    def end_setup_if_due(self, run: SimRun, now_mono: float) -> None:
        """Switch a run to production once its ``expectedSetupTime`` has passed.

        The setup time is in MM seconds, which ``time_scale`` shortens like part times; the switch
        is stamped with the wall-clock moment it fell on, as a sent switch is.
        """
        setup_seconds = run.values["expectedSetupTime"]
        if not run.in_setup or not setup_seconds:
            return
        real_seconds = setup_seconds / self.time_scale
        due_mono = run.received_mono + real_seconds
        if min(now_mono, run.ended_mono if run.ended_mono is not None else now_mono) < due_mono:
            return
        run.in_setup = False
        run.production_mono = due_mono
        run.production_at = max(run.start_at, millis(run.received_at + timedelta(seconds=real_seconds)))

    def produce(self, run: SimRun, now_mono: float) -> None:
        """Bring the run's counts up to ``now_mono`` (or its end)."""
        self.end_setup_if_due(run, now_mono)
        if run.manual_counts or run.part_time_ms <= 0:
            return
        end = run.ended_mono if run.ended_mono is not None else now_mono
        per_part = run.part_time_ms / 1000.0 / self.time_scale  # real seconds per part
        if run.started_in_setup:
            setup_end = run.production_mono if run.production_mono is not None else end
            self._classify(run, run.setup_counts, int((min(setup_end, end) - run.received_mono) / per_part))
        if run.production_mono is not None:
            self._classify(run, run.counts, int(max(0.0, end - run.production_mono) / per_part))

    def _classify(self, run: SimRun, counts: Counts, target: int) -> None:
        new = target - counts.total
        if new <= 0:
            return
        if new > BULK_PARTS:  # a huge time_scale: shares without a draw per part
            scrap, nonconform = round(new * self.scrap_share), round(new * self.nonconform_share)
        else:
            draws = [run.rng.random() for _ in range(new)]
            scrap = sum(d < self.scrap_share for d in draws)
            nonconform = sum(self.scrap_share <= d < self.scrap_share + self.nonconform_share for d in draws)
        counts.total += new
        counts.scrap += scrap
        counts.nonconform += nonconform
        counts.good += new - scrap - nonconform


def describe(run: SimRun) -> dict[str, Any]:
    """What the control API and the model's `runs()` show of a run."""
    v = run.values
    return {
        "run_id": run.run_id,
        "machine_id": run.machine_id,
        "job_name": v["jobName"],
        "operation_name": v["operationName"],
        "lot_name": v["lotName"],
        "part_name": v["partName"],
        "phase": "setup" if run.in_setup else "production",
        "started_in_setup": run.started_in_setup,
        "start_at": fmt(run.start_at),
        "production_at": fmt(run.production_at),
        "end_at": fmt(run.end_at),
        "ended_by": run.ended_by,
        "part_time_ms": run.part_time_ms,
        "metrics": run.counts.metrics(),
        "setup_metrics": run.setup_counts.metrics(),
        "manual_counts": run.manual_counts,
    }
