"""The port every count sink implements, and the records that cross it.

A sink receives absolute per-run totals and writes them into one ERP target (a staging table, a
labor ticket, a customer's statement, an outbox file). Each `write` call is one ERP transaction
(or one file): all of the batch or none of it. Inside it the sink compares the ERP's current
value with what erpsync last wrote (`CountWrite.previous`, or one of its `in_doubt` writes) and
never overwrites a person's edit.
Policy that needs no ERP (no data, unchanged, decreases) is decided before, by the service.

Every sink today writes absolute totals keyed by the MM run, so a replay changes nothing. A sink
that must post deltas instead (e.g. new labor-ticket rows) has to record each posted delta in a
ledger row (keyed by run and count level) committed in the same ERP transaction as the delta, and
check that ledger before posting: otherwise a crash between the ERP commit and erpsync's state
commit would post the same delta twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import CountTarget, counts_dict, same_counts

COUNT_COLUMNS = ("TOTAL_QTY", "GOOD_QTY", "SCRAP_QTY", "NONCONFORM_QTY")
# What names one run in the rows IT reads: the outbox file's and the staging table's first columns.
RUN_ID_COLUMNS = ("RUN_ID", "SOURCE", "RUN_KEY", "ERP_JOB", "ERP_OPERATION", "ERP_MACHINE")
# One run's counts as a row for IT: the outbox file's header and the staging table's columns.
RUN_COUNT_COLUMNS = (*RUN_ID_COLUMNS, *COUNT_COLUMNS, "MM_START_AT", "MM_END_AT", "UPDATED_AT")
Outcome = Literal["written", "unchanged", "already_written", "conflict", "decrease_refused", "failed"]


@dataclass(frozen=True, slots=True)
class CountWrite:
    """One run's new `counts` for its `target`: the run as the state holds it for this sink.

    `previous` is what erpsync last wrote there (None: never). `in_doubt` are values erpsync set
    out to write in earlier cycles whose outcome it never recorded (killed after the ERP commit):
    the ERP holding one of them is erpsync's own write.
    """

    target: CountTarget
    counts: PartCounts

    @property
    def mm_run_id(self) -> str:
        return self.target.mm_run_id

    @property
    def previous(self) -> PartCounts | None:
        return self.target.last

    @property
    def in_doubt(self) -> tuple[PartCounts, ...]:
        """The writes in doubt other than the new counts (those are compared as the new value)."""
        return tuple(c for c in self.target.in_doubt if not same_counts(c, self.counts))

    def run_columns(self) -> dict[str, str]:
        """The run's `RUN_ID_COLUMNS` and their values, in that order."""
        t = self.target
        ids = (t.mm_run_id, t.source, t.run_key, t.erp_job, t.erp_operation, t.erp_machine)
        return dict(zip(RUN_ID_COLUMNS, ids, strict=True))


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What happened to one `CountWrite`; `before`/`after` are the ERP values, for the audit row."""

    mm_run_id: str
    outcome: Outcome
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    message: str | None = None


def unread_result(w: CountWrite, outcome: Outcome, message: str) -> WriteResult:
    """The result of a sink that reads nothing back from the ERP: `before` is what erpsync last wrote."""
    before = counts_dict(w.previous) if w.previous is not None else None
    return WriteResult(w.mm_run_id, outcome, before, counts_dict(w.counts), message)


def carries_end_at(sink: object) -> bool:
    """Whether `sink` stores the run's MM end time (staging ``MM_END_AT``): such a sink gets a
    stopped run's final read even when its counts did not change, so the end time arrives."""
    return bool(getattr(sink, "carries_end_at", False))


class CountSink(Protocol):
    """Writes absolute per-run counts into the ERP, one transaction (or file) per `write` call."""

    name: str
    # Largest batch one `write` call takes; None = the whole cycle in one call (one outbox file).
    batch_size: int | None

    def write(self, batch: Sequence[CountWrite]) -> list[WriteResult]:
        """Write the batch atomically; one result per item. Raises ConfigError (set-up is wrong),
        RetryableError (ERP unreachable: nothing written) or RecordError (a row broke the batch:
        nothing written; retry the items one at a time to find it)."""

    def check(self) -> str:
        """Check, writing nothing, that the target is ready (reachable, table there); returns
        what was found ready. Raises ConfigError (set-up is wrong) or RetryableError (unreachable)."""

    def close(self) -> None:
        """Release connections."""
