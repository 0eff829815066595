"""The state repositories' contract, continued: quarantine, machines, audit, cycles, checkpoints.

Same scenarios on the memory fake and on SQL (SQLite, PostgreSQL, MariaDB): see test_state_repositories.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from erpsync.domain.columns import fit_id
from erpsync.domain.lifecycle import (
    ActionStatus,
    AuditOutcome,
    Outcome,
)
from erpsync.service.ports import AuditRecord
from tests.contract.state_backends import (
    CLAIM,
    T0,
    Backend,
    bad,
    record,
    settle,
    start,
)


def test_quarantine_upsert_new_reopened_and_discarded(state: Backend) -> None:
    with state() as uow:
        assert uow.quarantine.upsert(bad("A"), T0) is True
        assert uow.quarantine.upsert(bad("A", reason="still no job"), T0 + CLAIM) is False
        assert uow.quarantine.upsert(bad("B"), T0) is True
        assert uow.quarantine.open_count() == 2
    first, second = state.rows("quarantine")
    assert (first["attempts"], first["message"], first["first_seen_at"], first["last_seen_at"]) == (
        2,
        "still no job",
        T0,
        T0 + CLAIM,
    )
    assert first["raw_payload"] == '{"job": null, "token": "x"}' and first["line_number"] == 3
    state.set("quarantine", first["id"], status="discarded")
    state.set("quarantine", second["id"], status="resolved")
    with state() as uow:
        assert uow.quarantine.upsert(bad("A"), T0) is False  # a person discarded it: it stays so
        assert uow.quarantine.upsert(bad("B"), T0) is True  # seen bad again: re-opened
        assert uow.quarantine.open_count() == 1
    assert [r["status"] for r in state.rows("quarantine")] == ["discarded", "open"]


def test_resolve_retried_only_source_rows_not_bad_again(state: Backend) -> None:
    with state() as uow:
        for record_ in (bad("A"), bad("B"), bad("C", "writeback_conflict")):
            uow.quarantine.upsert(record_, T0)
        uow.quarantine.upsert(bad("D", "mm_start_run"), T0, action_id=42)
    for row in state.rows("quarantine"):
        state.set("quarantine", row["id"], status="retry")
    with state() as uow:
        assert uow.quarantine.resolve_retried("erp", {("B", "invalid_record")}) == 1
        assert uow.quarantine.resolve_retried("other", set()) == 0
    assert [(r["record_key"], r["status"]) for r in state.rows("quarantine")] == [
        ("A", "resolved"),
        ("B", "retry"),
        ("C", "retry"),
        ("D", "retry"),
    ]


# -- machines, audit, cycles, checkpoints -----------------------------------------------------
def test_machines_note_resolution_rejection_and_remap(state: Backend) -> None:
    def seen() -> dict[str, tuple[Any, ...]]:
        return {
            r["erp_machine"]: (
                r["mm_machine_id"],
                r["runs_seen"],
                r["last_seen_at"],
                r["rejected_at"] is not None,
            )
            for r in state.rows("machines")
        }

    with state() as uow:
        uow.machines.note({"M1": ("X1", 1), "M2": ("X2", 2), "M" * 70: (None, 1)}, T0)
        uow.machines.note({}, T0)
    assert seen() == {
        "M1": ("X1", 1, T0, False),
        "M2": ("X2", 2, T0, False),
        fit_id("M" * 70, 64): (None, 1, T0, False),
    }
    soon = T0 + timedelta(minutes=5)
    with state() as uow:
        uow.machines.note({"M1": ("X1", 1), "M2": ("X2", 3)}, soon)
    assert seen()["M1"][2] == T0 and seen()["M2"] == ("X2", 3, soon, False)
    later = T0 + timedelta(minutes=10)
    (action,) = record(state, start(1), claim_until=T0)
    refused = Outcome(action, ActionStatus.QUARANTINED, AuditOutcome.QUARANTINED, rejected_machine="X1")
    settle(state, refused)
    with state() as uow:
        uow.machines.note({"M1": ("X1", 1)}, later)  # 10 minutes on: seen again
        assert uow.machines.rejected() == {"X1"}
    assert seen()["M1"] == ("X1", 1, later, True)
    with state() as uow:
        uow.machines.note({"M1": ("X1-new", 1)}, later)  # mapped to another id: asked about again
        assert uow.machines.rejected() == set()
    assert seen()["M1"] == ("X1-new", 1, later, False)


def test_audit_record_and_flags_audited(state: Backend) -> None:
    with state() as uow:
        uow.audit.record(
            AuditRecord("flag_machine_busy", "flagged", erp_job="W1", mm_run_id="erp:R1", detail="M1")
        )
        uow.audit.record(AuditRecord("flag_setup", "flagged", erp_job="W1", mm_run_id="erp:R1"))
        uow.audit.record(AuditRecord("flag_machine_busy", "flagged", erp_job="W2", mm_run_id="erp:R2"))
        uow.audit.record(
            AuditRecord(
                "start_run", "failed", source="erp", error="password=secret1", before={"a": 1}, after={"a": 2}
            )
        )
    with state() as uow:
        flags = {
            ("flag_machine_busy", "W1", "erp:R1"),
            ("flag_setup", "W1", "erp:R1"),
            ("flag_setup", "W3", "x"),
        }
        assert uow.audit.flags_audited(flags) == {
            ("flag_machine_busy", "erp:R1", "M1"),
            ("flag_setup", "erp:R1", ""),
        }
        assert uow.audit.flags_audited(set()) == set()
    last = state.rows("audit")[-1]
    assert "secret1" not in last["error_message"] and last["changed_fields"] == "a"
    assert (last["before_json"], last["after_json"], last["occurred_at"] is not None) == (
        '{"a": 1}',
        '{"a": 2}',
        True,
    )


def test_cycles_and_checkpoints(state: Backend) -> None:
    with state() as uow:
        cycle_id = uow.cycles.start("sync", correlation_id="c9", trigger="cli", started_at=T0)
        assert uow.checkpoints.digest("csv", "jobs") is None
        uow.checkpoints.remember_digest("csv", "jobs", "d1", 10)
    with state() as uow:
        uow.cycles.finish(cycle_id, finished_at=T0 + CLAIM, outcome="ok", summary="0 started", error=None)
        assert uow.checkpoints.digest("csv", "jobs") == "d1"
        uow.checkpoints.remember_digest("csv", "jobs", "d2", 12)
    with state() as uow:
        assert (uow.checkpoints.digest("csv", "jobs"), uow.checkpoints.digest("csv", "other")) == ("d2", None)
    (cycle,) = state.rows("cycles")
    assert (
        cycle["kind"],
        cycle["correlation_id"],
        cycle["triggered_by"],
        cycle["outcome"],
        cycle["summary"],
    ) == (
        "sync",
        "c9",
        "cli",
        "ok",
        "0 started",
    )
    assert (cycle["started_at"], cycle["finished_at"], cycle["error_message"]) == (T0, T0 + CLAIM, None)
    (checkpoint,) = state.rows("checkpoints")
    assert (checkpoint["file_sha256"], checkpoint["rows_read"]) == ("d2", 12)
