"""Issue #19 case 5: transient bad ERP data never stops live MM runs (``sync.vanished_runs = "stop"``).

The simulator runs over loopback HTTP; each test asserts what MM holds afterwards (open runs per
machine, run ids, endAt) and what the audit and the quarantine say:

- a CSV export caught mid-rewrite (last line cut) stops nothing and is flagged; the next good file
  clears the hold, the runs still open under the same MM run ids;
- a header-only export stops nothing; `erpsync resync --confirm-stops` (a real subprocess) stops
  them, with an audit row saying who confirmed (CSV path and inbox);
- a RUN_TYPE typo on a running ticket's operation (VISUAL on SQLite and PostgreSQL) quarantines the
  row and keeps its MM run and binding as they are; fixing it restarts nothing;
- 3 of 4 open runs gone at once (share 0.5) stops nothing until a person confirms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from erpsync.adapters.erp.visual_schema import OPERATION
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SourceCheckpoint
from erpsync.config import Settings, load_settings
from erpsync.domain.identity import mm_run_id_for
from erpsync.service.sync import SyncSummary
from tests.fixtures_mm import FAST_RETRIES
from tests.sync_helpers import ERP_TZ, Shop, local, sync_cycle

LN_HEADER = "tisfc010.pdno;tisfc010.opno;tisfc010.mcno;tisfc010.qcmp;tisfc010.opst\n"


def ln_rows(*orders: int) -> str:
    """Active LN operations: order PO<n>, operation 10, on machine M<n>."""
    return "".join(f"PO{n};10;M{n};1;Actief\n" for n in orders)


def run_id(n: int) -> str:
    return mm_run_id_for("ln", f"PO{n}|10")


def toml(config: dict[str, dict[str, Any]], prefix: str = "") -> str:
    """Sections of plain values; a dict value is a sub-section (`[source.csv]`)."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{prefix}{section}]")
        lines += [f"{key} = {json.dumps(v)}" for key, v in values.items() if not isinstance(v, dict)]
        subs = {key: v for key, v in values.items() if isinstance(v, dict)}
        if subs:
            lines.append(toml(subs, f"{prefix}{section}."))
    return "\n".join(lines) + "\n"


class World:
    """erpsync as `erpsync sync` runs it (in process) and as a person runs its CLI (subprocesses)."""

    def __init__(self, tmp_path: Path, sim: MMSimulator, source: dict[str, Any], **sync: Any) -> None:
        self.sim = sim
        self.config = tmp_path / "erpsync.toml"
        state_url = f"sqlite:///{tmp_path / 'state.db'}"
        self.config.write_text(
            toml(
                {
                    "state": {"url": state_url},
                    "mm": {"base_url": sim.base_url, "api_key": sim.api_key, **FAST_RETRIES},
                    "source": {"timezone": ERP_TZ, **source},
                    "sync": {"vanished_runs": "stop", "in_doubt_after_seconds": 1, **sync},
                    "service": {"lease_ttl_seconds": 2, "lease_renew_seconds": 0.5},
                    "logging": {"format": "json"},
                }
            ),
            encoding="utf-8",
        )
        self.settings: Settings = load_settings(self.config)
        self.store = StateStore(create_db_engine(state_url))
        migrate.upgrade(self.store.engine)

    def sync(self) -> SyncSummary:
        return sync_cycle(self.settings, self.store)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "erpsync", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done

    def open_runs(self) -> dict[str, list[str]]:
        """MM machine -> the run ids MM has open there."""
        out: dict[str, list[str]] = {}
        for rid, run in sorted(self.sim.runs().items()):
            if run["end_at"] is None:
                out.setdefault(run["machine_id"], []).append(rid)
        return out

    def audit(self, action: str) -> list[AuditEntry]:
        with self.store.session() as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))

    def bindings(self) -> dict[str, tuple[str, str | None]]:
        """mm_run_id -> (status, payload_hash)."""
        with self.store.session() as session:
            return {b.mm_run_id: (b.status, b.payload_hash) for b in session.scalars(select(RunBinding))}

    def dispose(self) -> None:
        self.store.dispose()


def write(path: Path, text: str) -> None:
    """An export as the ERP leaves it (settled: a minute old)."""
    path.write_bytes(text.encode("utf-8"))
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp))


def held_gauge(reason: str) -> float | None:
    return REGISTRY.get_sample_value("erpsync_stops_held", {"reason": reason})


@pytest.fixture
def csv_world(tmp_path: Path, mm_simulator: MMSimulator) -> Iterator[World]:
    export = tmp_path / "export.csv"
    world = World(
        tmp_path, mm_simulator, {"kind": "infor-ln-csv", "name": "ln", "csv": {"path": str(export)}}
    )
    world.export = export  # type: ignore[attr-defined]
    yield world
    world.dispose()


def test_an_export_caught_mid_rewrite_stops_nothing_until_the_next_good_file(csv_world: World) -> None:
    w, export = csv_world, csv_world.export  # type: ignore[attr-defined]
    write(export, LN_HEADER + ln_rows(1, 2, 3))
    assert w.sync().started == 3
    started = {rid: run["start_at"] for rid, run in w.sim.runs().items()}

    # the ERP is rewriting the file: PO3's line is not there yet, the last one is cut mid-key (a
    # cut line whose key is whole is quarantined under its run key and keeps its run by itself)
    write(export, LN_HEADER + ln_rows(1, 2) + "PO")
    for _ in range(2):  # the file is read again each cycle; the hold is audited once
        cut = w.sync()
        assert (cut.stopped, cut.held_stops) == (0, 1)
    assert w.open_runs() == {"M1": [run_id(1)], "M2": [run_id(2)], "M3": [run_id(3)]}
    assert w.sim.calls()[-1]["operation"] != "stop"
    assert [c for c in w.sim.calls() if c["operation"] == "stop"] == []
    [flag] = w.audit("untrusted_snapshot")
    assert flag.outcome == "flagged" and flag.erp_job == "ln"
    assert flag.detail is not None and "export.csv: export looks cut off: the last line (4)" in flag.detail
    assert flag.after_json is not None and json.loads(flag.after_json)["run_ids"] == [run_id(3)]
    assert held_gauge("untrusted_snapshot") == 1
    assert w.bindings()[run_id(3)][0] == "running"
    plan = json.loads(w.cli("plan", "--json").stdout)
    held = [(r["kind"], r["run_id"]) for r in plan if r["kind"].startswith("held:")]
    assert held == [("held:stop_run", run_id(3))]
    assert any("not stopped: the ERP snapshot cannot be trusted" in r["reason"] for r in plan)

    write(export, LN_HEADER + ln_rows(1, 2, 3, 4))  # the rewrite finished (and PO4 clocked in)
    good = w.sync()
    assert (good.started, good.stopped, good.held_stops) == (1, 0, 0)
    assert w.open_runs() == {f"M{n}": [run_id(n)] for n in (1, 2, 3, 4)}
    runs = w.sim.runs()
    assert {rid: runs[rid]["start_at"] for rid in started} == started  # the same MM runs, never restarted
    assert held_gauge("untrusted_snapshot") == 0
    assert len(w.audit("untrusted_snapshot")) == 1
    with w.store.session() as session:
        positions = sorted(session.scalars(select(SourceCheckpoint.position)))
    assert positions == ["read", "read"]  # the first and the good file; the cut one was never acknowledged
    assert json.loads(w.cli("plan", "--json").stdout) == []


@pytest.mark.parametrize("mode", ["path", "inbox"])
def test_a_header_only_export_stops_nothing_until_a_person_confirms(
    tmp_path: Path, mm_simulator: MMSimulator, mode: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    csv: dict[str, Any] = (
        {"path": str(tmp_path / "export.csv")}
        if mode == "path"
        else {"inbox": str(inbox), "settle_seconds": 1}
    )
    w = World(tmp_path, mm_simulator, {"kind": "infor-ln-csv", "name": "ln", "csv": csv})
    first = tmp_path / "export.csv" if mode == "path" else inbox / "monday.csv"
    second = tmp_path / "export.csv" if mode == "path" else inbox / "tuesday.csv"
    write(first, LN_HEADER + ln_rows(1, 2))
    assert w.sync().started == 2

    write(second, LN_HEADER)  # a failed export job
    held = w.sync()
    assert (held.stopped, held.held_stops) == (0, 2)
    assert w.open_runs() == {"M1": [run_id(1)], "M2": [run_id(2)]}
    [flag] = w.audit("untrusted_snapshot")
    assert flag.detail is not None and f"{second.name} has a header but no rows" in flag.detail
    assert second.exists()  # not acknowledged: an inbox file stays where it is

    confirmed = w.cli("resync", "--confirm-stops")
    assert "confirmed 2 held stops" in confirmed.stdout

    assert w.open_runs() == {}
    runs = w.sim.runs()
    assert sorted(runs) == [run_id(1), run_id(2)] and all(r["end_at"] for r in runs.values())
    assert {status for status, _ in w.bindings().values()} == {"stopped"}
    [confirmation] = w.audit("stops_confirmed")
    assert confirmation.actor and "@" in confirmation.actor and confirmation.occurred_at is not None
    assert confirmation.detail is not None and "a person confirmed 2 stop(s)" in confirmation.detail
    assert sorted(a.mm_run_id for a in w.audit("stop_run")) == sorted([run_id(1), run_id(2)])
    if mode == "inbox":
        assert not second.exists() and (inbox / "archive" / "tuesday.csv").exists()
    assert "started 0, stopped 0" in w.cli("sync").stdout  # acknowledged: nothing left to do
    w.dispose()


def test_three_of_four_runs_vanishing_at_once_wait_for_a_person(csv_world: World) -> None:
    w, export = csv_world, csv_world.export  # type: ignore[attr-defined]
    write(export, LN_HEADER + ln_rows(1, 2, 3, 4))
    assert w.sync().started == 4

    write(export, LN_HEADER + ln_rows(4))  # a good-looking file, but 3 of 4 runs gone at once
    held = w.sync()
    assert (held.stopped, held.held_stops) == (0, 3)
    assert w.open_runs() == {f"M{n}": [run_id(n)] for n in (1, 2, 3, 4)}
    [flag] = w.audit("mass_vanish")
    assert flag.detail is not None and "3 of 4 open runs vanished from the ERP at once" in flag.detail
    assert "sync.max_vanished_share = 0.5" in flag.detail
    assert held_gauge("mass_vanish") == 3

    assert "confirmed 3 held stops" in w.cli("resync", "--confirm-stops").stdout
    assert w.open_runs() == {"M4": [run_id(4)]}
    runs = w.sim.runs()
    assert all(runs[run_id(n)]["end_at"] for n in (1, 2, 3)) and runs[run_id(4)]["end_at"] is None
    assert len(w.audit("stops_confirmed")) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_run_type_typo_quarantines_the_row_and_keeps_the_run(
    database_url: str, tmp_path: Path, mm_simulator: MMSimulator
) -> None:
    shop = Shop(database_url, machines=2)
    w = World(tmp_path, mm_simulator, {"kind": "infor-visual", "url": database_url})
    shop.fx.clock_in(shop.ops["HAAS-1"], local(8, 0), ticket_type="R")
    shop.fx.clock_in(shop.ops["HAAS-2"], local(9, 0), ticket_type="R")
    assert w.sync().started == 2
    before = w.bindings()
    started = {rid: run["start_at"] for rid, run in w.sim.runs().items()}
    op = shop.ops["HAAS-1"]

    def run_type(value: str) -> None:
        with shop.engine.begin() as conn:
            conn.execute(
                update(OPERATION)
                .where(
                    OPERATION.c.WORKORDER_BASE_ID.in_([op.work_order.base_id]),
                    OPERATION.c.SEQUENCE_NO.in_([op.sequence_no]),
                )
                .values(RUN_TYPE=value)
            )

    run_type("HRS/PCC")  # a planner's typo on the running ticket's operation
    typo = w.sync()
    assert (typo.stopped, typo.started, typo.held_stops, typo.bad_rows) == (0, 0, 0, 1)
    assert w.open_runs() == {"HAAS-1": ["erp:LT1"], "HAAS-2": ["erp:LT2"]}
    assert w.bindings() == before  # kept as it is
    with w.store.session() as session:
        [entry] = session.scalars(select(QuarantineEntry)).all()
    assert (entry.record_key, entry.field, entry.status) == ("LT1", "RUN_TYPE", "open")
    assert "HRS/PCC" in entry.message
    assert [a.mm_run_id for a in w.audit("stop_run")] == []

    run_type("HRS/PC")  # fixed
    fixed = w.sync()
    assert (fixed.stopped, fixed.started, fixed.held_stops) == (0, 0, 0)
    assert w.open_runs() == {"HAAS-1": ["erp:LT1"], "HAAS-2": ["erp:LT2"]}
    assert {rid: run["start_at"] for rid, run in w.sim.runs().items()} == started  # the same MM runs
    assert w.bindings() == before
    assert [c["operation"] for c in w.sim.calls()].count("start") == 2
    w.dispose()
    shop.dispose()
