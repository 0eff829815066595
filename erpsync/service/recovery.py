"""Settle actions left in doubt (a crash, a timeout) by reading MachineMetrics first.

An action is in doubt when its intent is journaled but no outcome is: the call may or may not
have reached MM. Re-sending blindly could duplicate a run, so we ask MM (get job run) what it has:
- a start MM already has is settled as applied; a start MM lacks is sent again;
- a stop whose run MM shows ended is settled; one still open is sent again; an unknown run has
  nothing to stop (MM's 404 to the stop is settled on this read);
- a production switch (start with startInSetup=false on a run MM has) cannot be told apart by a
  read, so it is re-sent: MM treats an identical start as a no-op (idempotent by run id).
Retryable failures whose backoff has run out take the same path. An action on its last attempt
gives up only after a read (domain/give_up.py): a failed read here is that read.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from erpsync.adapters.mm.mapper import request_facts
from erpsync.domain.clock import utcnow
from erpsync.domain.lifecycle import (
    ActionKind,
    Answer,
    JournaledAction,
    MMAnswer,
    MMRunState,
    Outcome,
    Recovery,
    recovery_step,
)
from erpsync.service.dispatch import Dispatcher, DispatchResult, raise_for_result

log = structlog.get_logger(__name__)


def settle_in_doubt(dispatcher: Dispatcher, claim_seconds: float, *, due_now: bool = False) -> DispatchResult:
    """Claim every due action, read MM, and settle or re-send each one.

    `due_now` (start-up, a new leadership term): every pending action is due at once, whatever
    claim a previous leader left on it: that leader's claims died with its term (fencing).
    """
    now = utcnow()
    horizon = now + timedelta(days=3650) if due_now else now
    claimed: list[JournaledAction] = []
    with dispatcher.uow(dispatcher.fence) as uow:
        for entry in uow.actions.due(horizon):
            taken = uow.actions.claim(entry, horizon, now + timedelta(seconds=claim_seconds))
            if taken is not None:
                claimed.append(taken)
    if not claimed:
        return DispatchResult()
    log.info("settling actions in doubt", count=len(claimed))
    groups: dict[str, list[JournaledAction]] = {}
    for entry in claimed:
        groups.setdefault(str(entry.payload.get("erpMachineId") or entry.mm_run_id), []).append(entry)
    result = dispatcher.run(list(groups.values()), sender=lambda e: _settle_one(dispatcher, e))
    raise_for_result(result)
    return result


def _settle_one(dispatcher: Dispatcher, action: JournaledAction) -> Outcome:
    """Read MM first; settle what it already has (domain/lifecycle.py `recovery_step`), send the rest."""
    if action.kind not in (ActionKind.START, ActionKind.STOP) or not action.mm_run_id:
        return dispatcher.send(action)
    run = dispatcher.read_run(action)
    if isinstance(run, MMAnswer):  # retried later; on the last attempt it gives up on this read
        return dispatcher.answered(action, run, read=run)
    state: MMRunState = "missing" if run is None else "ended" if run.end_at is not None else "open"
    if run is None or recovery_step(action, state, request_facts(action.payload)) is Recovery.SEND:
        # a stop of a run this read found missing: its 404 is recorded as nothing to stop on this
        # read (no second one); a start's failure is read again after the call (MM may take it)
        return dispatcher.send(action, missing=run is None)
    if action.kind is ActionKind.START:
        held = MMAnswer(Answer.HELD, detail="settled after a crash: MM already had this run")
    else:
        held = MMAnswer(
            Answer.HELD, detail="settled after a crash: MM already had this run ended", run_end_at=run.end_at
        )
    return dispatcher.answered(action, held)
