"""`erpsync serve` with one poisoned ERP row among good ones (issue 19, case 4).

Before: `CALC_END_QTY = 1E30` raised decimal.InvalidOperation out of the snapshot stream, every
cycle failed, nothing started and /readyz went 503 for good. Now the good rows start in the first
cycle, /readyz stays 200 cycle after cycle, and the bad row is listed by `erpsync quarantine list`.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from tests.integration.test_service_lifecycle import Serve, wait_for
from tests.sync_helpers import Shop, local, run_erpsync, write_config


def cycles(serve: Serve) -> list[dict[str, object]]:
    """The `sync cycle` summaries the service logged, in order."""
    found = []
    for line in serve.logs().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "sync cycle":
            found.append(entry)
    return found


def test_serve_starts_the_good_rows_and_stays_ready_with_a_poisoned_row(tmp_path: Path) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    shop = Shop(erp_url, machines=3)
    migrate.upgrade(create_db_engine(state_url))
    with shop.engine.begin() as conn:  # SQLite keeps 1E30 in VISUAL's decimal(20,8) column
        conn.execute(text('UPDATE "OPERATION" SET "CALC_END_QTY" = 1E30 WHERE "RESOURCE_ID" = \'HAAS-2\''))
    tickets = {machine: shop.fx.clock_in(op, local(7)) for machine, op in shop.ops.items()}
    with MMSimulator(seed=19) as sim:
        config = write_config(
            tmp_path / "erpsync.toml",
            erp_url,
            state_url,
            sim,
            sections={"sync": {"interval_seconds": 1}, "logging": {"level": "INFO"}},
        )
        serve = Serve(config, "poisoned", tmp_path)
        try:
            wait_for(lambda: len(cycles(serve)) >= 1, 60, "the first sync cycle")
            first = cycles(serve)[0]
            assert (first["started"], first["bad_rows"]) == (2, 1), first  # the good rows, in one cycle
            runs = sim.runs()
            assert {r: runs[r]["machine_id"] for r in runs if runs[r]["end_at"] is None} == {
                f"erp:LT{tickets['HAAS-1']}": "HAAS-1",
                f"erp:LT{tickets['HAAS-3']}": "HAAS-3",
            }
            wait_for(lambda: len(cycles(serve)) >= 3, 30, "two more cycles")
            for _ in range(3):
                status, body = serve.readyz()
                assert status == 200, body
            assert all(c["started"] == 0 and c["stopped"] == 0 for c in cycles(serve)[1:])
            listed = run_erpsync(config, "quarantine", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            (entry,) = json.loads(listed.stdout)
            assert entry["record_key"] == f"LT{tickets['HAAS-2']}"
            assert entry["status"] == "open"
            assert "CALC_END_QTY" in entry["location"]
            assert "10^9 pieces" in entry["message"]
        finally:
            serve.kill()
        assert "Traceback" not in serve.logs()
    shop.dispose()
