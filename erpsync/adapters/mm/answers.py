"""MM's answers in the lifecycle's words: an `MMError` (or a request body) as the domain reads it.

The HTTP status table is in adapters/mm/errors.py; this maps its error classes onto
`domain.lifecycle.Answer`, so the rules of what an answer does to an action stay in the domain.
An answer that is not MM's own (`MMUnexpectedAnswerError`: HTML, a redirect...) is a retryable
error, so it reads as TRANSIENT: never applied, never "not found", never a conflict.
"""

from __future__ import annotations

from erpsync.adapters.mm.errors import MMConfigError, MMError, MMNotFoundError, MMRecordError
from erpsync.domain.lifecycle import Answer, MMAnswer

# MM's code for a start on a machine id it does not know: runs on it are held back, not re-sent
MACHINE_REJECTED_CODES = frozenset({"MachineNotFound"})


def answer_of(exc: MMError) -> MMAnswer:
    """The lifecycle's reading of an MM error (a 409 on a start is read back by the dispatcher)."""
    if isinstance(exc, MMConfigError):
        kind = Answer.REFUSED
    elif isinstance(exc, MMNotFoundError):
        kind = Answer.NOT_FOUND
    elif isinstance(exc, MMRecordError):
        kind = Answer.REJECTED
    else:
        kind = Answer.TRANSIENT
    return MMAnswer(
        kind,
        http_status=exc.http_status,
        error_class=type(exc).__name__,
        message=str(exc),
        machine_rejected=exc.code in MACHINE_REJECTED_CODES or "erpMachineId" in str(exc),
    )


def unexpected(exc: BaseException) -> MMAnswer:
    """A failure that is no MM answer at all (a bug, an unforeseen exception): retried later."""
    return MMAnswer(Answer.TRANSIENT, error_class=type(exc).__name__, message=str(exc))
