"""Write-back cycle benchmark: 2,000 active runs, 50 ms MM latency, bounded concurrency.

    uv run python bench/bench_writeback.py [--runs 2000] [--latency-ms 50] [--concurrency 16]
                                            [--erp-url URL] [--state-url URL] [--sample 100]

The MM simulator runs on loopback with a latency fault on get-job-run; the ERP (staging sink) and
erpsync's state are SQLite files in a temporary folder unless URLs are given. Printed:

- calls, wall time, floor (= calls x latency / concurrency: the time the MM reads alone need at
  that concurrency) and ratio = wall / floor; the target is ratio <= 1.5;
- a replay cycle (nothing changed: reads only, no ERP write, no audit row);
- a one-at-a-time baseline (concurrency 1, one ERP transaction and one state commit per run),
  ESTIMATED from a sample of `--sample` runs and scaled to `--runs`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import insert

from erpsync.adapters.erp.sinks.staging import StagingSink, install_staging
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.schemas import StartJobRun
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import RunBinding
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import DatabaseSettings, MMSettings, Settings, WritebackSettings
from erpsync.runtime.logging import configure_logging
from erpsync.service.writeback import WritebackPolicy, WritebackSummary, run_writeback


class Sim:
    """The simulator, in this process or (default) in its own, driven through /_sim/ over HTTP.

    In production MM is another machine: its CPU is not erpsync's. A simulator in this process
    would share the GIL with erpsync and inflate the wall time, so by default it gets a process.
    """

    def __init__(self, in_process: bool, call_log_limit: int = 100_000) -> None:
        self._stop: Any = None
        self._process: Any = None
        self._local: MMSimulator | None = None
        if in_process:
            self._local = MMSimulator(seed=7, call_log_limit=call_log_limit).start()
            self.base_url, self.api_key = self._local.base_url, self._local.api_key
        else:
            ctx = multiprocessing.get_context("spawn")
            queue: Any = ctx.Queue()
            self._stop = ctx.Event()
            self._process = ctx.Process(target=_serve, args=(queue, self._stop, call_log_limit), daemon=True)
            self._process.start()
            self.base_url, self.api_key = queue.get(timeout=60)
        self._http = httpx.Client(base_url=self.base_url, timeout=30)

    def set_counts(self, run_id: str, **counts: int) -> None:
        if self._local is not None:
            self._local.set_counts(run_id, **counts)
        else:
            self._http.post("/_sim/counts", json={"run_id": run_id, **counts}).raise_for_status()

    def set_latency(self, latency_ms: float | None) -> None:
        faults = (
            [Fault("latency", operations=frozenset({"get"}), latency_ms=latency_ms)] if latency_ms else []
        )
        if self._local is not None:
            self._local.set_faults(*faults)
        else:
            self._http.post("/_sim/faults", json={"faults": [f.to_dict() for f in faults]}).raise_for_status()

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every run MM has (open and ended), by run id: the simulator's `runs()`."""
        if self._local is not None:
            return self._local.runs()
        reply = self._http.get("/_sim/runs")
        reply.raise_for_status()
        runs: dict[str, dict[str, Any]] = reply.json()
        return runs

    def calls(self) -> list[dict[str, Any]]:
        """The simulator's call log (the last `call_log_limit` API calls), oldest first."""
        if self._local is not None:
            return self._local.calls()
        reply = self._http.get("/_sim/calls", timeout=120)
        reply.raise_for_status()
        calls: list[dict[str, Any]] = reply.json()
        return calls

    def close(self) -> None:
        self._http.close()
        if self._local is not None:
            self._local.stop()
        if self._process is not None:
            self._stop.set()
            self._process.join(timeout=10)


def _serve(queue: Any, stop: Any, call_log_limit: int = 100_000) -> None:
    with MMSimulator(seed=7, call_log_limit=call_log_limit) as sim:
        queue.put((sim.base_url, sim.api_key))
        stop.wait()


def mm_settings(sim: Sim, concurrency: int) -> MMSettings:
    # the rate limiter is set out of the way: the floor is about latency and concurrency only
    return MMSettings(
        base_url=sim.base_url,
        api_key=SecretStr(sim.api_key),
        max_concurrency=concurrency,
        rate_limit_per_second=100_000,
        breaker_failure_threshold=1000,
    )


def seed(sim: Sim, store: StateStore, run_ids: list[str], concurrency: int) -> None:
    """Start every run in MM (no latency yet), give it counts, and bind it as running."""
    with MMClient(mm_settings(sim, concurrency)) as client, ThreadPoolExecutor(concurrency) as pool:
        list(
            pool.map(
                lambda run_id: client.start_job_run(
                    StartJobRun(
                        erp_job_operation_run_id=run_id, erp_machine_id=f"M-{run_id}", job_name="W100"
                    )
                ),
                run_ids,
            )
        )
        list(
            pool.map(
                lambda n: sim.set_counts(run_ids[n], total=100 + n % 50, scrap=n % 3, nonconform=n % 2),
                range(len(run_ids)),
            )
        )
    rows = [
        {
            "source": "erp",
            "run_key": f"LT{n}",
            "mm_run_id": run_id,
            "erp_job": f"W{n // 10}/1",
            "erp_operation": "10",
            "erp_machine": f"MILL-{n % 40}",
            "mm_machine_id": f"M-{run_id}",
            "status": "running",
        }
        for n, run_id in enumerate(run_ids)
    ]
    with store.session() as session:
        session.execute(insert(RunBinding), rows)


def cycle(
    sim: Sim, store: StateStore, erp_url: str, concurrency: int, batch_size: int
) -> tuple[WritebackSummary, float]:
    settings = Settings(
        mm=mm_settings(sim, concurrency),
        writeback=WritebackSettings(database=DatabaseSettings(url=erp_url), batch_size=batch_size),
    )
    engine = create_db_engine(erp_url)
    sink = StagingSink(engine, settings.writeback.staging_table, batch_size=batch_size)
    with MMClient(settings.mm) as client:
        started = time.perf_counter()
        summary = run_writeback(
            SqlUnitOfWorkFactory(store), client, sink, WritebackPolicy.from_settings(settings)
        )
        wall = time.perf_counter() - started
    sink.close()
    return summary, wall


def fresh(tmp: Path, name: str, erp_url: str | None, state_url: str | None) -> tuple[str, StateStore]:
    erp = erp_url or f"sqlite:///{tmp / f'{name}-erp.db'}"
    engine = create_db_engine(erp)
    install_staging(engine, "ERPSYNC_RUN_COUNTS")
    engine.dispose()
    state_engine = create_db_engine(state_url or f"sqlite:///{tmp / f'{name}-state.db'}")
    migrate.upgrade(state_engine)
    return erp, StateStore(state_engine)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--sample", type=int, default=100, help="runs in the one-at-a-time baseline sample")
    parser.add_argument("--erp-url", help="ERP database (must be empty of the staging table's rows)")
    parser.add_argument("--state-url", help="state database (fresh; migrated here)")
    parser.add_argument(
        "--in-process-sim", action="store_true", help="run the simulator in this process (shares the GIL)"
    )
    args = parser.parse_args()
    configure_logging("WARNING", "console")

    sim = Sim(in_process=args.in_process_sim)
    print(
        f"MM simulator {'in this process' if args.in_process_sim else 'in its own process'} at {sim.base_url}"
    )
    try:
        run(args, sim)
    finally:
        sim.close()


def run(args: argparse.Namespace, sim: Sim) -> None:
    latency = args.latency_ms / 1000.0
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        run_ids = [f"bench-{n:05d}" for n in range(args.runs)]
        erp_url, store = fresh(tmp, "main", args.erp_url, args.state_url)
        seed(sim, store, run_ids, args.concurrency)
        sim.set_latency(args.latency_ms)

        summary, wall = cycle(sim, store, erp_url, args.concurrency, args.batch_size)
        floor = summary.calls * latency / args.concurrency
        print(
            f"write-back cycle: {args.runs} active runs, {args.latency_ms:.0f} ms MM latency, "
            f"concurrency {args.concurrency}, ERP batch {args.batch_size}"
        )
        print(f"  calls     {summary.calls}")
        print(f"  written   {summary.written} (failed {summary.failed}, no data {summary.no_data})")
        print(f"  wall      {wall:.2f} s")
        print(f"  floor     {floor:.2f} s  (calls x latency / concurrency)")
        print(f"  ratio     {wall / floor:.2f}  (target <= 1.50)")

        replay, replay_wall = cycle(sim, store, erp_url, args.concurrency, args.batch_size)
        print(
            f"replay cycle (nothing changed): {replay.unchanged} unchanged, wall {replay_wall:.2f} s, "
            f"ratio {replay_wall / floor:.2f}"
        )
        store.dispose()

        sample_ids = [f"base-{n:05d}" for n in range(args.sample)]
        sim.set_latency(None)
        base_erp, base_store = fresh(tmp, "baseline", None, None)
        seed(sim, base_store, sample_ids, args.concurrency)
        sim.set_latency(args.latency_ms)
        base, base_wall = cycle(sim, base_store, base_erp, concurrency=1, batch_size=1)
        base_store.dispose()
        estimate = base_wall * args.runs / max(1, base.calls)
        print(
            f"one-at-a-time baseline (concurrency 1, ERP batch 1): {base.calls} runs took {base_wall:.2f} s; "
            f"ESTIMATED for {args.runs} runs: {estimate:.1f} s ({estimate / wall:.0f}x the tuned cycle)"
        )


if __name__ == "__main__":
    main()
