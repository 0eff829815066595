"""Two settlers of one action (a former leader and its successor's recovery): the first one stands."""

from __future__ import annotations

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.mapper import request_facts
from erpsync.adapters.state.memory import MemoryFence
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.clock import utcnow
from erpsync.domain.errors import FencedError
from erpsync.domain.lifecycle import Answer, MMAnswer, outcome_of
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.sync import SyncService
from tests.service.conftest import TOKEN, ListSource, binding, erp_run, in_doubt, journal, open_quarantine


def test_the_first_outcome_stands_and_the_second_is_dropped(
    service: SyncService, source: ListSource, uow_factory: UnitOfWorkFactory, fence: MemoryFence
) -> None:
    source.put(erp_run("R1"))
    ((action,),) = journal(service)
    facts = request_facts(action.payload)
    applied = outcome_of(action, MMAnswer(Answer.APPLIED), facts, max_attempts=3, now=utcnow())
    rejected = outcome_of(
        action,
        MMAnswer(Answer.REJECTED, http_status=422, machine_rejected=True),
        facts,
        max_attempts=3,
        now=utcnow(),
    )

    with uow_factory(fence) as uow:
        first = uow.actions.settle([applied], fencing_token=TOKEN)
    with uow_factory(fence) as uow:
        second = uow.actions.settle([rejected], fencing_token=TOKEN + 1)

    assert first == [applied] and second == []
    assert binding(uow_factory, "R1").status == "running"
    assert open_quarantine(uow_factory) == 0
    with uow_factory() as uow:
        assert uow.machines.rejected() == set()
    assert in_doubt(uow_factory) == []


def test_a_dispatcher_settling_late_changes_nothing(
    service: SyncService, source: ListSource, uow_factory: UnitOfWorkFactory
) -> None:
    source.put(erp_run("R1"))
    ((action,),) = journal(service)
    dispatcher = service.dispatcher()
    recovered = dispatcher.run([[action]], sender=lambda a: dispatcher.answered(a, MMAnswer(Answer.APPLIED)))
    late = dispatcher.run(
        [[action]], sender=lambda a: dispatcher.answered(a, MMAnswer(Answer.REJECTED, http_status=400))
    )

    assert (recovered.succeeded, late.succeeded, late.quarantined) == (1, 0, 0)
    assert binding(uow_factory, "R1").status == "running"
    assert open_quarantine(uow_factory) == 0


def test_a_leader_whose_lease_moved_on_sends_and_settles_nothing(
    service: SyncService,
    source: ListSource,
    mm: FakeMachineMetrics,
    tables: MemoryTables,
    fence: MemoryFence,
    uow_factory: UnitOfWorkFactory,
) -> None:
    source.put(erp_run("R1"))
    groups = journal(service)
    tables.lease_token = TOKEN + 1  # another instance leads now

    result = service.dispatcher().run(groups)

    assert (result.succeeded, result.not_sent) == (0, 1)
    assert mm.calls() == []
    assert binding(uow_factory, "R1").status == "starting"
    assert [a.mm_run_id for a in in_doubt(uow_factory)] == ["erp:R1"]  # left to the new leader
    with pytest.raises(FencedError), uow_factory(fence):
        pass
