"""A sync cycle end to end on the ports: clock-ins start runs, clock-outs stop them, a run the ERP
lost is flagged, a run on a machine MM does not know is quarantined."""

from __future__ import annotations

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.simulator.wire import fmt
from erpsync.domain.model import BadRecord, RunState
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.sync import SyncService
from tests.service.conftest import SOURCE, T0, ListSource, binding, erp_run, in_doubt, open_quarantine
from tests.service.fakes import call_count, calls, sent


def test_start_stop_vanish_and_quarantine_over_two_cycles(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1", "M1"))
    source.put(erp_run("R2", "M2", RunState.PRODUCTION))
    source.put(erp_run("R9", "M9"))  # MM does not know M9
    source.bad.append(BadRecord(source=SOURCE, record_key="row-7", reason="no machine"))

    first = service.run_cycle()

    assert (first.runs_read, first.started, first.quarantined, first.bad_rows) == (3, 2, 1, 1)
    assert sorted(sent(mm, "start")) == ["erp:R1", "erp:R2", "erp:R9"]
    assert {k: binding(uow_factory, k).status for k in ("R1", "R2", "R9")} == {
        "R1": "running",
        "R2": "running",
        "R9": "failed",
    }
    assert binding(uow_factory, "R2").in_setup is False
    assert open_quarantine(uow_factory) == 2  # the bad row and the refused run
    with uow_factory() as uow:
        assert uow.machines.rejected() == {"M9"}
    assert source.acknowledged == 1

    source.put(erp_run("R1", "M1", RunState.ENDED))  # clock-out
    del source.runs["R2"]  # the ERP lost R2: flagged (policy "flag"), left open in MM
    before = call_count(mm)

    second = service.run_cycle()

    assert (second.stopped, second.started, second.flagged) == (1, 0, 1)
    assert calls(mm, after=before) == [("stop", "erp:R1")]
    runs = mm.runs()
    assert (runs["erp:R1"]["end_at"], runs["erp:R2"]["end_at"]) == (fmt(T0.replace(hour=16)), None)
    assert binding(uow_factory, "R1").status == "stopped"
    assert binding(uow_factory, "R2").status == "vanished"
    assert in_doubt(uow_factory) == []
    assert source.acknowledged == 2

    third = service.run_cycle()  # nothing new: the flag is not raised again, nothing is sent

    assert (third.started, third.stopped, third.flagged) == (0, 0, 0)
    assert calls(mm, after=before) == [("stop", "erp:R1")]
