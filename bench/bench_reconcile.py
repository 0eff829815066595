"""Time `reconcile` on the no-change path: 100,000 desired runs x 100,000 bindings.

Two shapes, both with nothing to do: "open" (every run active and running, one per machine,
the worst case: each binding's fingerprint is checked) and "mixed" (2,000 machines with an open
run each, 98,000 ended runs whose bindings are stopped). Run: `uv run python bench/bench_reconcile.py`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from erpsync.domain.identity import mm_run_id_for, payload_fingerprint
from erpsync.domain.lifecycle import BindingStatus, BoundRun
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperation, JobOperationRun, RunState
from erpsync.domain.reconcile import reconcile
from erpsync.observability.collector import collector_paused

SOURCE = "erp"
T0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


def build(n: int, open_runs: int) -> tuple[list[JobOperationRun], dict[str, BoundRun]]:
    mapper = MachineMapper()
    desired: list[JobOperationRun] = []
    bindings: dict[str, BoundRun] = {}
    for i in range(n):
        is_open = i < open_runs
        machine = f"M{i:06d}" if is_open else f"M{i % 2000:06d}"
        op = JobOperation(
            job_key=("W", f"{1800000 + i}", "1", "0", "0"),
            operation_seq="20",
            machine=machine,
            job_name=f"{1800000 + i}/1",
            operation_name="20",
            part_name=f"P-{i % 500}",
            description="bracket, machined",
            quantity_required=100,
            expected_setup_seconds=1800,
            ideal_part_ms=45000,
            expected_part_ms=50000,
        )
        key = f"W/{1800000 + i}/1/0/0/20/1"
        start = T0 + timedelta(seconds=i)
        run = JobOperationRun(
            run_key=key,
            operation=op,
            state=RunState.PRODUCTION if is_open else RunState.ENDED,
            start_at=start,
            end_at=None if is_open else start + timedelta(minutes=30),
        )
        desired.append(run)
        mm_machine = mapper.map(machine)
        assert mm_machine is not None
        bindings[key] = BoundRun(
            run_key=key,
            mm_run_id=mm_run_id_for(SOURCE, key),
            erp_machine=machine,
            mm_machine_id=mm_machine,
            status=BindingStatus.RUNNING if is_open else BindingStatus.STOPPED,
            in_setup=False,
            payload_hash=payload_fingerprint(run, mm_machine),
            erp_start_at=start,
            job=op.job_key_text,
            operation=op.operation_seq,
        )
    return desired, bindings


def measure(label: str, n: int, open_runs: int, repeats: int = 7) -> float:
    """Wall time and CPU time of `reconcile` alone, with the cyclic collector paused as the sync
    cycle pauses it; CPU time is steadier on a shared machine."""
    desired, bindings = build(n, open_runs)
    mapper = MachineMapper()
    now = T0 + timedelta(days=3)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        with collector_paused():  # as service/sync.py plans: every run lives until the diff is done
            plan = reconcile(
                desired,
                bindings,
                source=SOURCE,
                mapper=mapper,
                snapshot_complete=True,
                vanished_policy="flag",
                now=now,
            )
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        if plan.actions or plan.flags or plan.quarantined:
            sys.exit(f"{label}: expected no changes, got {plan.stats.as_dict()}")
    print(
        f"{label:<6} {n:>7,} desired x {len(bindings):>7,} bindings: "
        f"wall best {min(walls) * 1000:6.1f} ms / median {statistics.median(walls) * 1000:6.1f} ms, "
        f"CPU best {min(cpus) * 1000:6.1f} ms / median {statistics.median(cpus) * 1000:6.1f} ms "
        f"({repeats} runs, {plan.stats.unchanged:,} unchanged)"
    )
    return statistics.median(walls)


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    measure("open", 100_000, 100_000)
    measure("mixed", 100_000, 2_000)
