"""Fault trials: the service keeps working while MM misbehaves or the ERP connection is cut.

- MM faults: 30% of MM calls fail while armed (5xx, 429 with Retry-After, dropped connections,
  answers slower than the client's 1 s read timeout, and calls applied by MM whose answer is lost:
  500 after applying, connection dropped after applying). VISUAL ERP in SQLite.
- ERP cuts: the VISUAL ERP is PostgreSQL behind tests/campaign/pgproxy.py, which cuts connections
  inside transactions (source reads and write-back transactions alike); MM behaves.
A trial: arm the faults, operators clock in/out and MM counts parts, the running service works
for 1-2 s while MM counts parts every 0.1-0.4 s, disarm, make backed-off retries due, wait until every
invariant holds. A violation ends the part: its world is kept as evidence.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.campaign.pgproxy import CuttingProxy
from tests.campaign.world import CampaignWorld

MM_FAULTS: list[dict[str, Any]] = [
    {"kind": "error", "status": 503, "probability": 0.10},
    {"kind": "rate_limit", "retry_after": 0.05, "probability": 0.08},
    {"kind": "drop", "probability": 0.05},
    {"kind": "apply_then_fail", "probability": 0.08},
    {"kind": "drop_after_apply", "probability": 0.04},
]
TIMEOUT_FAULT = {"kind": "latency", "latency_ms": 1500, "probability": 0.03}  # > mm.read_timeout_seconds
MM_SETTINGS: dict[str, Any] = {"read_timeout_seconds": 1, "max_attempts": 4}


@dataclass
class FaultTrial:
    part: str
    index: int
    changes: list[str]
    converge_seconds: float
    seconds: float
    violations: list[str] = field(default_factory=list)


@dataclass
class FaultTally:
    """What was injected: MM calls seen while armed and how many failed, by kind."""

    armed_calls: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)

    @property
    def injected(self) -> int:
        return sum(self.by_kind.values())


def _trials(
    world: CampaignWorld,
    rng: random.Random,
    part: str,
    count: int,
    arm: Callable[[], None],
    disarm: Callable[[], None],
) -> list[FaultTrial]:
    records = []
    for index in range(count):
        began = time.monotonic()
        arm()
        changes = world.floor.operate(rng, rng.randint(1, 3))
        window = time.monotonic() + rng.uniform(1.0, 2.0)
        while time.monotonic() < window:  # MM counts on while the faults hit erpsync
            world.floor.count_parts(world.sim, rng)
            time.sleep(rng.uniform(0.1, 0.4))
        disarm()
        world.retries_due_now()
        found, waited = world.converge()
        records.append(
            FaultTrial(part, index, changes, round(waited, 2), round(time.monotonic() - began, 2), found)
        )
        if found:
            break  # the evidence stays in the world's folder; later trials would only repeat it
    return records


def mm_fault_trials(folder: Path, count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    world = CampaignWorld(folder, seed, latency_ms=20, **MM_SETTINGS)
    world.converge()
    tally = FaultTally()
    mark = [0]

    def arm() -> None:
        mark[0] = len(world.sim.calls())
        world.sim.set_faults(
            *MM_FAULTS, TIMEOUT_FAULT, {"kind": "latency", "latency_ms": 20}, seed=rng.randrange(1 << 30)
        )

    def disarm() -> None:
        calls = world.sim.calls()[mark[0] :]
        fired = {f["kind"]: f["fired"] for f in world.sim.faults.snapshot() if f["probability"] < 1}
        world.base_faults()
        tally.armed_calls += len(calls)
        tally.by_kind.update({k: n for k, n in fired.items() if k != "latency"})
        tally.by_kind["timeout (1.5 s answer, 1 s read timeout)"] += fired.get("latency", 0)

    try:
        records = _trials(world, rng, "mm-faults", count, arm, disarm)
    except BaseException:
        world.abort()
        raise
    calls = len(world.sim.calls())  # every call MM saw, armed or not: the overall rate's base
    final = world.close()
    return {
        "trials": [asdict(r) for r in records],
        "final_violations": final,
        "calls": calls,
        "armed_calls": tally.armed_calls,
        "injected": dict(tally.by_kind),
        "rate": tally.injected / max(1, tally.armed_calls),
    }


def erp_cut_trials(
    folder: Path, count: int, seed: int, pg_url: str, probability: float = 0.25
) -> dict[str, Any]:
    rng = random.Random(seed)
    proxy = CuttingProxy(seed=seed)
    try:
        world = CampaignWorld(folder, seed, latency_ms=20, erp_url=pg_url, source_url=proxy.url_for(pg_url))
        try:
            world.converge()
            records = _trials(world, rng, "erp-cuts", count, lambda: proxy.arm(probability), proxy.disarm)
        except BaseException:
            world.abort()
            raise
        final = world.close()
    finally:
        proxy.close()
    return {
        "trials": [asdict(r) for r in records],
        "final_violations": final,
        "cut_probability": probability,
        "proxy": asdict(proxy.stats),
    }
