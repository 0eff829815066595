"""A no-change cycle with a long history in erpsync's own state: 1,000 vs 500,000 finished bindings.

    uv run --locked --all-extras python -m bench.state_history [--finished 1000 500000] [--pg-url ADMIN_URL]

The ERP is a VISUAL schema on PostgreSQL with `--open` open labor tickets (one per machine, so each
is a run MM has open); erpsync's state is a PostgreSQL database of its own. erpsync's own cycle binds
the open runs first (set-up, as bench.sync_bench does), then the finished history is inserted in
bulk with generate_series: per finished run a stopped binding, its start and stop actions and their
two audit rows, as years of syncing leave them. Then `erpsync sync` (the real CLI, a fresh process,
peak RSS measured by bench.procstat) runs `--repeats` no-change cycles.

Target (issue 18): the no-change cycle time and peak memory with 500,000 finished bindings within
1.2x of the same with 1,000, and no MM call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from bench.bench_sources import DEFAULT_PG
from bench.procstat import run_measured
from bench.soak import create_database, drop_database
from bench.sync_bench import CONCURRENCY, ZONE, api_requests, bind_all, simulator, visual_erp
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.tables import Cycle

HISTORY_SQL = """
INSERT INTO erpsync_run_binding (source, run_key, mm_run_id, erp_job, erp_operation, erp_machine,
    mm_machine_id, status, in_setup, payload_hash, key_generation, erp_start_at, erp_end_at,
    mm_start_at, mm_end_at, created_at, updated_at, version)
SELECT src, 'HIST' || i, src || ':' || 'HIST' || i, 'W' || (i / 10) || '/1', '10',
    'M-' || (i % 300), 'M-' || (i % 300), 'stopped', false, md5(i::text), '',
    now() - (i || ' minutes')::interval - interval '8 hours', now() - (i || ' minutes')::interval,
    now() - (i || ' minutes')::interval - interval '8 hours', now() - (i || ' minutes')::interval,
    now() - (i || ' minutes')::interval - interval '8 hours', now() - (i || ' minutes')::interval, 3
FROM generate_series(1, CAST(:n AS integer)) AS i, (SELECT CAST(:source AS text) AS src) AS s;
INSERT INTO erpsync_action (idempotency_key, kind, status, source, run_key, mm_run_id, erp_job,
    erp_operation, erp_machine, reason, payload, attempts, fencing_token, created_at, settled_at)
SELECT k.kind || ':' || src || ':' || 'HIST' || i || k.suffix, k.kind, 'succeeded', src,
    'HIST' || i, src || ':' || 'HIST' || i, 'W' || (i / 10) || '/1', '10', 'M-' || (i % 300),
    'history', '{}', 1, 1, now() - (i || ' minutes')::interval, now() - (i || ' minutes')::interval
FROM generate_series(1, CAST(:n AS integer)) AS i, (SELECT CAST(:source AS text) AS src) AS s,
    (VALUES ('start_run', ':' || 'production'), ('stop_run', '')) AS k(kind, suffix);
INSERT INTO erpsync_audit (occurred_at, action, outcome, source, erp_job, erp_operation, erp_machine,
    mm_run_id, detail)
SELECT now() - (i || ' minutes')::interval, k.kind, 'succeeded', src, 'W' || (i / 10) || '/1', '10',
    'M-' || (i % 300), src || ':' || 'HIST' || i, 'history'
FROM generate_series(1, CAST(:n AS integer)) AS i, (SELECT CAST(:source AS text) AS src) AS s,
    (VALUES ('start_run'), ('stop_run')) AS k(kind);
"""


def write_config(path: Path, erp_url: str, state_url: str, base_url: str, api_key: str) -> None:
    lines = [
        "[state]",
        f"url = {json.dumps(state_url)}",
        "[mm]",
        f"base_url = {json.dumps(base_url)}",
        f"api_key = {json.dumps(api_key)}",
        f"max_concurrency = {CONCURRENCY}",
        "rate_limit_per_second = 100000",
        "[source]",
        'kind = "infor-visual"',
        f"url = {json.dumps(erp_url)}",
        f"timezone = {json.dumps(ZONE)}",
        "[logging]",
        'level = "WARNING"',
        'format = "json"',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class _Runner:
    """What bench.sync_bench.bind_all needs: a config file."""

    def __init__(self, config: Path) -> None:
        self.config = config


def add_history(state_url: str, finished: int) -> float:
    engine = create_db_engine(state_url)
    try:
        with engine.begin() as conn:
            source = conn.execute(text("SELECT DISTINCT source FROM erpsync_run_binding")).scalar_one()
            for statement in filter(None, (s.strip() for s in HISTORY_SQL.split(";"))):
                conn.execute(text(statement), {"source": source, "n": finished})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            return float(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    finally:
        engine.dispose()


def last_cycle_seconds(state_url: str) -> float:
    engine = create_db_engine(state_url)
    try:
        with engine.connect() as conn:
            summary = conn.execute(
                select(Cycle.summary).where(Cycle.kind == "sync").order_by(Cycle.id.desc()).limit(1)
            ).scalar_one()
    finally:
        engine.dispose()
    return float(json.loads(summary or "{}")["seconds"])


def scenario(admin_url: str, erp_url: str, sim: Any, finished: int, repeats: int) -> dict[str, Any]:
    state_url, state_name = create_database(admin_url, "erpsync_bench_state")
    try:
        engine = create_db_engine(state_url)
        migrate.upgrade(engine)
        engine.dispose()
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "erpsync.toml"
            write_config(config, erp_url, state_url, sim.base_url, sim.api_key)
            bound = bind_all(_Runner(config))  # type: ignore[arg-type]
            size = add_history(state_url, finished)
            env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
            runs = []
            for _ in range(repeats):
                before = api_requests(sim)
                measured = run_measured(
                    [sys.executable, "-m", "erpsync", "--config", str(config), "sync"], env=env
                )
                if measured.returncode != 0:
                    raise RuntimeError(
                        f"erpsync sync exited {measured.returncode}: {measured.stderr[-2000:]}"
                    )
                runs.append(
                    {
                        "cycle_seconds": last_cycle_seconds(state_url),
                        "peak_mb": measured.peak_mb,
                        "wall": measured.wall,
                        "calls": api_requests(sim) - before,
                    }
                )
        result = {
            "finished": finished,
            "open_bound": bound["started"],
            "state_db_mb": round(size / 1e6, 1),
            "cycle_seconds": statistics.median(r["cycle_seconds"] for r in runs),
            "cycle_seconds_all": [round(r["cycle_seconds"], 3) for r in runs],
            "peak_mb": max(r["peak_mb"] for r in runs),
            "calls": max(r["calls"] for r in runs),
        }
        print(
            f"  {finished:>9,} finished + {bound['started']} open bindings "
            f"(state {result['state_db_mb']} MB): "
            f"no-change cycle {result['cycle_seconds']:.3f} s (median of {repeats}: "
            f"{result['cycle_seconds_all']}), peak {result['peak_mb']:.0f} MB, {result['calls']} MM calls",
            flush=True,
        )
        return result
    finally:
        drop_database(admin_url, state_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, nargs="+", default=[1_000, 500_000])
    parser.add_argument("--open", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with visual_erp(args.pg_url, args.open) as erp_url, simulator() as sim:
        for finished in args.finished:
            results.append(scenario(args.pg_url, erp_url, sim, finished, args.repeats))
    small, large = results[0], results[-1]
    ratios = {
        "cycle_time_ratio": round(large["cycle_seconds"] / small["cycle_seconds"], 2),
        "peak_memory_ratio": round(large["peak_mb"] / small["peak_mb"], 2),
    }
    ok = ratios["cycle_time_ratio"] <= 1.2 and ratios["peak_memory_ratio"] <= 1.2 and not large["calls"]
    print(
        f"{large['finished']:,} / {small['finished']:,} finished bindings: cycle time "
        f"{ratios['cycle_time_ratio']}x, peak memory {ratios['peak_memory_ratio']}x (target <= 1.2x each, "
        f"0 MM calls): {'PASS' if ok else 'FAIL'}"
    )
    if args.out is not None:
        args.out.write_text(json.dumps({"results": results, **ratios}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
