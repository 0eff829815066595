"""Shared pieces of the sync tests: a VISUAL shop, settings wired to the simulator, invariants."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from erpsync.adapters.erp.visual_schema import create_visual_schema
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, SyncAction
from erpsync.bootstrap import open_sync
from erpsync.config import ServiceSettings, Settings, SourceSettings, StateSettings
from erpsync.demo.visual_fixture import OperationKey, VisualFixture
from erpsync.observability.correlation import correlation
from erpsync.observability.crashpoints import CRASH_ENV_VAR
from erpsync.runtime.cli_lease import held_lease
from erpsync.service.sync import SyncSummary
from tests.fixtures_mm import FAST_RETRIES, fast_mm_settings

ERP_TZ = "America/Chicago"


class Shop:
    """A small VISUAL shop: machines, one work order with one operation per machine."""

    def __init__(self, erp_url: str, machines: int = 3) -> None:
        self.engine = create_db_engine(erp_url)
        create_visual_schema(self.engine)
        self.fx = VisualFixture(self.engine)
        self.fx.add_part("P-100", "Bracket, 6061")
        self.machines = [self.fx.add_resource(f"HAAS-{i}", f"Haas VF-{i}") for i in range(1, machines + 1)]
        self.ops: dict[str, OperationKey] = {}
        for i, machine in enumerate(self.machines, start=1):
            wo = self.fx.add_work_order(f"18084{i:02d}", "1", part_id="P-100", desired_qty=250)
            self.ops[machine] = self.fx.add_operation(
                wo, 10 * i, machine, setup_hrs=1.5, run=0.05, run_type="HRS/PC", calc_end_qty=250
            )

    def dispose(self) -> None:
        self.engine.dispose()


def settings_for(erp_url: str, state_url: str, sim: MMSimulator, **mm: Any) -> Settings:
    return Settings(
        state=StateSettings(url=state_url),
        mm=fast_mm_settings(sim.base_url, sim.api_key, **mm),
        source=SourceSettings(kind="infor-visual", url=erp_url, timezone=ERP_TZ),
        service=ServiceSettings(lease_ttl_seconds=5, lease_renew_seconds=1, lease_retry_seconds=0.5),
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def write_config(
    path: Path,
    erp_url: str,
    state_url: str,
    sim: MMSimulator,
    *,
    sections: dict[str, dict[str, Any]] | None = None,
    **mm: Any,
) -> Path:
    """The same settings as a TOML file, for `python -m erpsync` subprocesses.

    `sections` adds or overrides keys per section, e.g. {"writeback": {"sink": "none"}}.
    """
    config: dict[str, dict[str, Any]] = {
        "state": {"url": state_url},
        "mm": {"base_url": sim.base_url, "api_key": sim.api_key, **FAST_RETRIES, **mm},
        "source": {"kind": "infor-visual", "url": erp_url, "timezone": ERP_TZ},
        "sync": {"in_doubt_after_seconds": 1},
        "service": {"lease_ttl_seconds": 2, "lease_renew_seconds": 0.5, "lease_retry_seconds": 0.5},
        "logging": {"format": "json"},
    }
    for name, values in (sections or {}).items():
        config[name] = {**config.get(name, {}), **values}
    lines = []
    for name, values in config.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def local(hour: int, minute: int = 0, day: int = 20) -> datetime:
    """A naive ERP-local wall time (VISUAL stores local times)."""
    return datetime(2026, 11, day, hour, minute)


def assert_converged(
    sim: MMSimulator, store: StateStore, open_runs: dict[str, str], closed: set[str]
) -> None:
    """The invariants after any crash or fault: exactly-once runs, right machines, nothing left open.

    `open_runs` maps MM run id -> machine for runs the ERP has open; `closed` are run ids the ERP
    closed. No call may have been answered 409 (a blind re-send with other fields) and every journal
    action must be settled with exactly one final audit row.
    """
    runs = sim.runs()
    calls = sim.calls()
    assert [c for c in calls if c["status"] == 409] == []
    for run_id, machine in open_runs.items():
        assert run_id in runs, f"{run_id} missing in MM"
        assert runs[run_id]["machine_id"] == machine
        assert runs[run_id]["end_at"] is None, f"{run_id} ended in MM but open in the ERP"
    for run_id in closed:  # absent is fine: a run opened and closed between two cycles is never started
        assert run_id not in runs or runs[run_id]["end_at"] is not None, f"{run_id} still open in MM"
    per_machine = Counter(r["machine_id"] for r in runs.values() if r["end_at"] is None)
    assert all(n == 1 for n in per_machine.values()), per_machine
    with store.session() as session:
        statuses = Counter(session.scalars(select(SyncAction.status)))
        assert set(statuses) <= {"succeeded"}, statuses
        finals = session.execute(
            select(AuditEntry.action_id, func.count())
            .where(AuditEntry.action_id.is_not(None), AuditEntry.outcome.in_(("succeeded", "noop")))
            .group_by(AuditEntry.action_id)
        ).all()
        action_ids = set(session.scalars(select(SyncAction.id)))
        assert {a for a, _ in finals} == action_ids
        assert all(n == 1 for _, n in finals), finals


def start_erpsync(config: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    """`python -m erpsync --config CONFIG ARGS...` as a real process (crash point armed if given)."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV_VAR}
    if crash_at:
        env[CRASH_ENV_VAR] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "erpsync", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def run_erpsync(config: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = start_erpsync(config, *args, crash_at=crash_at)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_a_request(sim: MMSimulator, seen: int, process: subprocess.Popen[str]) -> None:
    """Block until MM received a request beyond the first `seen`: the process is past start-up, at work."""
    deadline = time.monotonic() + 30
    while sim.stats()["requests"] <= seen:
        assert process.poll() is None, "erpsync exited without calling MM"
        assert time.monotonic() < deadline, "erpsync made no MM call in 30 s"
        time.sleep(0.005)


def converge(config: Path, deadline_seconds: float = 30) -> None:
    """Run `erpsync sync` until two runs in a row find nothing to do.

    A killed actor's lease has to expire first: until then sync is refused, which is expected.
    """
    deadline = time.monotonic() + deadline_seconds
    clean = 0
    result = None
    while time.monotonic() < deadline:
        result = run_erpsync(config, "sync")
        quiet = "started 0, stopped 0" in result.stdout and "retried 0" in result.stdout
        if result.returncode == 0 and quiet:
            clean += 1
            if clean == 2:
                return
        elif result.returncode != 0:  # refused the lease, or actions not done yet (exit 1)
            assert "another erpsync instance leads" in result.stderr or (
                result.returncode == 1 and ("not done" in result.stderr or "unsettled" in result.stderr)
            ), result.stderr
        time.sleep(0.3)
    raise AssertionError(f"did not converge: last output {result!r}")


def sync_cycle(settings: Settings, store: StateStore) -> SyncSummary:
    """One `erpsync sync` cycle in process, built the way the CLI builds it (client, lease, service)."""
    with MMClient(settings.mm) as client, correlation("cli"), held_lease(settings, store) as fence:
        service = open_sync(settings, store, fence, client)
        try:
            return service.run_cycle()
        finally:
            service.source.close()
