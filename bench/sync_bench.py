"""Sync scenarios: a no-change cycle over N ERP runs, and a first cycle that starts N new runs.

erpsync runs as the real CLI (`python -m erpsync --config X sync`), measured by bench.procstat;
the ERP is a VISUAL schema in its own PostgreSQL database (built by bench.bench_sources), erpsync's
state an embedded SQLite file (the default deployment), MM the simulator in its own process
(bench.bench_writeback.Sim). The naive baseline (bench.naive) gets a simulator of its own.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from bench import bench_sources
from bench.bench_writeback import Sim
from bench.naive import naive_cycle
from bench.procstat import Measured, run_measured
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.machines import SqlMachines
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Cycle, utcnow
from erpsync.bootstrap import open_sync
from erpsync.config import load_settings
from erpsync.domain.model import JobOperationRun
from erpsync.domain.reconcile import reconcile
from erpsync.observability.collector import collector_paused

ZONE = bench_sources.ZONE
CONCURRENCY = 16
SUMMARY = re.compile(r"started (\d+), stopped (\d+)")


# -- the simulator, driven over its control endpoints ---------------------------------------------
def set_latency(sim: Sim, latency_ms: float | None) -> None:
    """Latency on every MM operation (none: no fault at all)."""
    faults = [{"kind": "latency", "latency_ms": latency_ms}] if latency_ms else []
    httpx.post(f"{sim.base_url}/_sim/faults", json={"faults": faults}, timeout=30).raise_for_status()


def api_requests(sim: Sim) -> int:
    """API requests the simulator has handled so far (control calls not counted)."""
    response = httpx.get(f"{sim.base_url}/_sim/stats", timeout=30)
    response.raise_for_status()
    return int(response.json()["requests"])


def reset(sim: Sim) -> None:
    httpx.post(f"{sim.base_url}/_sim/reset", timeout=60).raise_for_status()


@contextmanager
def simulator() -> Iterator[Sim]:
    sim = Sim(in_process=False)
    try:
        yield sim
    finally:
        sim.close()


@contextmanager
def visual_erp(admin_url: str, runs: int) -> Iterator[str]:
    """A PostgreSQL VISUAL database with `runs` open labor tickets, each on its own machine.

    MM keeps one open run per machine, so N open runs need N machines: bench_sources builds
    `n % MACHINES`, and MACHINES is set to `runs` for the build.
    """
    previous = bench_sources.MACHINES
    bench_sources.MACHINES = runs
    try:
        url, name = bench_sources.build_pg(admin_url, runs)
    finally:
        bench_sources.MACHINES = previous
    try:
        yield url
    finally:
        bench_sources.drop_pg(admin_url, name)


# -- erpsync ----------------------------------------------------------------------------------------
class ErpsyncRunner:
    """A state database and config file; runs `erpsync sync` as a measured subprocess."""

    def __init__(self, folder: Path, erp_url: str, sim: Sim, name: str = "state") -> None:
        self.state_path = folder / f"{name}.db"
        self.state_url = f"sqlite:///{self.state_path}"
        self.config = folder / f"{name}.toml"
        self.config.write_text(
            "\n".join(
                [
                    "[state]",
                    f"url = {json.dumps(self.state_url)}",
                    "[mm]",
                    f"base_url = {json.dumps(sim.base_url)}",
                    f"api_key = {json.dumps(sim.api_key)}",
                    f"max_concurrency = {CONCURRENCY}",
                    "rate_limit_per_second = 100000",
                    "breaker_failure_threshold = 1000",
                    "[source]",
                    'kind = "infor-visual"',
                    f"url = {json.dumps(erp_url)}",
                    f"timezone = {json.dumps(ZONE)}",
                    "[logging]",
                    'level = "WARNING"',
                    'format = "json"',
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        self.fresh()

    def fresh(self) -> None:
        """An empty, migrated state database."""
        self.state_path.unlink(missing_ok=True)
        engine = create_db_engine(self.state_url)
        migrate.upgrade(engine)
        engine.dispose()

    def sync(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
        measured = run_measured(
            [sys.executable, "-m", "erpsync", "--config", str(self.config), "sync"], env=env
        )
        if measured.returncode != 0:
            raise RuntimeError(f"erpsync sync exited {measured.returncode}: {measured.stderr[-3000:]}")
        return {**_outcome(measured), "cycle_seconds": self.last_cycle_seconds()}

    def last_cycle_seconds(self) -> float:
        """The reconcile cycle's own duration, as erpsync recorded it (process start-up excluded)."""
        store = StateStore(create_db_engine(self.state_url))
        try:
            with store.session() as session:
                summary = session.scalars(
                    select(Cycle.summary).where(Cycle.kind == "sync").order_by(Cycle.id.desc()).limit(1)
                ).one()
        finally:
            store.dispose()
        return float(json.loads(summary or "{}")["seconds"])


def _outcome(measured: Measured) -> dict[str, Any]:
    found = SUMMARY.search(measured.stdout)
    return {
        "wall": measured.wall,
        "peak_mb": measured.peak_mb,
        "cpu_seconds": measured.cpu_seconds,
        "summary": measured.stdout.strip().splitlines()[-1] if measured.stdout.strip() else "",
        "started": int(found.group(1)) if found else None,
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median cycle time, plus every run's figures and the worst peak."""
    ordered = sorted(runs, key=lambda r: r["cycle_seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["cycle_seconds_all"] = [round(r["cycle_seconds"], 3) for r in runs]
    chosen["wall_all"] = [round(r["wall"], 3) for r in runs]
    chosen["peak_mb"] = max(r["peak_mb"] for r in runs)
    chosen["calls"] = max(r["calls"] for r in runs)
    return chosen


# -- scenarios --------------------------------------------------------------------------------------
class _Leader:
    """The fence of a set-up step that no other actor competes with."""

    token = 1

    def is_current(self) -> bool:
        return True

    def check(self, session: Any) -> None:
        return None


class _AcceptingMM:
    """An MM that applies every start and stop at once, in-process (set-up only, no HTTP)."""

    def start_job_run(self, request: Any) -> None:
        return None

    def stop_job_run(self, request: Any) -> None:
        return None

    def get_job_run(self, run_id: str) -> None:
        return None


def bind_all(runner: ErpsyncRunner) -> dict[str, Any]:
    """Set-up for no-change: erpsync's own cycle binds every ERP run, MM answered in-process.

    A real first sync of 100,000 runs would take minutes of MM calls and is not what is measured;
    this runs the same `SyncService.run_cycle` (plan, journal, dispatch, settle), so the bindings
    are exactly the ones a real sync leaves.
    """
    settings = load_settings(runner.config)
    store = StateStore.from_settings(settings.state)
    began = time.perf_counter()
    try:
        service = open_sync(settings, store, _Leader(), _AcceptingMM())  # type: ignore[arg-type]
        try:
            summary = service.run_cycle()
        finally:
            service.source.close()
    finally:
        store.dispose()
    return {"started": summary.started, "seconds": time.perf_counter() - began}


def breakdown(runner: ErpsyncRunner) -> dict[str, float]:
    """Where a no-change cycle's time goes, each part timed alone in this process.

    In the cycle the ERP read and the bindings load overlap (two threads); here they run one after
    the other, so the parts add up to more than the cycle. The garbage collector is paused as in
    the cycle (`SyncService.compute_plan`).
    """
    settings = load_settings(runner.config)
    store = StateStore.from_settings(settings.state)
    service = open_sync(settings, store, _Leader(), _AcceptingMM())  # type: ignore[arg-type]
    parts: dict[str, float] = {}
    try:
        with collector_paused():
            began = time.perf_counter()
            runs = [item for item in service.source.read_runs() or () if isinstance(item, JobOperationRun)]
            parts["ERP read (source rows -> runs)"] = time.perf_counter() - began
            began = time.perf_counter()
            bindings, rejected = service._load_state()
            parts["bindings load (state DB)"] = time.perf_counter() - began
            began = time.perf_counter()
            plan = reconcile(runs, bindings, **service._policy(utcnow(), True, rejected))
            parts["reconcile (pure diff)"] = time.perf_counter() - began
            began = time.perf_counter()
            with store.session() as session:
                SqlMachines(session).note(service.machines_seen(runs), utcnow())
            parts["machines seen (state DB)"] = time.perf_counter() - began
            assert not plan.actions
    finally:
        service.source.close()
        store.dispose()
    return parts


def no_change(admin_url: str, runs: int, repeats: int = 3) -> dict[str, Any]:
    """Every run bound first (set-up), then `repeats` no-change syncs are measured."""
    result: dict[str, Any] = {"runs": runs}
    with tempfile.TemporaryDirectory() as tmp, visual_erp(admin_url, runs) as erp_url, simulator() as sim:
        runner = ErpsyncRunner(Path(tmp), erp_url, sim)
        setup = bind_all(runner)
        print(f"  set-up: {setup['started']:,} runs bound in {setup['seconds']:.1f} s", flush=True)
        if setup["started"] != runs:
            raise RuntimeError(f"set-up bound {setup['started']} runs, expected {runs}")
        result["setup"] = setup
        measured = []
        for _ in range(repeats):
            before = api_requests(sim)
            run = runner.sync()
            run["calls"] = api_requests(sim) - before
            measured.append(run)
            print(
                f"  no-change sync: {run['calls']} calls, cycle {run['cycle_seconds']:.2f} s, "
                f"process {run['wall']:.2f} s, peak {run['peak_mb']:.0f} MB",
                flush=True,
            )
        result["erpsync"] = _median_run(measured)
        result["breakdown"] = breakdown(runner)
        print(
            "  breakdown: " + ", ".join(f"{k} {v:.2f} s" for k, v in result["breakdown"].items()), flush=True
        )
        with simulator() as naive_sim:
            # the loop's previous cycle (unmeasured, concurrent): MM holds its runs, as in steady state
            naive_cycle(erp_url, naive_sim.base_url, naive_sim.api_key, ZONE, workers=CONCURRENCY)
            before = api_requests(naive_sim)
            base = naive_cycle(erp_url, naive_sim.base_url, naive_sim.api_key, ZONE)
            result["baseline"] = {
                "calls": api_requests(naive_sim) - before,
                "wall": base.wall,
                "failures": base.failures,
            }
        print(f"  naive baseline: {base.calls:,} calls one at a time, {base.wall:.1f} s", flush=True)
    return result


def new_runs(admin_url: str, runs: int, latency_ms: float, repeats: int = 3) -> dict[str, Any]:
    """A first sync that starts `runs` new runs at `latency_ms` per MM call (fresh state each time)."""
    latency = latency_ms / 1000
    result: dict[str, Any] = {"runs": runs, "latency_ms": latency_ms, "concurrency": CONCURRENCY}
    with tempfile.TemporaryDirectory() as tmp, visual_erp(admin_url, runs) as erp_url, simulator() as sim:
        runner = ErpsyncRunner(Path(tmp), erp_url, sim)
        measured = []
        for attempt in range(repeats):
            if attempt:
                reset(sim)
                runner.fresh()
            set_latency(sim, latency_ms)
            before = api_requests(sim)
            run = runner.sync()
            run["calls"] = api_requests(sim) - before
            if run["started"] != runs:
                raise RuntimeError(f"sync started {run['started']} runs, expected {runs}")
            measured.append(run)
            print(
                f"  erpsync: {run['calls']:,} calls, cycle {run['cycle_seconds']:.2f} s, "
                f"process {run['wall']:.2f} s, peak {run['peak_mb']:.0f} MB",
                flush=True,
            )
        chosen = _median_run(measured)
        chosen["floor"] = chosen["calls"] * latency / CONCURRENCY
        result["erpsync"] = chosen
        with simulator() as naive_sim:
            set_latency(naive_sim, latency_ms)
            before = api_requests(naive_sim)
            base = naive_cycle(erp_url, naive_sim.base_url, naive_sim.api_key, ZONE)
            calls = api_requests(naive_sim) - before
            result["baseline"] = {
                "calls": calls,
                "wall": base.wall,
                "failures": base.failures,
                "floor": calls * latency,
            }
        print(f"  naive baseline: {calls:,} calls one at a time, {base.wall:.1f} s", flush=True)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)
