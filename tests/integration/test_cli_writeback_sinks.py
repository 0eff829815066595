"""Write-back corners through the CLI: a dry run checks the sink; switching sinks keeps each current.

Real `erpsync` subprocesses, the MM simulator over loopback HTTP, a VISUAL ERP in SQLite holding the
staging table, and erpsync's state on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.db import create_db_engine
from tests.integration.writeback_support import TABLE, staging_counts
from tests.sync_helpers import Shop, local, write_config


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(config: Path, *args: str) -> str:
    result = run(config, *args)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def outbox_counts(outbox: Path) -> list[tuple[str, int, int]]:
    """(run id, total, good) of every row of every outbox file, oldest file first."""
    rows = []
    for path in sorted(outbox.glob("erpsync_counts_*.csv")):
        with path.open(encoding="utf-8", newline="") as fh:
            rows += [(r["RUN_ID"], int(r["TOTAL_QTY"]), int(r["GOOD_QTY"])) for r in csv.DictReader(fh)]
    return rows


def sink_counts(state_url: str) -> dict[str, tuple[Any, ...]]:
    engine = create_db_engine(state_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT sink, last_total_parts, last_good_parts, counts_in_doubt FROM erpsync_sink_counts"
                )
            )
            return {r.sink: (r.last_total_parts, r.last_good_parts, r.counts_in_doubt) for r in rows}
    finally:
        engine.dispose()


def test_dry_run_checks_the_sink_and_a_switched_sink_gets_current_counts(
    tmp_path: Path, database_url: str
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    outbox = tmp_path / "outbox"
    shop = Shop(erp_url, machines=1)
    shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
    run_id = "erp:LT1"
    with MMSimulator(machines={"HAAS-1"}, seed=21) as sim:

        def configure(**writeback: str) -> Path:
            return write_config(
                tmp_path / "erpsync.toml", erp_url, database_url, sim, sections={"writeback": writeback}
            )

        config = configure(sink="staging")
        ok(config, "db", "upgrade")
        assert "started 1" in ok(config, "sync")
        sim.set_counts(run_id, total=10, scrap=1)

        # the staging table is not installed yet: the dry run says so instead of "1 would be written"
        dry = run(config, "writeback", "--dry-run")
        assert dry.returncode == 2, dry.stdout + dry.stderr
        assert "NOT ready" in dry.stderr and TABLE in dry.stderr and "install-staging" in dry.stderr
        assert "1 to write once the sink is ready" in dry.stdout and "would be written" not in dry.stdout
        assert "Traceback" not in dry.stderr
        report = json.loads(run(config, "writeback", "--dry-run", "--json").stdout)
        assert report["summary"]["sink_ready"] is False and report["summary"]["would_write"] == 1

        ok(config, "erp", "install-staging")
        ready = ok(config, "writeback", "--dry-run")
        assert f"sink staging is ready: staging table {TABLE}" in ready and "1 would be written" in ready

        ok(config, "writeback")
        assert staging_counts(shop.engine)[run_id] == (10, 9, 1, 0)

        # switched to the CSV outbox: it gets the current counts although staging already has them
        config = configure(sink="csv", outbox_dir=str(outbox))
        assert "1 written" in ok(config, "writeback")
        assert outbox_counts(outbox) == [(run_id, 10, 9)]
        sim.set_counts(run_id, total=12, scrap=1)
        ok(config, "writeback")
        assert outbox_counts(outbox) == [(run_id, 10, 9), (run_id, 12, 11)]
        assert staging_counts(shop.engine)[run_id] == (10, 9, 1, 0)  # not the configured sink

        # back to staging: compared with what staging holds (10), so 12 is written, no conflict
        config = configure(sink="staging")
        back = ok(config, "writeback")
        assert "1 written" in back and "0 conflicts" in back, back
        assert staging_counts(shop.engine)[run_id] == (12, 11, 1, 0)
        assert sink_counts(database_url) == {"staging": (12, 11, None), "csv": (12, 11, None)}
        assert "0 written" in ok(config, "writeback")  # and nothing again
    shop.dispose()
