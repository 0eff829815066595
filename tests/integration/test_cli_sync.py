"""`erpsync plan / sync / machines / quarantine / resync` as a person runs them (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from erpsync.adapters.mm.simulator import MMSimulator
from tests.sync_helpers import Shop, local, write_config


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plan_sync_machines_quarantine_resync(tmp_path: Path) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    shop = Shop(erp_url, machines=2)
    shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
    shop.fx.clock_in(shop.ops["HAAS-2"], local(8), ticket_type="S")
    with MMSimulator(machines={"HAAS-1"}, seed=3) as sim:
        config = write_config(tmp_path / "erpsync.toml", erp_url, state_url, sim)
        assert run(config, "db", "upgrade").returncode == 0

        plan = run(config, "plan", "--json")
        assert plan.returncode == 0, plan.stderr
        rows = json.loads(plan.stdout)
        assert [(r["kind"], r["run_id"], r["phase"]) for r in rows] == [
            ("start_run", "erp:LT1", "production"),
            ("start_run", "erp:LT2", "setup"),
        ]
        assert sim.calls() == []  # plan has no side effect

        sync = run(config, "sync")
        assert sync.returncode == 0, sync.stderr
        assert "started 1, stopped 0" in sync.stdout and "quarantined 1" in sync.stdout

        machines = json.loads(run(config, "machines", "--json").stdout)
        rejected = {m["erp_machine"]: m["rejected_at"] is not None for m in machines}
        assert rejected == {"HAAS-1": False, "HAAS-2": True}

        entries = json.loads(run(config, "quarantine", "list", "--json").stdout)
        assert len(entries) == 1 and "HAAS-2" in entries[0]["message"] + entries[0]["record_key"] + str(
            entries
        )
        missing = run(config, "quarantine", "retry", "999")
        assert missing.returncode == 1 and "no quarantine entry 999" in missing.stderr

        sim.set_machines({"HAAS-1", "HAAS-2"})
        retry = run(config, "quarantine", "retry", str(entries[0]["id"]))
        assert retry.returncode == 0 and "re-armed" in retry.stdout
        sync = run(config, "sync")
        assert "recovered 1" in sync.stdout, sync.stdout
        assert set(sim.runs()) == {"erp:LT1", "erp:LT2"}

        no_selection = run(config, "resync")
        assert no_selection.returncode == 2 and "--all" in no_selection.stderr
        sim.reset()
        dry = run(config, "resync", "--all", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert sorted(r["run_id"] for r in json.loads(dry.stdout)) == ["erp:LT1", "erp:LT2"]
        assert sim.runs() == {}
        done = run(config, "resync", "--machine", "HAAS-1")
        assert done.returncode == 0, done.stderr
        assert "flag:missing_in_mm" in done.stdout and sim.runs() == {}
        assert run(config, "sync").returncode == 0  # heals it: the ticket's next run generation
        assert set(sim.runs()) == {"erp:LT1.g2"}

        status = json.loads(run(config, "status", "--json").stdout)
        assert status["bindings"] == {"running": 2, "stopped": 1}
        assert status["open_quarantine"] == 0
    shop.dispose()


def test_sync_with_a_refused_api_key_exits_2(tmp_path: Path) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=1)
    shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
    with MMSimulator(api_key="the-right-key", seed=4) as sim:
        config = write_config(tmp_path / "erpsync.toml", erp_url, f"sqlite:///{tmp_path / 's.db'}", sim)
        config.write_text(config.read_text().replace("the-right-key", "a-wrong-key-123"), encoding="utf-8")
        assert run(config, "db", "upgrade").returncode == 0
        sync = run(config, "sync")
        assert sync.returncode == 2, sync.stdout + sync.stderr
        assert "error:" in sync.stderr and "a-wrong-key-123" not in sync.stderr + sync.stdout
        assert "Traceback" not in sync.stderr
        assert sim.runs() == {}
    shop.dispose()
