"""One write-back cycle: part counts of bound MM runs read from MM and written into the ERP.

The flow, in the order a cycle runs it, and why it is crash-safe:

1. MM read (service/writeback_reads.py) for every bound run that is active, or stopped with its
   final counts still due, ``max_concurrency`` at a time. Nothing is written yet; a crash here
   loses nothing.
2. Decide per run (domain/writeback_rules.py): implausible counts (domain/plausible_counts.py,
   checked as they are read) are quarantined, never written; no data is skipped, never written as
   0; unchanged counts are not written again; a decrease is refused unless the policy allows it.
3. Intent (state transaction): the values about to be written join the run's writes in doubt
   for this sink. A crash here has written nothing to the ERP.
4. ERP transaction (the sink, adapters/erp/sinks/): rows locked, the ERP value compared with what
   erpsync last wrote, written, committed. A crash before the commit leaves the ERP untouched.
5. State transaction (service/writeback_commit.py): the run's last-written counts for this sink,
   audit rows, quarantine for conflicts. A crash between 4 and 5 leaves the ERP ahead of our
   state, and MM may count on before the next cycle: the ERP then holds neither what erpsync last
   recorded nor what it is about to write, but one of its writes in doubt, so it is erpsync's own
   value and is overwritten (or, if MM did not move, recorded as ``already_written``): no second
   write, no false conflict, no count left behind.

Last-written counts and writes in doubt are kept per sink: a sink is only ever compared with what
erpsync wrote (or set out to write) into *that* sink, so switching ``writeback.sink`` makes the new
sink get the current counts, and writes in doubt for one sink never excuse a value in another.

Final counts: a run erpsync stops stays a candidate (``final_counts_since``, set when the stop is
settled) until a read at least ``settle_window_minutes`` after the stop, or after its counts last
changed, has been processed with MM showing the run ended: the window never counts from MM's end
time, so a clock-out entered hours late or an outage longer than the window still gets the final
counts written. A run whose final read or write keeps failing is quarantined after
``final_counts_max_hours`` (domain/writeback_rules.py `final_counts_step`). Sinks that carry an
end time (staging ``MM_END_AT``) get the final read even when the counts did not change.

Batches go to the ERP while the remaining reads are still in flight, so a cycle over thousands of
runs takes about as long as its MM reads. Record-level problems never raise: they are audited and
counted; only configuration problems (MM refuses the key, the staging table is missing) do.
"""

from __future__ import annotations

import threading
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from erpsync.adapters.erp.sinks.base import CountSink, CountWrite, WriteResult, carries_end_at
from erpsync.adapters.mm.errors import MMError
from erpsync.config import Settings
from erpsync.domain.drift import Drift, DriftKind, HealDrift, drift_of
from erpsync.domain.errors import ConfigError, FencedError, RecordError, RetryableError
from erpsync.domain.model import PartCounts
from erpsync.domain.plausible_counts import (
    DEFAULT_MAX_PART_COUNT,
    IMPLAUSIBLE_CLASS,
    IMPLAUSIBLE_OUTCOME,
    implausible_reason,
)
from erpsync.domain.writeback_rules import (
    CONFLICT_CLASS,
    CountTarget,
    FinalStep,
    NoDataReason,
    Verdict,
    counts_dict,
    final_counts_step,
    plan_write,
    record_intent,
    same_counts,
)
from erpsync.observability.correlation import correlation, current_correlation_id
from erpsync.observability.crashpoints import crash_point
from erpsync.observability.metrics import WRITEBACK_WRITES
from erpsync.service.cycles import cycle
from erpsync.service.ports import Fence, MachineMetrics, UnitOfWorkFactory
from erpsync.service.writeback_commit import Done, commit_state
from erpsync.service.writeback_reads import CountRead, read_counts
from erpsync.service.writeback_report import (
    MISSING_OUTCOME,
    WritebackSummary,
    check_sink,
    maybe_counts,
    row_of,
)

log = structlog.get_logger(__name__)

# MM answered for sure that a run has no counts: its final read is done (nothing to write)
_CONFIRMED_NO_DATA = frozenset({str(NoDataReason.NOT_FOUND), str(NoDataReason.NO_METRICS)})

_NO_DATA_MESSAGES = {
    str(NoDataReason.NOT_FOUND): "MachineMetrics has no such job run (404): nothing written",
    str(NoDataReason.NO_METRICS): "MachineMetrics returned the job run without metrics: nothing written",
}


@dataclass(frozen=True, slots=True)
class WritebackPolicy:
    """The settings a cycle decides by (the rest of Settings is the adapters' business)."""

    allow_decrease: bool
    settle_window_minutes: int  # stopped runs are read again this long after the stop (MM may count on)
    max_concurrency: int  # MM reads at a time
    final_counts_max_hours: int = 72  # a stopped run's failing final read is quarantined after this
    max_part_count: int = DEFAULT_MAX_PART_COUNT  # a higher MM count is implausible: quarantined
    heal_drift: HealDrift = "restart"  # a run MM lost or ended while erpsync has it running (drift.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> WritebackPolicy:
        return cls(
            allow_decrease=settings.writeback.allow_decrease,
            settle_window_minutes=settings.writeback.settle_window_minutes,
            max_concurrency=settings.mm.max_concurrency,
            final_counts_max_hours=settings.writeback.final_counts_max_hours,
            max_part_count=settings.writeback.max_part_count,
            heal_drift=settings.sync.heal_drift,
        )


def run_writeback(
    uow: UnitOfWorkFactory,
    mm: MachineMetrics,
    sink: CountSink,
    policy: WritebackPolicy,
    *,
    run_id: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    fence: Fence | None = None,
    stop: threading.Event | None = None,
) -> WritebackSummary:
    """Run one write-back cycle (or, with `run_id`, one run); see the module docstring.

    `dry_run` reads MM and erpsync's state and reports what would be written, touching neither
    the ERP nor the state database. `fence`, when given, is checked before every ERP batch and in
    every state commit, so a former leader cannot write. `stop` (the service is stopping) ends the
    MM reads early; what was read is still written and committed.
    """
    if run_id is not None:
        with uow() as work:
            if not work.bindings.exists(run_id):
                raise RecordError(f"no bound run has MM run id {run_id!r} (see `erpsync status`)")
    scope = correlation("schedule") if current_correlation_id() is None else nullcontext()
    with scope:
        job = _WritebackCycle(uow, mm, sink, policy, now or datetime.now(UTC), fence, dry_run, stop)
        if dry_run:
            summary = job.run(run_id)
            check_sink(sink, summary)
            return summary
        with cycle(uow, "writeback") as record:
            summary = job.run(run_id)
            record.outcome = summary.outcome
            record.summary = summary.counters()
        return summary


@dataclass(eq=False)
class _WritebackCycle:
    uow: UnitOfWorkFactory
    mm: MachineMetrics
    sink: CountSink
    policy: WritebackPolicy
    now: datetime
    fence: Fence | None
    dry_run: bool
    stop: threading.Event | None = None
    summary: WritebackSummary = field(init=False)
    erp_unavailable: str | None = field(default=None, init=False)
    implausible_open: set[str] = field(default_factory=set, init=False)  # runs quarantined for it
    # runs MM lost or ended while erpsync has them running: recorded with their batch's outcomes
    drifts: dict[str, Drift] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.summary = WritebackSummary(
            sink=self.sink.name,
            dry_run=self.dry_run,
            read_only=self.sink.name == "none",
            correlation_id=current_correlation_id(),
        )

    def run(self, run_id: str | None) -> WritebackSummary:
        started = time.monotonic()
        targets, blocked = self._load(run_id)
        for target in blocked:
            message = "open write-back conflict in quarantine: not read, not written"
            self.summary.count(row_of(target, None, "quarantined", message))
        self.summary.read = self.summary.calls = len(targets)
        limit = self.sink.batch_size or max(1, len(targets))
        batch: list[tuple[CountTarget, PartCounts]] = []
        settled: list[Done] = []
        with closing(
            read_counts(self.mm, targets, self.policy.max_concurrency, self.policy.max_part_count)
        ) as reads:
            for read in reads:
                if self.stop is not None and self.stop.is_set():
                    break  # stopping: the reads not yet done wait for the next leader's cycle
                done = self._plan(read)
                if done is not None:
                    settled.append(done)
                    continue
                assert read.counts is not None
                batch.append((read.target, read.counts))
                if len(batch) >= limit:
                    self._flush(batch, settled)
                    batch, settled = [], []
        if batch or settled:
            self._flush(batch, settled)
        self.summary.duration = round(time.monotonic() - started, 3)
        self.summary.outcome = self.summary.final_outcome()
        log.info("writeback.cycle", **{k: v for k, v in self.summary.counters().items() if v})
        return self.summary

    def _load(self, run_id: str | None) -> tuple[list[CountTarget], list[CountTarget]]:
        """The runs to read, each with what erpsync last wrote (and set out to write) to THIS sink,
        and the runs an open conflict keeps erpsync's hands off."""
        with self.uow() as work:
            targets = work.counts.targets(self.sink.name, run_id=run_id)
            blocking = work.counts.blocking_conflicts()
            self.implausible_open = work.counts.quarantined_runs(IMPLAUSIBLE_CLASS)
        blocked = [t for t in targets if (t.source, t.mm_run_id) in blocking]
        return [t for t in targets if (t.source, t.mm_run_id) not in blocking], blocked

    # ---- step 2: decide without the ERP ------------------------------------------------------------

    def _plan(self, read: CountRead) -> Done | None:
        """The outcome when no ERP write is needed, else None (the run joins the ERP batch)."""
        target = read.target
        drift = self._drift(read)
        if drift is not None and drift.kind is DriftKind.MISSING_IN_MM:
            return Done(target, MISSING_OUTCOME, None, message=drift.message, drift=drift)
        if drift is not None:  # ended in MM: its counts are written as any run's, then it is recorded
            self.drifts[target.mm_run_id] = drift
        if read.error is not None and read.reason is None:
            failure = f"MM read failed: {read.error}"
            return Done(target, "failed", None, message=failure, error_class="read_failed")
        if read.implausible is not None:  # never written, not even to erpsync's own columns
            reason = implausible_reason(target, read.implausible)
            last = maybe_counts(target.last)
            return Done(
                target, IMPLAUSIBLE_OUTCOME, None, last, read.implausible.values, reason, IMPLAUSIBLE_CLASS
            )
        plan = plan_write(
            read.counts,
            target.last,
            allow_decrease=self.policy.allow_decrease,
            no_data_reason=read.reason,
            confirmed=not target.in_doubt,
        )
        if plan.verdict is Verdict.NO_DATA:
            if read.reason is NoDataReason.UNREACHABLE:
                self.summary.unreachable += 1
            http_status = read.error.http_status if isinstance(read.error, MMError) else None
            no_data = str(read.error) if read.error is not None else _NO_DATA_MESSAGES.get(plan.reason)
            return Done(
                target, "no_data", None, message=no_data, error_class=plan.reason, http_status=http_status
            )
        assert read.counts is not None
        if plan.verdict is Verdict.UNCHANGED:
            if self.dry_run or not self._end_due(target, read.counts):
                return Done(target, "unchanged", read.counts)
            return None  # the final read: the sink gets the run's end time (staging MM_END_AT)
        if plan.verdict is Verdict.DECREASE_REFUSED:
            return Done(
                target,
                "decrease_refused",
                read.counts,
                before=maybe_counts(target.last),
                after=counts_dict(read.counts),
                message=plan.reason,
                error_class="count_decrease",
            )
        if self.dry_run:
            return Done(
                target, "would_write", read.counts, maybe_counts(target.last), counts_dict(read.counts)
            )
        return None

    def _drift(self, read: CountRead) -> Drift | None:
        """Whether this read shows MM lost or ended a run erpsync has running (domain/drift.py):
        write-back's own read, so finding drift costs no MM call."""
        if read.mm_state is None:
            return None
        t = read.target
        return drift_of(
            t.status,
            read.mm_state,
            mm_run_id=t.mm_run_id,
            run_key=t.run_key,
            what=f"{t.erp_job} op {t.erp_operation} on {t.erp_machine}",
            end_at=read.mm_end_at,
            now=self.now,
            heal=self.policy.heal_drift,
        )

    def _end_due(self, target: CountTarget, counts: PartCounts) -> bool:
        """This unchanged read finishes a stopped run whose sink carries an end time: send it there."""
        if not carries_end_at(self.sink) or target.final_since is None or counts.end_at is None:
            return False
        return self._final(target, failed=False, changed=False, ended=True).since is None

    def _final(self, target: CountTarget, *, failed: bool, changed: bool, ended: bool) -> FinalStep:
        assert target.final_since is not None
        return final_counts_step(
            target.final_since,
            self.now,
            window=timedelta(minutes=self.policy.settle_window_minutes),
            max_age=timedelta(hours=self.policy.final_counts_max_hours),
            failed=failed,
            changed=changed,
            ended=ended,
        )

    def _final_step(self, d: Done) -> FinalStep | None:
        """A stopped run's final-counts marker after this outcome (None: not a stopped run)."""
        if d.target.final_since is None:
            return None
        confirmed_none = d.outcome == "no_data" and d.error_class in _CONFIRMED_NO_DATA
        read = d.outcome in ("written", "already_written", "unchanged", "decrease_refused")
        # implausible counts keep a stopped run due, as a failed read does (docs/machinemetrics.md)
        failed = d.outcome in ("failed", IMPLAUSIBLE_OUTCOME) or (
            d.outcome == "no_data" and not confirmed_none
        )
        changed = d.outcome in ("written", "already_written") and not same_counts(d.counts, d.target.last)
        ended = confirmed_none or (read and d.counts is not None and d.counts.end_at is not None)
        return self._final(d.target, failed=failed, changed=changed, ended=ended)

    # ---- steps 3 to 5: intent, ERP transaction, state transaction ---------------------------------

    def _flush(self, batch: list[tuple[CountTarget, PartCounts]], settled: list[Done]) -> None:
        done = list(settled)
        if batch:
            done += self._write(batch)
        for item in done:
            item.drift = item.drift or self.drifts.pop(item.target.mm_run_id, None)
            note = item.message or (item.drift.message if item.drift is not None else None)
            self.summary.count(row_of(item.target, item.counts, item.outcome, note))
            self.summary.drifted += item.drift is not None
        if self.dry_run:
            return
        for item in done:
            item.final = self._final_step(item)
            if item.final is not None and item.final.give_up:
                self.summary.final_quarantined += 1
        for item in done:
            WRITEBACK_WRITES.labels(sink=self.sink.name, outcome=item.outcome).inc()
        token = self.fence.token if self.fence is not None else None
        # MM answered plausible counts for a run quarantined for implausible ones: that entry resolves
        plausible = [d.target.mm_run_id for d in done if d.counts is not None]
        healed = [run for run in plausible if run in self.implausible_open]
        with self.uow(self.fence) as work:
            commit_state(work, self.sink.name, done, self.now, token)
            if healed:
                work.counts.resolve_quarantined(IMPLAUSIBLE_CLASS, healed)
        crash_point("writeback.after_state_commit")

    def _write(self, batch: list[tuple[CountTarget, PartCounts]]) -> list[Done]:
        entries = {target.mm_run_id: (target, counts) for target, counts in batch}
        writes = [CountWrite(target, counts) for target, counts in batch]
        if self.erp_unavailable is not None:
            return [_failed(entries[w.mm_run_id], self.erp_unavailable) for w in writes]
        if self.fence is not None and not self.fence.is_current():
            raise FencedError("the leader lease was lost: no ERP write")
        self._record_intents(batch)
        crash_point("writeback.before_erp_write")
        try:
            results = self.sink.write(writes)
        except ConfigError:
            raise
        except RetryableError as exc:
            self.erp_unavailable = str(exc)
            return [_failed(entries[w.mm_run_id], str(exc)) for w in writes]
        except Exception as exc:  # one bad row spoils a batch: write one at a time to find it
            log.warning("writeback.batch_failed", error=str(exc), size=len(writes))
            results = self._write_one_by_one(writes)
        crash_point("writeback.after_erp_commit")
        return [_done(entries[r.mm_run_id], r) for r in results]

    def _record_intents(self, batch: list[tuple[CountTarget, PartCounts]]) -> None:
        """Step 3: what is about to be written becomes a write in doubt until step 5 confirms it."""
        intents = [  # in mm_run_id order, the one lock order of every multi-row update
            (target, record_intent(target.in_doubt, counts))
            for target, counts in sorted(batch, key=lambda entry: entry[0].mm_run_id)
            # an end time sent with the counts last written: the ERP holding those is no doubt
            if target.in_doubt or not same_counts(counts, target.last)
        ]
        with self.uow(self.fence) as work:
            work.counts.record_intents(self.sink.name, intents)

    def _write_one_by_one(self, writes: list[CountWrite]) -> list[WriteResult]:
        results: list[WriteResult] = []
        for w in writes:
            if self.erp_unavailable is not None:
                results.append(WriteResult(w.mm_run_id, "failed", message=self.erp_unavailable))
                continue
            try:
                results.extend(self.sink.write([w]))
            except ConfigError:
                raise
            except RetryableError as exc:
                self.erp_unavailable = str(exc)
                results.append(WriteResult(w.mm_run_id, "failed", message=str(exc)))
            except Exception as exc:
                results.append(WriteResult(w.mm_run_id, "failed", message=f"{type(exc).__name__}: {exc}"))
        return results


def _done(entry: tuple[CountTarget, PartCounts], result: WriteResult) -> Done:
    target, counts = entry
    error_class = {"conflict": CONFLICT_CLASS, "failed": "write_failed"}.get(result.outcome)
    return Done(
        target,
        result.outcome,
        counts,
        dict(result.before) if result.before is not None else None,
        dict(result.after) if result.after is not None else None,
        result.message,
        error_class,
    )


def _failed(entry: tuple[CountTarget, PartCounts], message: str) -> Done:
    target, counts = entry
    return Done(
        target, "failed", counts, maybe_counts(target.last), counts_dict(counts), message, "erp_unavailable"
    )
