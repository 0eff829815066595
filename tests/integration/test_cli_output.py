"""What people read: piped output is never cut, counts are words (not Python reprs).

Without a terminal (a pipe, a redirect, a ticket, `| grep`), tables are tab-separated lines with
every value whole; on a terminal they are Rich tables. CliRunner is not a terminal.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from erpsync.adapters.erp.visual_schema import create_visual_schema
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.db import create_db_engine
from erpsync.cli.app import app
from erpsync.demo.visual_fixture import VisualFixture
from tests.sync_helpers import local, write_config

runner = CliRunner()
LONG_MACHINE = "5-AXIS MACHINING CENTER BAY 7 (HERMLE C42U)"
LONG_JOB = "WO-2026-11-CUSTOMER-ACME-0042"


def erpsync(config: Path, *args: str) -> str:
    result = runner.invoke(app, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def rows(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.splitlines()]


def test_piped_tables_keep_every_value_whole(tmp_path: Path) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    engine = create_db_engine(erp_url)
    create_visual_schema(engine)
    fx = VisualFixture(engine)
    fx.add_part("P-100", "Bracket, 6061")
    for machine in ("HAAS-1", LONG_MACHINE):
        fx.add_resource(machine)
    wo = fx.add_work_order(LONG_JOB, "1", part_id="P-100", desired_qty=250)
    fx.clock_in(fx.add_operation(wo, 10, "HAAS-1", run=0.05, run_type="HRS/PC"), local(8))
    fx.clock_in(fx.add_operation(wo, 20, LONG_MACHINE, run=0.05, run_type="HRS/PC"), local(8))
    engine.dispose()
    with MMSimulator(machines={"HAAS-1"}, seed=3) as sim:
        config = write_config(tmp_path / "erpsync.toml", erp_url, f"sqlite:///{tmp_path / 's.db'}", sim)
        erpsync(config, "db", "upgrade")
        erpsync(config, "sync")

        audit = rows(erpsync(config, "audit"))
        assert audit[0] == [
            "when (UTC)",
            "action",
            "outcome",
            "job",
            "op",
            "machine",
            "MM run",
            "why",
            "error",
        ]
        assert all(len(row) == 9 for row in audit)
        quarantined = [row for row in audit if row[2] == "quarantined"]
        assert quarantined, audit
        assert any(LONG_MACHINE in row[8] and len(row[8]) > 120 for row in quarantined), quarantined
        assert any(row[3] == f"{LONG_JOB}/1" for row in audit), audit

        machines = {row[0]: row for row in rows(erpsync(config, "machines"))[1:]}
        assert set(machines) == {"HAAS-1", LONG_MACHINE}
        assert machines[LONG_MACHINE][1] == LONG_MACHINE
        rejected = machines[LONG_MACHINE][4]
        assert f"No machine has ERP machine id '{LONG_MACHINE}'" in rejected, rejected
        assert rejected.endswith("fix it in the ERP or the mapping")

        entries = rows(erpsync(config, "quarantine", "list"))
        assert entries[0][:6] == ["id", "source", "record", "where", "error", "message"]
        (entry,) = entries[1:]
        assert LONG_MACHINE in entry[5] and entry[5].endswith("fix it in the ERP or the mapping"), entry

        status = erpsync(config, "status")
        assert "runs by status:    failed 1, running 1" in status, status
        assert "actions by status: quarantined 1, succeeded 1" in status
        assert "{" not in status and "'" not in status
