"""Dispatch outcomes on the ports: what the state holds and what MM got, for each kind of answer."""

from __future__ import annotations

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.simulator.wire import fmt
from erpsync.adapters.state.memory import MemoryFence
from erpsync.domain.clock import utcnow
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import RunState
from erpsync.service.dispatch import raise_for_result
from erpsync.service.policy import SyncPolicy
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.sync import SyncService
from tests.service.conftest import (
    T0,
    ListSource,
    binding,
    dispatch,
    erp_run,
    in_doubt,
    open_quarantine,
)
from tests.service.fakes import calls, hold, sent


def test_an_applied_start_binds_the_run_running(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))

    result = dispatch(service)

    assert (result.succeeded, result.by_kind) == (1, {"start_run": 1})
    assert sent(mm, "start") == ["erp:R1"]
    held = mm.runs()["erp:R1"]
    assert (held["machine_id"], held["phase"], held["start_at"]) == ("M1", "setup", fmt(T0))
    bound = binding(uow_factory, "R1")
    assert (bound.status, bound.in_setup, bound.mm_machine_id) == ("running", True, "M1")
    assert in_doubt(uow_factory) == []


def test_a_stop_mm_answers_404_is_settled_as_nothing_to_stop_once_a_read_confirms_it(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    dispatch(service)
    mm.reset()  # MM lost the run (and forgot the calls so far)
    source.put(erp_run("R1", state=RunState.ENDED))

    result = dispatch(service)

    assert (result.succeeded, result.by_kind, result.quarantined) == (1, {"stop_run": 1}, 0)
    assert [(c["operation"], c["status"]) for c in mm.calls()] == [("stop", 404), ("get", 404)]
    assert mm.runs() == {}
    assert binding(uow_factory, "R1").status == "stopped"
    assert in_doubt(uow_factory) == [] and open_quarantine(uow_factory) == 0


@pytest.mark.parametrize(("ended", "status"), [(False, "running"), (True, "stopped")])
def test_a_409_start_is_read_back_and_settled_as_mm_holds_it(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    uow_factory: UnitOfWorkFactory,
    ended: bool,
    status: str,
) -> None:
    source.put(erp_run("R1"))
    # MM holds the run id with other job fields: the model's own rule answers the start 409
    hold(mm, "erp:R1", start_at=T0, job="J-other/1", end_at=T0.replace(hour=15) if ended else None)

    result = dispatch(service)

    assert (result.succeeded, result.retrying, result.quarantined) == (1, 0, 0)
    log = [(c["operation"], c["status"]) for c in mm.calls()]
    assert log == [("start", 409), ("get", 200)]  # read back, not sent again
    assert mm.runs()["erp:R1"]["job_name"] == "J-other/1"  # MM's run is left as it is
    assert binding(uow_factory, "R1").status == status
    assert in_doubt(uow_factory) == []


def test_a_record_error_quarantines_the_run_and_marks_its_machine_rejected(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1", machine="M9"))  # a machine MM does not know: 400 MachineNotFound

    result = dispatch(service)

    assert (result.succeeded, result.quarantined) == (0, 1)
    assert mm.calls()[0]["status"] == 400 and mm.runs() == {}
    assert binding(uow_factory, "R1").status == "failed"
    assert open_quarantine(uow_factory) == 1
    with uow_factory() as uow:
        assert uow.machines.rejected() == {"M9"}
    assert in_doubt(uow_factory) == []

    source.put(erp_run("R2", machine="M9"))  # a later run on the machine is held back, not sent
    dispatch(service)
    assert sent(mm, "start") == ["erp:R1"]


def test_a_plain_record_error_quarantines_without_rejecting_the_machine(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    mm.set_faults({"kind": "error", "status": 422, "operation": "start", "times": 1})

    result = dispatch(service)

    assert result.quarantined == 1 and open_quarantine(uow_factory) == 1
    assert mm.runs() == {}
    with uow_factory() as uow:
        assert uow.machines.rejected() == set()


def test_401_refused_stops_the_round_and_leaves_every_action_due(
    uow_factory: UnitOfWorkFactory,
    source: ListSource,
    mm: FakeMachineMetrics,
    fence: MemoryFence,
    policy: SyncPolicy,
) -> None:
    for key, machine in (("R1", "M1"), ("R2", "M2"), ("R3", "M3")):
        source.put(erp_run(key, machine=machine))
    revoked = FakeMachineMetrics(mm.model, api_key="revoked")  # the model answers 401 invalid_token
    service = SyncService(uow_factory, source, revoked, fence, policy)

    result = dispatch(service)

    assert result.config_error and result.succeeded == 0
    with pytest.raises(ConfigError):
        raise_for_result(result)
    assert 1 <= len(sent(mm, "start")) <= 2  # one call per sender thread at most, then the round stops
    assert {c["status"] for c in mm.calls()} == {401}
    assert mm.runs() == {}
    assert {a.mm_run_id for a in in_doubt(uow_factory)} == {"erp:R1", "erp:R2", "erp:R3"}
    assert {binding(uow_factory, k).status for k in ("R1", "R2", "R3")} == {"starting"}


def test_a_transient_failure_is_retried_then_given_up_at_max_attempts_after_a_read(
    service: SyncService, source: ListSource, mm: FakeMachineMetrics, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    mm.set_faults({"kind": "error", "status": 503, "operation": "start", "times": 2})

    first = dispatch(service)

    assert (first.retrying, first.failed) == (1, 0)
    (retryable,) = in_doubt(uow_factory)
    assert retryable.attempts == 1 and binding(uow_factory, "R1").status == "starting"
    now = utcnow()
    with uow_factory() as uow:  # its backoff ran out: the next cycle claims it again
        claimed = uow.actions.claim(retryable, now.replace(year=now.year + 1), now.replace(year=now.year + 2))
    assert claimed is not None and claimed.attempts == 2

    second = service.dispatcher().run([[claimed]])  # max_action_attempts = 2

    assert (second.retrying, second.failed) == (0, 1)
    assert calls(mm) == [("start", "erp:R1"), ("start", "erp:R1"), ("get", "erp:R1")]
    assert [c["status"] for c in mm.calls()] == [503, 503, 404] and mm.runs() == {}
    assert in_doubt(uow_factory) == []
    assert binding(uow_factory, "R1").status == "failed"  # the read confirms MM has no such run
    assert open_quarantine(uow_factory) == 1
