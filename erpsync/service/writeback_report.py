"""What a write-back cycle reports: one row per run and the cycle's counters.

`erpsync writeback` prints them, the cycle row stores the counters, and a dry run adds the sink's
own readiness check, so a person sees whether the writes it lists could be made.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from erpsync.adapters.erp.sinks.base import CountSink
from erpsync.domain.drift import DriftKind
from erpsync.domain.errors import ConfigError, RetryableError
from erpsync.domain.model import PartCounts
from erpsync.domain.plausible_counts import IMPLAUSIBLE_OUTCOME
from erpsync.domain.writeback_rules import CountTarget, counts_dict

# the outcome of a run MM lost while erpsync had it running: nothing to write (domain/drift.py)
MISSING_OUTCOME = str(DriftKind.MISSING_IN_MM)


@dataclass
class WritebackRow:
    """One run in a cycle: what MM said, what erpsync last wrote, what happened."""

    mm_run_id: str
    run_key: str
    erp_job: str
    erp_operation: str
    erp_machine: str
    mm_counts: dict[str, int] | None
    last_written: dict[str, int] | None
    outcome: str
    message: str | None = None


@dataclass
class WritebackSummary:
    """What one cycle did: printed by `erpsync writeback`, stored on the cycle row."""

    sink: str
    dry_run: bool = False
    read_only: bool = False
    read: int = 0
    calls: int = 0
    written: int = 0
    already_written: int = 0
    unchanged: int = 0
    no_data: int = 0
    unreachable: int = 0
    conflicts: int = 0
    refused: int = 0
    failed: int = 0
    skipped: int = 0
    would_write: int = 0
    final_quarantined: int = 0  # stopped runs whose final counts kept failing: quarantined
    # runs whose MM counts failed the plausibility check: quarantined, nothing written for them
    # (`implausible_runs()` names them; a CLI counts them as not done)
    implausible: int = 0
    # runs MM lost or ended while erpsync had them running (drift: audited once, healed by
    # `sync.heal_drift`); a lost one is its row's outcome, an ended one's counts are written as usual
    drifted: int = 0
    # a dry run checks the sink without writing: whether it is ready, and what was found
    sink_ready: bool | None = None
    sink_check: str | None = None
    sink_config_error: bool = False
    duration: float = 0.0
    outcome: str = "ok"
    correlation_id: str | None = None
    rows: list[WritebackRow] = field(default_factory=list)

    def counters(self) -> dict[str, Any]:
        """Everything but the rows (the cycle row's summary, `--json` output)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rows"}

    def count(self, row: WritebackRow) -> None:
        attribute = {
            "written": "written",
            "already_written": "already_written",
            "unchanged": "unchanged",
            "no_data": "no_data",
            "conflict": "conflicts",
            "decrease_refused": "refused",
            "failed": "failed",
            "quarantined": "skipped",
            "would_write": "would_write",
            IMPLAUSIBLE_OUTCOME: "implausible",
            MISSING_OUTCOME: None,  # counted as drift (`drifted`) with the ended ones
        }[row.outcome]
        if attribute is not None:
            setattr(self, attribute, getattr(self, attribute) + 1)
        self.rows.append(row)

    def implausible_runs(self) -> list[WritebackRow]:
        """The runs this cycle quarantined for implausible counts (each row's message names the
        values MM sent and the rule they broke)."""
        return [row for row in self.rows if row.outcome == IMPLAUSIBLE_OUTCOME]

    def final_outcome(self) -> str:
        """failed when every read run failed or was unreachable, partial when some were."""
        troubled = self.failed + self.unreachable
        if troubled and troubled >= self.read:
            return "failed"
        return "partial" if troubled else "ok"


def maybe_counts(counts: PartCounts | None) -> dict[str, int] | None:
    return counts_dict(counts) if counts is not None else None


def row_of(
    target: CountTarget, counts: PartCounts | None, outcome: str, message: str | None = None
) -> WritebackRow:
    return WritebackRow(
        target.mm_run_id,
        target.run_key,
        target.erp_job,
        target.erp_operation,
        target.erp_machine,
        maybe_counts(counts),
        maybe_counts(target.last),
        outcome,
        message,
    )


def check_sink(sink: CountSink, summary: WritebackSummary) -> None:
    """A dry run says whether the writes it lists could be made: the sink's own check."""
    try:
        summary.sink_check = sink.check()
        summary.sink_ready = True
    except ConfigError as exc:
        summary.sink_ready, summary.sink_check, summary.sink_config_error = False, str(exc), True
    except RetryableError as exc:
        summary.sink_ready, summary.sink_check = False, str(exc)
