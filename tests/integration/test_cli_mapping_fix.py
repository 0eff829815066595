"""IT fixes an unknown machine the documented way, through the CLI only (no hand SQL).

Tickets on DEBURR and SAW; MM knows neither, both starts are refused and quarantined. IT maps
them (`machines.overrides`) to machines MM knows. `quarantine retry` re-plans the DEBURR start
from the ERP's current row and the new mapping: the next sync starts it on DEBURR-BENCH. The SAW
entry is discarded (stop trying): sync leaves it alone and raises no false "SAW-2 unknown";
`resync --run` then starts it on SAW-2. Views, `machines` and `audit` show the current MM ids and
the why, erpsync's own quarantine of a later job on the refused PRESS included. State on SQLite,
PostgreSQL and MariaDB; MM is the simulator over loopback HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.db import create_db_engine
from tests.sync_helpers import Shop, local, write_config


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "1000"}
    return subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def ok(config: Path, *args: str) -> str:
    result = run(config, *args)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def as_json(config: Path, *args: str) -> Any:
    return json.loads(ok(config, *args, "--json"))


def open_runs(state_url: str) -> dict[str, tuple[str, str, str]]:
    engine = create_db_engine(state_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT mm_run_id, erp_machine, mm_machine_id, status FROM v_erpsync_open_runs")
            )
            return {r.mm_run_id: (r.erp_machine, r.mm_machine_id, r.status) for r in rows}
    finally:
        engine.dispose()


def test_a_mapping_fix_done_the_documented_way_just_works(tmp_path: Path, database_url: str) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=0)
    fx = shop.fx
    ops = {}
    for n, machine in enumerate(("DEBURR", "SAW", "PRESS", "PRESS-2"), start=1):
        resource = machine.removesuffix("-2")
        if resource == machine:
            fx.add_resource(machine, f"{machine} station")
        wo = fx.add_work_order(f"3000{n}", "1", part_id="P-100", desired_qty=40)
        ops[machine] = fx.add_operation(wo, 10, resource, setup_hrs=0.5, run=0.1, run_type="HRS/PC")
    deburr = f"erp:LT{fx.clock_in(ops['DEBURR'], local(8))}"
    saw = f"erp:LT{fx.clock_in(ops['SAW'], local(8, 5))}"
    press = fx.clock_in(ops["PRESS"], local(8, 10))  # PRESS stays unknown to MM
    with MMSimulator(machines={"DEBURR-BENCH", "SAW-2"}, seed=16) as sim:
        config = write_config(tmp_path / "erpsync.toml", erp_url, database_url, sim)
        ok(config, "db", "upgrade")

        assert "quarantined 3" in ok(config, "sync")
        assert sim.runs() == {}
        entries = {e["record_key"]: e for e in as_json(config, "quarantine", "list")}
        assert set(entries) == {deburr, saw, f"erp:LT{press}"}
        # the next job on PRESS is quarantined by erpsync itself: MM refused the machine already
        fx.clock_out(press, local(9))
        press_next = f"erp:LT{fx.clock_in(ops['PRESS-2'], local(9, 5))}"
        machines = {m["erp_machine"]: m for m in as_json(config, "machines")}
        assert machines["DEBURR"]["rejected_at"] is not None

        # the fix the message asks for: map the resources to machines MM knows
        with config.open("a", encoding="utf-8") as f:
            f.write('\n[machines.overrides]\nDEBURR = "DEBURR-BENCH"\nSAW = "SAW-2"\n')

        retried = ok(config, "quarantine", "retry", str(entries[deburr]["id"]))
        assert "DEBURR-BENCH" in retried and "re-armed" in retried, retried
        machines = {m["erp_machine"]: m for m in as_json(config, "machines")}
        assert machines["DEBURR"]["mm_machine_id"] == "DEBURR-BENCH"
        assert machines["DEBURR"]["rejected_at"] is None
        ok(config, "quarantine", "discard", str(entries[saw]["id"]), "--reason", "started by hand")

        synced = ok(config, "sync")
        assert "recovered 1" in synced, synced
        runs = sim.runs()
        assert set(runs) == {deburr}
        assert runs[deburr]["machine_id"] == "DEBURR-BENCH" and runs[deburr]["end_at"] is None
        assert open_runs(database_url) == {deburr: ("DEBURR", "DEBURR-BENCH", "running")}
        # the discarded SAW entry is left alone, and no false "SAW-2 is unknown" entry appears
        still_open = as_json(config, "quarantine", "list")
        assert [(e["record_key"], e["error_class"]) for e in still_open] == [
            (f"erp:LT{press}", "mm_start_run"),
            (press_next.removeprefix("erp:"), "unknown_machine"),
        ]
        machines = {m["erp_machine"]: m for m in as_json(config, "machines")}
        assert machines["SAW"]["mm_machine_id"] == "SAW-2" and machines["SAW"]["rejected_at"] is None

        ok(config, "resync", "--run", saw)
        runs = sim.runs()
        assert runs[saw]["machine_id"] == "SAW-2" and runs[saw]["end_at"] is None
        assert open_runs(database_url)[saw] == ("SAW", "SAW-2", "running")
        assert "quarantined 0" in ok(config, "sync")  # nothing refused by MM
        assert set(sim.runs()) == {deburr, saw}

        # the audit: every row about DEBURR carries the machine, with the why, in JSON and in full
        audit = as_json(config, "audit", "--machine", "DEBURR", "--limit", "100")
        actions = [(r["action"], r["outcome"]) for r in reversed(audit)]
        assert actions == [
            ("start_run", "quarantined"),
            ("quarantine_retry", "succeeded"),
            ("start_run", "succeeded"),
        ]
        assert all(r["erp_job"] == "30001/1" and r["mm_run_id"] == deburr for r in audit)
        retry_row = next(r for r in audit if r["action"] == "quarantine_retry")
        assert "DEBURR-BENCH" in retry_row["detail"]
        refused = next(r for r in audit if r["outcome"] == "quarantined")
        assert refused["detail"] == "clocked in on 30001/1 op 10 (production)"
        assert "DEBURR" in refused["error_message"]
        plain = ok(config, "audit", "--machine", "DEBURR")
        assert retry_row["detail"] in plain and refused["error_message"] in plain
        saw_rows = as_json(config, "audit", "--run", saw)
        assert {r["action"] for r in saw_rows} >= {"quarantine_discard", "start_run"}
        assert all(r["erp_machine"] == "SAW" for r in saw_rows)
        # erpsync's own quarantine of the PRESS-2 job names its job, machine and MM run
        press_rows = as_json(config, "audit", "--machine", "PRESS")
        quarantined = next(r for r in press_rows if r["action"] == "quarantine")
        assert (quarantined["erp_job"], quarantined["mm_run_id"]) == ("30004/1", press_next)
        assert "does not know" in quarantined["detail"] and "machines.overrides" in quarantined["detail"]
    shop.dispose()
