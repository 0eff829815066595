"""Source read benchmark: 100,000 runs from PostgreSQL (infor-visual preset) and from a CSV export.

    uv run python bench/bench_sources.py [--rows 100000] [--batch-size 5000] [--pg-url ADMIN_URL]

Creates its own PostgreSQL database (dropped at the end, also on failure) with the VISUAL schema:
`--rows` work orders, one operation each, one open labor ticket each; writes a VISUAL operations CSV
with `--rows` in-progress operations. Each read runs in a fresh process so its peak RSS is its own.
Printed per source: rows/s, RSS at 10k / 50k / 100k rows read (flat = streaming works), peak RSS.
Target: peak RSS under 300 MB, flat as rows grow.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from erpsync.adapters.erp.csv_source import CsvSource
from erpsync.adapters.erp.visual_schema import (
    LABOR_TICKET,
    OPERATION,
    SHOP_RESOURCE,
    WORK_ORDER,
    create_visual_schema,
)
from erpsync.adapters.erp.visual_source import VisualSource
from erpsync.config import CsvSettings, SourceSettings
from erpsync.demo.visual_fixture import (
    OperationKey,
    VisualFixture,
    WorkOrderKey,
    labor_ticket_values,
    operation_values,
    work_order_values,
)
from erpsync.domain.model import JobOperationRun

DEFAULT_PG = os.environ.get("ERPSYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHECKPOINTS = (10_000, 50_000, 100_000)
MACHINES = 200
ZONE = "America/Chicago"  # a real zone: local -> UTC conversion is part of the cost
CHUNK = 10_000


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    """Peak resident set size (VmHWM) of this process image in MB.

    Not ru_maxrss: Linux carries that across fork+exec, so a spawned reader would report the
    parent's peak (the fixture builder) instead of its own.
    """
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def build_pg(admin_url: str, rows: int) -> tuple[str, str]:
    """Create the bench database and fill it; returns (url, database name)."""
    name = f"erpsync_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    create_visual_schema(engine)
    fixture = VisualFixture(engine)
    fixture.insert(SHOP_RESOURCE, [{"ID": f"M{m:03d}"} for m in range(MACHINES)])
    start = datetime(2026, 5, 1, 6, 0)
    for offset in range(0, rows, CHUNK):
        wos, ops, tickets = [], [], []
        for n in range(offset, min(rows, offset + CHUNK)):
            key = WorkOrderKey("W", f"{1_800_000 + n}")
            op = OperationKey(key, 10)
            wos.append(work_order_values(key, site_id="MAIN", DESIRED_QTY=Decimal(100), PART_ID=None))
            ops.append(
                operation_values(
                    op,
                    f"M{n % MACHINES:03d}",
                    site_id="MAIN",
                    SETUP_HRS=Decimal("0.5"),
                    RUN=Decimal("0.25"),
                    RUN_TYPE="MIN/PC",
                    CALC_END_QTY=Decimal(100),
                )
            )
            tickets.append(
                labor_ticket_values(
                    n + 1, op, site_id="MAIN", ticket_type="R", clock_in=start + timedelta(seconds=n)
                )
            )
        fixture.insert(WORK_ORDER, wos)
        fixture.insert(OPERATION, ops)
        fixture.insert(LABOR_TICKET, tickets)
    with engine.begin() as conn:
        conn.execute(text('ANALYZE "LABOR_TICKET"'))
    engine.dispose()
    return url, name


def drop_pg(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def build_csv(folder: Path, rows: int) -> Path:
    """A VISUAL operations export with `rows` in-progress operations (QTY_GOOD > 0)."""
    path = folder / "VISUAL - Work Order Operations Data.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["WORKORDER_TYPE", "WORKORDER_BASE_ID", "WORKORDER_LOT_ID", "WORKORDER_SUB_ID", "SEQUENCE_NO",
             "RESOURCE_ID", "OP_DESCRIPTION", "CALC_END_QTY", "QTY_GOOD", "Run_Complete", "SETUP_HRS",
             "RUN", "RUN_TYPE", "STATUS", "DESCRIPTION"]
        )  # fmt: skip
        for n in range(rows):
            writer.writerow(
                ["W", 1_800_000 + n, 1, 0, 10, f"M{n % MACHINES:03d}", "Mill, rough", "100.00000000",
                 n % 50 + 1, "No", "0.500", "0.25", "MIN/PC", "R", 'Bracket "A", 6in']
            )  # fmt: skip
    old = time.time() - 60
    os.utime(path, (old, old))
    return path


def measure(kind: str, target: str, batch_size: int, queue: Any) -> None:
    """Read every run in this (fresh) process; report timings and memory through `queue`."""
    if kind == "postgresql":
        settings = SourceSettings(url=target, kind="infor-visual", batch_size=batch_size, timezone=ZONE)
        source: Any = VisualSource(settings)
    else:
        settings = SourceSettings(
            kind="infor-visual-csv",
            batch_size=batch_size,
            csv=CsvSettings(path=Path(target), settle_seconds=0),
        )
        source = CsvSource(settings)
    baseline = rss_mb()
    marks: dict[int, float] = {}
    runs = 0
    started = time.perf_counter()
    snapshot = source.read_runs()
    for item in snapshot:
        if isinstance(item, JobOperationRun):
            runs += 1
            if runs in CHECKPOINTS:
                marks[runs] = rss_mb()
    elapsed = time.perf_counter() - started
    source.close()
    queue.put(
        {
            "runs": runs,
            "rows_read": snapshot.stats.rows_read,
            "seconds": elapsed,
            "baseline_mb": baseline,
            "marks": marks,
            "peak_mb": peak_mb(),
        }
    )


def run_measure(kind: str, target: str, batch_size: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=measure, args=(kind, target, batch_size, queue))
    process.start()
    result: dict[str, Any] = queue.get(timeout=1800)
    process.join()
    return result


def report(label: str, result: dict[str, Any]) -> None:
    rate = result["rows_read"] / result["seconds"] if result["seconds"] else float("inf")
    marks = ", ".join(f"{n // 1000}k: {mb:.0f} MB" for n, mb in sorted(result["marks"].items()))
    print(f"{label}")
    print(f"  runs read:    {result['runs']:,} ({result['rows_read']:,} rows) in {result['seconds']:.2f} s")
    print(f"  throughput:   {rate:,.0f} rows/s")
    print(f"  RSS:          start {result['baseline_mb']:.0f} MB; {marks}")
    verdict = "OK" if result["peak_mb"] < 300 else "OVER TARGET"
    print(f"  peak RSS:     {result['peak_mb']:.0f} MB (target < 300 MB: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="admin URL of a PostgreSQL server")
    args = parser.parse_args()

    print(f"building {args.rows:,} work orders / operations / open labor tickets in PostgreSQL ...")
    started = time.perf_counter()
    url, name = build_pg(args.pg_url, args.rows)
    try:
        print(f"  built in {time.perf_counter() - started:.1f} s")
        report(
            "PostgreSQL, infor-visual preset (server-side cursor)",
            run_measure("postgresql", url, args.batch_size),
        )
    finally:
        drop_pg(args.pg_url, name)
        print(f"  dropped database {name}")

    with tempfile.TemporaryDirectory() as tmp:
        path = build_csv(Path(tmp), args.rows)
        size = path.stat().st_size / 1e6
        print(f"wrote {args.rows:,}-row CSV export ({size:.1f} MB)")
        report("CSV, infor-visual-csv preset", run_measure("csv", str(path), args.batch_size))


if __name__ == "__main__":
    main()
