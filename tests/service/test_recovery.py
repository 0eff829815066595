"""Recovery reads MM before it re-sends: what MM already has is settled, the rest sent again."""

from __future__ import annotations

from erpsync.domain.model import RunState
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.recovery import settle_in_doubt
from erpsync.service.sync import SyncService
from tests.service.conftest import T0, ListSource, StubMM, binding, dispatch, erp_run, in_doubt, journal


def recover(service: SyncService) -> int:
    """Start-up recovery (every pending action due now); returns how many were settled."""
    return settle_in_doubt(service.dispatcher(), 30, due_now=True).succeeded


def test_a_start_mm_has_in_setup_is_settled_without_sending_it(
    service: SyncService, source: ListSource, mm: StubMM, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    journal(service)
    mm.hold("erp:R1")  # the call reached MM; the crash came before the outcome was written

    assert recover(service) == 1

    assert mm.calls == [("get", "erp:R1")]
    assert (binding(uow_factory, "R1").status, binding(uow_factory, "R1").in_setup) == ("running", True)
    assert in_doubt(uow_factory) == []


def test_a_start_mm_lacks_is_sent_again(
    service: SyncService, source: ListSource, mm: StubMM, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    journal(service)

    assert recover(service) == 1

    assert mm.calls == [("get", "erp:R1"), ("start", "erp:R1")]
    assert "erp:R1" in mm.runs
    assert binding(uow_factory, "R1").status == "running"
    assert in_doubt(uow_factory) == []


def test_a_stop_of_a_run_mm_shows_ended_is_settled_without_sending_it(
    service: SyncService, source: ListSource, mm: StubMM, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))
    journal(service)
    mm.hold("erp:R1", end_at=T0.replace(hour=16))  # the stop reached MM before the crash
    mm.calls.clear()

    assert recover(service) == 1

    assert mm.calls == [("get", "erp:R1")]
    assert binding(uow_factory, "R1").status == "stopped"
    assert in_doubt(uow_factory) == []


def test_a_stop_of_a_run_mm_has_open_is_sent_again(
    service: SyncService, source: ListSource, mm: StubMM, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    source.put(erp_run("R1", state=RunState.ENDED))
    journal(service)
    mm.calls.clear()

    assert recover(service) == 1

    assert mm.calls == [("get", "erp:R1"), ("stop", "erp:R1")]
    assert mm.runs["erp:R1"].end_at == T0.replace(hour=16)
    assert binding(uow_factory, "R1").status == "stopped"
    assert in_doubt(uow_factory) == []
