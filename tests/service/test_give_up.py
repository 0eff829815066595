"""Give up only after reading (issue #15): the answers settled on what a read of MM shows.

The sync flow on the in-memory ports, MM the simulator's model in process (`FakeMachineMetrics`)
with its fault plan. `max_action_attempts` is 1 here, so the first transient failure is the last.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.schemas import StopJobRun
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.lifecycle import JournaledAction
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import RunState
from erpsync.service.policy import SyncPolicy
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.recovery import settle_in_doubt
from erpsync.service.sync import SyncService
from tests.service.conftest import (
    T0,
    ListSource,
    binding,
    dispatch,
    erp_run,
    in_doubt,
    journal,
    open_quarantine,
)
from tests.service.fakes import call_count, calls, hold

ENDED_BY_HAND = T0.replace(hour=15)


@pytest.fixture
def policy() -> SyncPolicy:
    return SyncPolicy(mapper=MachineMapper(), max_concurrency=2, max_action_attempts=1)


def patient(service: SyncService) -> SyncService:
    """The same service with attempts to spare: a failure is retried, not the last one."""
    return replace(service, policy=replace(service.policy, max_action_attempts=3))


def fault(kind: str, operation: str, **more: Any) -> dict[str, Any]:
    return {"kind": kind, "operation": operation, **more}


def audit_rows(tables: MemoryTables, action: str) -> list[tuple[str, str | None, str | None]]:
    """(outcome, detail, error message) of the audit rows of `action`, in order."""
    return [(r["outcome"], r["detail"], r["error_message"]) for r in tables.audit if r["action"] == action]


def end_by_hand(mm: FakeMachineMetrics, run_id: str) -> None:
    """Someone ends the run in MM (no call of erpsync's in the log)."""
    mm.model.state.stop(StopJobRun(erp_job_operation_run_id=run_id, end_at=ENDED_BY_HAND).wire())


def statuses(tables: MemoryTables) -> dict[str, str]:
    """Journal status by idempotency key."""
    return {r["idempotency_key"]: r["status"] for r in tables.actions.values()}


def test_a_ghost_start_given_up_is_settled_by_a_read_and_stopped_when_the_erp_ends(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
) -> None:
    source.put(erp_run("R1"))
    mm.set_faults(fault("apply_then_fail", "start"))  # MM takes the start, every answer is lost

    result = dispatch(service)

    assert (result.succeeded, result.failed) == (1, 0)
    assert calls(mm) == [("start", "erp:R1"), ("get", "erp:R1")]
    assert mm.runs()["erp:R1"]["end_at"] is None
    assert (binding(uow_factory, "R1").status, binding(uow_factory, "R1").in_setup) == ("running", True)
    ((outcome, detail, _),) = audit_rows(tables, "start_run")
    assert outcome == "succeeded" and detail is not None and detail.startswith("settled by a read after 1")
    assert open_quarantine(uow_factory) == 0

    mm.set_faults()
    source.put(erp_run("R1", state=RunState.ENDED))
    assert dispatch(service).by_kind == {"stop_run": 1}
    assert mm.runs()["erp:R1"]["end_at"] is not None
    assert binding(uow_factory, "R1").status == "stopped"


@pytest.mark.parametrize("mm_took_it", [True, False])
def test_a_start_given_up_unread_is_unconfirmed_never_restarted_and_stopped_when_the_erp_ends(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
    mm_took_it: bool,
) -> None:
    source.put(erp_run("R1"))
    mm.set_faults(
        fault("apply_then_fail" if mm_took_it else "error", "start", status=503), fault("error", "get")
    )

    result = dispatch(service)

    assert (result.succeeded, result.failed) == (0, 1)
    assert ("erp:R1" in mm.runs()) is mm_took_it
    assert binding(uow_factory, "R1").status == "unconfirmed"
    assert statuses(tables) == {"start_run:erp:R1:setup": "failed_permanent"}
    ((outcome, detail, error),) = audit_rows(tables, "start_run")
    assert outcome == "failed" and error is not None and "could not be read either" in error
    assert detail is not None and "may have the run" in detail
    assert open_quarantine(uow_factory) == 1

    mm.set_faults()
    before = call_count(mm)
    assert dispatch(service).by_kind == {}  # never started again by a sync
    assert calls(mm, after=before) == []

    source.put(erp_run("R1", state=RunState.ENDED))
    result = dispatch(service)

    assert (result.succeeded, result.by_kind) == (1, {"stop_run": 1})
    assert [r["end_at"] is not None for r in mm.runs().values()] == ([True] if mm_took_it else [])
    assert binding(uow_factory, "R1").status == "stopped"
    stop_audit = audit_rows(tables, "stop_run")
    if mm_took_it:
        assert [o for o, _, _ in stop_audit] == ["succeeded"]
    else:  # MM's 404 to the stop, confirmed by a read
        assert calls(mm, after=before)[-2:] == [("stop", "erp:R1"), ("get", "erp:R1")]
        assert [(o, d) for o, d, _ in stop_audit] == [
            ("noop", "MM answered 404 and a read confirms it has no such run: nothing to stop")
        ]


def test_an_unconfirmed_run_is_stopped_when_a_new_run_takes_its_machine(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    mm.set_faults(fault("apply_then_fail", "start"), fault("error", "get"))
    dispatch(service)
    assert binding(uow_factory, "R1").status == "unconfirmed"
    mm.set_faults()

    source.put(replace(erp_run("R2"), start_at=T0.replace(hour=16)))
    dispatch(service)

    runs = mm.runs()
    assert runs["erp:R1"]["end_at"] is not None and runs["erp:R2"]["end_at"] is None
    assert binding(uow_factory, "R1").status == "stopped"


def test_a_404_to_a_stop_of_a_run_mm_shows_open_is_not_settled_and_sent_again(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))
    mm.set_faults(fault("error", "stop", status=404, times=1))  # answered instead of MM
    service = patient(service)

    first = dispatch(service)

    assert (first.succeeded, first.retrying) == (0, 1)
    assert mm.runs()["erp:R1"]["end_at"] is None
    assert binding(uow_factory, "R1").status == "stopping"
    ((outcome, _, error),) = audit_rows(tables, "stop_run")
    assert outcome == "retrying"
    assert error is not None and "run open" in error and "the stop is sent again" in error

    (stop,) = in_doubt(uow_factory)
    retry_now(tables, stop)
    again = settle_in_doubt(service.dispatcher(), 30)

    assert again.succeeded == 1
    assert mm.runs()["erp:R1"]["end_at"] is not None
    assert binding(uow_factory, "R1").status == "stopped"
    assert [o for o, _, _ in audit_rows(tables, "stop_run")] == ["retrying", "succeeded"]


def test_a_404_to_a_stop_of_a_run_mm_shows_ended_is_settled_with_mms_end(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    end_by_hand(mm, "erp:R1")
    source.put(erp_run("R1", state=RunState.ENDED))
    mm.set_faults(fault("error", "stop", status=404, times=1))

    assert dispatch(service).succeeded == 1

    assert binding(uow_factory, "R1").status == "stopped"
    assert tables.bindings["erp:R1"]["mm_end_at"] == ENDED_BY_HAND
    assert "settled with MM's end" in str(audit_rows(tables, "stop_run")[0][1])


def test_a_404_to_a_stop_with_mm_unreadable_is_retried_not_settled(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))
    mm.set_faults(fault("error", "stop", status=404, times=1), fault("error", "get", status=503, times=1))

    assert dispatch(patient(service)).retrying == 1

    assert binding(uow_factory, "R1").status == "stopping"
    assert mm.runs()["erp:R1"]["end_at"] is None


def test_a_stop_answered_404_until_its_last_attempt_with_the_run_open_gives_up(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))
    mm.set_faults(fault("error", "stop", status=404, times=1))

    assert dispatch(service).failed == 1  # never "nothing to stop" while MM shows it open

    assert mm.runs()["erp:R1"]["end_at"] is None
    assert binding(uow_factory, "R1").status == "stopping"
    ((outcome, _, error),) = audit_rows(tables, "stop_run")
    assert outcome == "failed" and error is not None and "run open" in error
    assert open_quarantine(uow_factory) == 1


def test_recovery_settles_a_stop_of_a_run_mm_lacks_on_its_one_read(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    mm.reset()  # MM lost the run
    source.put(erp_run("R1", state=RunState.ENDED))
    journal(service)  # the stop is journaled, then the process dies

    assert settle_in_doubt(service.dispatcher(), 30, due_now=True).succeeded == 1

    assert calls(mm) == [("get", "erp:R1"), ("stop", "erp:R1")]  # no second read
    assert binding(uow_factory, "R1").status == "stopped"


def setup_then_production(service: SyncService, source: ListSource) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.PRODUCTION))


def test_a_409_to_the_switch_is_quarantined_for_a_person_and_not_sent_again(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    tables: MemoryTables,
) -> None:
    setup_then_production(service, source)
    mm.set_faults(fault("error", "start", status=409, times=1))

    result = dispatch(service)

    assert (result.succeeded, result.quarantined) == (0, 1)
    assert mm.runs()["erp:R1"]["phase"] == "setup"
    bound = binding(uow_factory, "R1")
    assert (bound.status, bound.in_setup) == ("running", True)
    assert statuses(tables)["start_run:erp:R1:production"] == "quarantined"
    ((outcome, _, error),) = [a for a in audit_rows(tables, "start_run") if a[0] != "succeeded"]
    assert outcome == "quarantined"
    assert error is not None and "refused the switch to production (409)" in error
    assert "erpsync quarantine retry" in error
    assert open_quarantine(uow_factory) == 1

    before = call_count(mm)
    for _ in range(2):  # the switch keeps its key: never journaled or sent again by a cycle
        assert dispatch(service).by_kind == {}
    assert calls(mm, after=before) == []
    assert len(tables.actions) == 2


def test_a_409_to_the_switch_of_a_run_mm_ended_is_settled_as_ended(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    setup_then_production(service, source)
    end_by_hand(mm, "erp:R1")
    mm.set_faults(fault("error", "start", status=409, times=1))

    assert dispatch(service).succeeded == 1

    assert binding(uow_factory, "R1").status == "stopped"


def test_a_409_to_a_first_production_start_is_still_read_and_held(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1", state=RunState.PRODUCTION))
    hold(mm, "erp:R1", start_at=T0, job="J-other/1", in_setup=False)

    assert dispatch(service).succeeded == 1

    assert (binding(uow_factory, "R1").status, binding(uow_factory, "R1").in_setup) == ("running", False)


def test_a_switch_given_up_with_the_run_open_is_quarantined_and_stays_in_setup(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    setup_then_production(service, source)
    mm.set_faults(fault("error", "start", status=503, times=1))

    result = dispatch(service)

    assert result.quarantined == 1
    bound = binding(uow_factory, "R1")
    assert (bound.status, bound.in_setup) == ("running", True)
    assert mm.runs()["erp:R1"]["phase"] == "setup"


def retry_now(tables: MemoryTables, action: JournaledAction) -> None:
    """Its backoff ran out: due now."""
    tables.actions[action.id]["next_attempt_at"] = None


@pytest.mark.parametrize(("vanished_runs", "after"), [("stop", "stopped"), ("flag", "vanished")])
def test_an_unconfirmed_run_the_erp_loses_is_vanished_like_a_live_one(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    vanished_runs: str,
    after: str,
) -> None:
    source.put(erp_run("R1"))
    mm.set_faults(fault("apply_then_fail", "start"), fault("error", "get"))
    dispatch(service)
    assert binding(uow_factory, "R1").status == "unconfirmed"
    mm.set_faults()
    service = replace(service, policy=replace(service.policy, vanished_runs=vanished_runs))
    del source.runs["R1"]

    dispatch(service)

    assert binding(uow_factory, "R1").status == after
    assert (mm.runs()["erp:R1"]["end_at"] is None) is (vanished_runs == "flag")
