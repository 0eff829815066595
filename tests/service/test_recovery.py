"""Recovery reads MM before it re-sends: what MM already has is settled, the rest sent again."""

from __future__ import annotations

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.mapper import start_from_payload, stop_from_payload
from erpsync.adapters.mm.simulator.wire import fmt
from erpsync.domain.lifecycle import ActionKind, JournaledAction
from erpsync.domain.model import RunState
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.recovery import settle_in_doubt
from erpsync.service.sync import SyncService
from tests.service.conftest import T0, ListSource, binding, dispatch, erp_run, in_doubt, journal
from tests.service.fakes import call_count, calls


def recover(service: SyncService) -> int:
    """Start-up recovery (every pending action due now); returns how many were settled."""
    return settle_in_doubt(service.dispatcher(), 30, due_now=True).succeeded


def reached_mm(mm: FakeMachineMetrics, action: JournaledAction) -> int:
    """Send the journaled request as the dispatcher would, then crash before settling it.

    Returns the call count after it, so the test can leave the call out of what recovery sent.
    """
    if action.kind is ActionKind.START:
        mm.start_job_run(start_from_payload(action.payload))
    else:
        mm.stop_job_run(stop_from_payload(action.payload))
    return call_count(mm)


def test_a_start_mm_has_in_setup_is_settled_without_sending_it(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    ((start,),) = journal(service)
    before = reached_mm(mm, start)

    assert recover(service) == 1

    assert calls(mm, after=before) == [("get", "erp:R1")]
    assert mm.runs()["erp:R1"]["phase"] == "setup"
    assert (binding(uow_factory, "R1").status, binding(uow_factory, "R1").in_setup) == ("running", True)
    assert in_doubt(uow_factory) == []


def test_a_start_mm_lacks_is_sent_again(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    journal(service)

    assert recover(service) == 1

    assert calls(mm) == [("get", "erp:R1"), ("start", "erp:R1")]
    assert mm.runs()["erp:R1"]["start_at"] == fmt(T0)
    assert binding(uow_factory, "R1").status == "running"
    assert in_doubt(uow_factory) == []


def test_a_stop_of_a_run_mm_shows_ended_is_settled_without_sending_it(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))
    ((stop,),) = journal(service)
    before = reached_mm(mm, stop)

    assert recover(service) == 1

    assert calls(mm, after=before) == [("get", "erp:R1")]
    assert mm.runs()["erp:R1"]["end_at"] == fmt(T0.replace(hour=16))
    assert binding(uow_factory, "R1").status == "stopped"
    assert in_doubt(uow_factory) == []


def test_a_stop_of_a_run_mm_has_open_is_sent_again(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))
    journal(service)
    before = call_count(mm)

    assert recover(service) == 1

    assert calls(mm, after=before) == [("get", "erp:R1"), ("stop", "erp:R1")]
    assert mm.runs()["erp:R1"]["end_at"] == fmt(T0.replace(hour=16))
    assert binding(uow_factory, "R1").status == "stopped"
    assert in_doubt(uow_factory) == []
