"""One write-back cycle: part counts of bound MM runs read from MM and written into the ERP.

Order, per batch, and why it is crash-safe:

1. MM read (get job run) for every bound run that is active or ended within the settle window,
   ``mm.max_concurrency`` at a time. Nothing is written yet; a crash here loses nothing.
2. Decide per run (domain/writeback_rules.py): no data is skipped, never written as 0; unchanged
   counts are not written again; a decrease is refused unless ``writeback.allow_decrease``.
3. Intent (state transaction): the values about to be written join the run's ``counts_in_doubt``
   for this sink (``erpsync_sink_counts``). A crash here has written nothing to the ERP.
4. ERP transaction (the sink): rows locked, the ERP value compared with what erpsync last wrote,
   written, committed. A crash before the commit leaves the ERP untouched.
5. State transaction: the run's ``last_*`` counts for this sink (its writes in doubt there
   cleared; the binding mirrors the counts last written by any sink), audit rows,
   quarantine for conflicts. A crash between 4 and 5 leaves the ERP ahead of our state, and MM
   may count on before the next cycle: the ERP then holds neither what erpsync last recorded nor
   what it is about to write, but one of its writes in doubt, so it is erpsync's own value and is
   overwritten (or, if MM did not move, recorded as ``already_written``): no second write, no
   false conflict, no count left behind.

Last-written counts and writes in doubt are kept per sink: a sink is only ever compared with what
erpsync wrote (or set out to write) into *that* sink, so switching ``writeback.sink`` makes the new
sink get the current counts, and writes in doubt for one sink never excuse a value in another.

Batches go to the ERP while the remaining reads are still in flight, so a cycle over thousands of
runs takes about as long as its MM reads. Record-level problems never raise: they are audited and
counted; only configuration problems (MM refuses the key, the staging table is missing) do.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import closing, nullcontext
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from erpsync.adapters.erp.sinks.base import CountSink, CountWrite, WriteResult
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.errors import MMError, MMRecordError, MMRetryableError
from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.journal import lock_bindings, upsert_quarantine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SinkCounts, utcnow
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import Settings
from erpsync.domain.errors import ConfigError, FencedError, RecordError, RetryableError
from erpsync.domain.model import BadRecord, PartCounts
from erpsync.domain.writeback_rules import (
    NoDataReason,
    Verdict,
    counts_dict,
    plan_write,
    record_intent,
    same_counts,
)
from erpsync.observability.correlation import correlation, current_correlation_id
from erpsync.observability.crashpoints import crash_point
from erpsync.observability.metrics import QUARANTINE_OPEN, WRITEBACK_WRITES
from erpsync.service.cycles import cycle
from erpsync.service.ports import Fence

log = structlog.get_logger(__name__)

ACTION = "write_counts"
CONFLICT_CLASS = "writeback_conflict"
ACTIVE_STATUSES = ("running", "stopping")
ENDED_STATUSES = ("stopped", "vanished")
# a person's open (or discarded) conflict entry keeps erpsync's hands off that run
BLOCKING_QUARANTINE = ("open", "discarded")
# outcomes that can repeat every cycle: audited when they first happen (or change), not each time
REPEATING = frozenset({"no_data", "decrease_refused", "failed"})
CHUNK = 500


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
        }[row.outcome]
        setattr(self, attribute, getattr(self, attribute) + 1)
        self.rows.append(row)


@dataclass(frozen=True, slots=True)
class _Run:
    """A bound run as read from the state database (plain data, no session attached)."""

    binding_id: int
    mm_run_id: str
    run_key: str
    source: str
    erp_job: str
    erp_operation: str
    erp_machine: str
    last: PartCounts | None
    in_doubt: tuple[PartCounts, ...] = ()

    def write(self, counts: PartCounts) -> CountWrite:
        return CountWrite(
            mm_run_id=self.mm_run_id,
            run_key=self.run_key,
            source=self.source,
            erp_job=self.erp_job,
            erp_operation=self.erp_operation,
            erp_machine=self.erp_machine,
            counts=counts,
            previous=self.last,
            in_doubt=tuple(c for c in self.in_doubt if not same_counts(c, counts)),
        )


@dataclass(frozen=True, slots=True)
class _Read:
    run: _Run
    counts: PartCounts | None
    reason: NoDataReason | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class _Done:
    """A run's outcome waiting for the state commit."""

    run: _Run
    outcome: str
    counts: PartCounts | None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    message: str | None = None
    error_class: str | None = None
    http_status: int | None = None


def run_writeback(
    store: StateStore,
    client: MMClient,
    sink: CountSink,
    settings: Settings,
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
        with store.session() as session:
            if session.scalar(select(RunBinding.id).where(RunBinding.mm_run_id == run_id)) is None:
                raise RecordError(f"no bound run has MM run id {run_id!r} (see `erpsync status`)")
    scope = correlation("schedule") if current_correlation_id() is None else nullcontext()
    with scope:
        job = _WritebackCycle(store, client, sink, settings, now or utcnow(), fence, dry_run, stop)
        if dry_run:
            summary = job.run(run_id)
            _check_sink(sink, summary)
            return summary
        with cycle(SqlUnitOfWorkFactory(store), "writeback") as record:
            summary = job.run(run_id)
            record.outcome = summary.outcome
            record.summary = summary.counters()
        return summary


class _WritebackCycle:
    def __init__(
        self,
        store: StateStore,
        client: MMClient,
        sink: CountSink,
        settings: Settings,
        now: datetime,
        fence: Fence | None,
        dry_run: bool,
        stop: threading.Event | None = None,
    ) -> None:
        self.stop = stop
        self.store = store
        self.client = client
        self.sink = sink
        self.settings = settings
        self.now = now
        self.fence = fence
        self.dry_run = dry_run
        self.summary = WritebackSummary(
            sink=sink.name,
            dry_run=dry_run,
            read_only=sink.name == "none",
            correlation_id=current_correlation_id(),
        )
        self.erp_unavailable: str | None = None

    # ---- the cycle ------------------------------------------------------------------------------

    def run(self, run_id: str | None) -> WritebackSummary:
        started = time.monotonic()
        runs, blocked = self._load(run_id)
        for run in blocked:
            self.summary.count(
                _row(
                    run, None, "quarantined", "open write-back conflict in quarantine: not read, not written"
                )
            )
        self.summary.read = len(runs)
        limit = self.sink.batch_size or max(1, len(runs))
        batch: list[tuple[_Run, PartCounts]] = []
        settled: list[_Done] = []
        with closing(self._reads(runs)) as reads:
            for read in reads:
                if self.stop is not None and self.stop.is_set():
                    break  # stopping: the reads not yet done wait for the next leader's cycle
                done = self._plan(read)
                if done is not None:
                    settled.append(done)
                    continue
                assert read.counts is not None
                batch.append((read.run, read.counts))
                if len(batch) >= limit:
                    self._flush(batch, settled)
                    batch, settled = [], []
        if batch or settled:
            self._flush(batch, settled)
        self.summary.duration = round(time.monotonic() - started, 3)
        self.summary.outcome = self._outcome()
        log.info("writeback.cycle", **{k: v for k, v in self.summary.counters().items() if v})
        return self.summary

    def _outcome(self) -> str:
        s = self.summary
        troubled = s.failed + s.unreachable
        if troubled and troubled >= s.read:
            return "failed"
        return "partial" if troubled else "ok"

    # ---- step 1: which runs, and their MM counts ---------------------------------------------------

    def _load(self, run_id: str | None) -> tuple[list[_Run], list[_Run]]:
        """The runs to read, each with what erpsync last wrote (and set out to write) to THIS sink.

        A run no sink has a row for was last written before counts were kept per sink: its
        binding's columns are the configured sink's. A run only other sinks have rows for was
        never written to this one.
        """
        b = RunBinding
        mine = aliased(SinkCounts)
        any_sink = exists().where(SinkCounts.binding_id == b.id)
        query = (
            select(
                b.id,
                b.mm_run_id,
                b.run_key,
                b.source,
                b.erp_job,
                b.erp_operation,
                b.erp_machine,
                b.last_total_parts,
                b.last_good_parts,
                b.last_scrap_parts,
                b.last_nonconform_parts,
                b.counts_in_doubt,
                mine.binding_id.label("sink_row"),
                mine.last_total_parts.label("sink_total"),
                mine.last_good_parts.label("sink_good"),
                mine.last_scrap_parts.label("sink_scrap"),
                mine.last_nonconform_parts.label("sink_nonconform"),
                mine.counts_in_doubt.label("sink_in_doubt"),
                any_sink.label("any_sink"),
            )
            .outerjoin(mine, and_(mine.binding_id == b.id, mine.sink == self.sink.name))
            .order_by(b.id)
        )
        if run_id is not None:
            query = query.where(b.mm_run_id == run_id)
        else:
            cutoff = self.now - timedelta(minutes=self.settings.writeback.settle_window_minutes)
            ended_at = func.coalesce(b.mm_end_at, b.erp_end_at, b.updated_at)
            query = query.where(
                or_(
                    b.status.in_(ACTIVE_STATUSES),
                    and_(b.status == "vanished", b.mm_end_at.is_(None)),  # MM may still be running it
                    # an ended run's binding was updated when it ended (updated_at >= its end),
                    # so (status, updated_at) finds the recent ones without reading the history
                    and_(
                        b.status.in_(ENDED_STATUSES),
                        b.updated_at >= cutoff - ENDED_LOOKUP_SLACK,
                        ended_at >= cutoff,
                    ),
                )
            )
        with self.store.session() as session:
            runs = [_run_of(row) for row in session.execute(query)]
            blocking = {
                (source, record_key)
                for source, record_key in session.execute(
                    select(QuarantineEntry.source, QuarantineEntry.record_key).where(
                        QuarantineEntry.error_class == CONFLICT_CLASS,
                        QuarantineEntry.status.in_(BLOCKING_QUARANTINE),
                    )
                )
            }
        blocked = [r for r in runs if (r.source, r.mm_run_id) in blocking]
        return [r for r in runs if (r.source, r.mm_run_id) not in blocking], blocked

    def _reads(self, runs: Sequence[_Run]) -> Generator[_Read, None, None]:
        """MM reads, `mm.max_concurrency` at a time, yielded as they complete."""
        if not runs:
            return
        workers = min(self.settings.mm.max_concurrency, len(runs))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="writeback-read")
        try:
            futures: list[Future[_Read]] = [pool.submit(self._read, run) for run in runs]
            self.summary.calls = len(futures)
            for future in as_completed(futures):
                yield future.result()  # a ConfigError (401/403, bad base URL) ends the cycle
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _read(self, run: _Run) -> _Read:
        try:
            job_run = self.client.get_job_run(run.mm_run_id)
        except ConfigError:
            raise
        except MMRetryableError as exc:
            return _Read(run, None, NoDataReason.UNREACHABLE, exc)
        except MMRecordError as exc:
            return _Read(run, None, NoDataReason.REJECTED, exc)
        except Exception as exc:  # a bug or an unforeseen answer: this run fails, the cycle goes on
            log.exception("writeback.read_failed", mm_run_id=run.mm_run_id)
            return _Read(run, None, None, exc)
        if job_run is None:
            return _Read(run, None, NoDataReason.NOT_FOUND)
        if job_run.metrics is None:
            return _Read(run, None, NoDataReason.NO_METRICS)
        m = job_run.metrics
        counts = PartCounts(
            total=m.total_parts,
            good=m.good_parts,
            scrap=m.scrap_parts,
            nonconform=m.nonconform_parts,
            start_at=job_run.start_at,
            end_at=job_run.end_at,
        )
        return _Read(run, counts)

    # ---- step 2: decide without the ERP ------------------------------------------------------------

    def _plan(self, read: _Read) -> _Done | None:
        """The outcome when no ERP write is needed, else None (the run joins the ERP batch)."""
        run = read.run
        if read.error is not None and read.reason is None:
            return _Done(
                run, "failed", None, message=f"MM read failed: {read.error}", error_class="read_failed"
            )
        plan = plan_write(
            read.counts,
            run.last,
            allow_decrease=self.settings.writeback.allow_decrease,
            no_data_reason=read.reason,
            confirmed=not run.in_doubt,
        )
        if plan.verdict is Verdict.NO_DATA:
            if read.reason is NoDataReason.UNREACHABLE:
                self.summary.unreachable += 1
            http_status = read.error.http_status if isinstance(read.error, MMError) else None
            message = str(read.error) if read.error is not None else _NO_DATA_MESSAGES.get(plan.reason)
            return _Done(
                run, "no_data", None, message=message, error_class=plan.reason, http_status=http_status
            )
        assert read.counts is not None
        if plan.verdict is Verdict.UNCHANGED:
            return _Done(run, "unchanged", read.counts)
        if plan.verdict is Verdict.DECREASE_REFUSED:
            return _Done(
                run,
                "decrease_refused",
                read.counts,
                before=_counts(run.last),
                after=counts_dict(read.counts),
                message=plan.reason,
                error_class="count_decrease",
            )
        if self.dry_run:
            return _Done(run, "would_write", read.counts, _counts(run.last), counts_dict(read.counts))
        return None

    # ---- steps 3 and 4: ERP transaction, then state transaction ----------------------------------------

    def _flush(self, batch: list[tuple[_Run, PartCounts]], settled: list[_Done]) -> None:
        done = list(settled)
        if batch:
            done += self._write(batch)
        for item in done:
            self.summary.count(_row(item.run, item.counts, item.outcome, item.message))
        if self.dry_run:
            return
        for item in done:
            WRITEBACK_WRITES.labels(sink=self.sink.name, outcome=item.outcome).inc()
        self._commit_state(done)
        crash_point("writeback.after_state_commit")

    def _write(self, batch: list[tuple[_Run, PartCounts]]) -> list[_Done]:
        runs = {run.mm_run_id: (run, counts) for run, counts in batch}
        writes = [run.write(counts) for run, counts in batch]
        if self.erp_unavailable is not None:
            return [_failed(runs[w.mm_run_id], self.erp_unavailable) for w in writes]
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
            return [_failed(runs[w.mm_run_id], str(exc)) for w in writes]
        except Exception as exc:  # one bad row spoils a batch: write one at a time to find it
            log.warning("writeback.batch_failed", error=str(exc), size=len(writes))
            results = self._write_one_by_one(writes)
        crash_point("writeback.after_erp_commit")
        return [self._done(runs[r.mm_run_id], r) for r in results]

    def _record_intents(self, batch: list[tuple[_Run, PartCounts]]) -> None:
        """Step 3: what is about to be written becomes a write in doubt until step 5 confirms it."""
        values = [  # in mm_run_id order, the one lock order of every multi-row update
            (run, {"counts_in_doubt": _encode_in_doubt(record_intent(run.in_doubt, counts))})
            for run, counts in sorted(batch, key=lambda entry: entry[0].mm_run_id)
        ]
        with self.store.session() as session:
            if self.fence is not None:
                self.fence.check(session)
            _set_sink_counts(session, self.sink.name, values)

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

    @staticmethod
    def _done(entry: tuple[_Run, PartCounts], result: WriteResult) -> _Done:
        run, counts = entry
        error_class = {"conflict": CONFLICT_CLASS, "failed": "write_failed"}.get(result.outcome)
        return _Done(
            run,
            result.outcome,
            counts,
            dict(result.before) if result.before is not None else None,
            dict(result.after) if result.after is not None else None,
            result.message,
            error_class,
        )

    def _commit_state(self, done: list[_Done]) -> None:
        token = self.fence.token if self.fence is not None else None
        done = sorted(done, key=lambda d: d.run.mm_run_id)  # binding lock order, as a sync's
        written = [d for d in done if d.outcome in ("written", "already_written")]
        # the ERP already held these values, so none of the run's writes in doubt changed it: the
        # doubt is settled, and nothing is recorded as written (no audit row would back it)
        doubt_settled = [d.run for d in done if d.outcome == "unchanged" and d.run.in_doubt]
        with self.store.session() as session:
            if self.fence is not None:
                self.fence.check(session)
            # several statements update bindings below: lock them all first, in one order
            lock_bindings(
                session,
                [d.run.mm_run_id for d in written]
                + [d.run.mm_run_id for d in done if d.outcome == "unchanged" and d.run.in_doubt],
            )
            if written:
                _save_last_written(session, self.sink.name, written, self.now)
                _resolve_retried(session, written)
            if doubt_settled:
                _clear_doubt(session, self.sink.name, doubt_settled)
            last = _last_audited(session, [d.run for d in done if d.outcome in REPEATING])
            conflicts = 0
            for d in done:
                if d.outcome == "unchanged" or (
                    d.outcome in REPEATING and last.get(d.run.mm_run_id) == _key(d)
                ):
                    continue
                if d.outcome == "conflict":
                    conflicts += 1
                    upsert_quarantine(session, _conflict_record(d), self.now)
                record_audit(
                    session,
                    action=ACTION,
                    outcome=d.outcome,
                    source=d.run.source,
                    erp_job=d.run.erp_job,
                    erp_operation=d.run.erp_operation,
                    erp_machine=d.run.erp_machine,
                    mm_run_id=d.run.mm_run_id,
                    fencing_token=token,
                    http_status=d.http_status,
                    error=d.message if d.outcome not in ("written", "already_written") else None,
                    error_class=d.error_class,
                    before=d.before,
                    after=d.after,
                    detail=f"sink {self.sink.name}" + (f": {d.message}" if d.message else ""),
                )
            if conflicts:
                session.flush()
                QUARANTINE_OPEN.set(
                    session.scalar(
                        select(func.count())
                        .select_from(QuarantineEntry)
                        .where(QuarantineEntry.status == "open")
                    )
                    or 0
                )


def _check_sink(sink: CountSink, summary: WritebackSummary) -> None:
    """A dry run says whether the writes it lists could be made: the sink's own check."""
    try:
        summary.sink_check = sink.check()
        summary.sink_ready = True
    except ConfigError as exc:
        summary.sink_ready, summary.sink_check, summary.sink_config_error = False, str(exc), True
    except RetryableError as exc:
        summary.sink_ready, summary.sink_check = False, str(exc)


# margin for clocks: MM's end time of a run may be a little after erpsync's own clock
ENDED_LOOKUP_SLACK = timedelta(days=1)

_NO_DATA_MESSAGES = {
    str(NoDataReason.NOT_FOUND): "MachineMetrics has no such job run (404): nothing written",
    str(NoDataReason.NO_METRICS): "MachineMetrics returned the job run without metrics: nothing written",
}


def _run_of(row: Any) -> _Run:
    """A loaded run; its last-written counts are the sink's own (see `_WritebackCycle._load`)."""
    in_doubt = row.counts_in_doubt
    lasts = (row.last_total_parts, row.last_good_parts, row.last_scrap_parts, row.last_nonconform_parts)
    if row.sink_row is not None:
        in_doubt = row.sink_in_doubt
        lasts = (row.sink_total, row.sink_good, row.sink_scrap, row.sink_nonconform)
    elif row.any_sink:
        in_doubt, lasts = None, (None, None, None, None)
    last = None
    if all(v is not None for v in lasts):
        total, good, scrap, nonconform = (int(v) for v in lasts)
        last = PartCounts(total=total, good=good, scrap=scrap, nonconform=nonconform)
    return _Run(
        row.id,
        row.mm_run_id,
        row.run_key,
        row.source,
        row.erp_job,
        row.erp_operation,
        row.erp_machine,
        last,
        _decode_in_doubt(in_doubt),
    )


def _encode_in_doubt(in_doubt: Sequence[PartCounts]) -> str:
    """``counts_in_doubt`` as IT reads it: a JSON list of {"total", "good", "scrap", "nonconform"}."""
    return json.dumps([counts_dict(c) for c in in_doubt], separators=(",", ":"))


def _decode_in_doubt(value: str | None) -> tuple[PartCounts, ...]:
    if not value:
        return ()
    return tuple(
        PartCounts(
            total=int(item["total"]),
            good=int(item["good"]),
            scrap=int(item["scrap"]),
            nonconform=int(item["nonconform"]),
        )
        for item in json.loads(value)
    )


def _counts(counts: PartCounts | None) -> dict[str, int] | None:
    return counts_dict(counts) if counts is not None else None


def _row(run: _Run, counts: PartCounts | None, outcome: str, message: str | None = None) -> WritebackRow:
    return WritebackRow(
        run.mm_run_id,
        run.run_key,
        run.erp_job,
        run.erp_operation,
        run.erp_machine,
        _counts(counts),
        _counts(run.last),
        outcome,
        message,
    )


def _failed(entry: tuple[_Run, PartCounts], message: str) -> _Done:
    run, counts = entry
    return _Done(run, "failed", counts, _counts(run.last), counts_dict(counts), message, "erp_unavailable")


def _key(done: _Done) -> tuple[str, str | None, Any]:
    """What makes a repeated outcome the same as last time (then it is not audited again)."""
    return (done.outcome, done.error_class, done.after)


def _last_audited(session: Session, runs: Sequence[_Run]) -> dict[str, tuple[str, str | None, Any]]:
    """Each run's latest write-back audit (outcome, error class, after), via the erp_job index."""
    found: dict[str, tuple[str, str | None, Any]] = {}
    for start in range(0, len(runs), CHUNK):
        chunk = runs[start : start + CHUNK]
        latest = (
            select(func.max(AuditEntry.id))
            .where(
                AuditEntry.erp_job.in_({r.erp_job for r in chunk}),
                AuditEntry.mm_run_id.in_([r.mm_run_id for r in chunk]),
                AuditEntry.action == ACTION,
            )
            .group_by(AuditEntry.mm_run_id)
        )
        rows = session.execute(
            select(
                AuditEntry.mm_run_id, AuditEntry.outcome, AuditEntry.error_class, AuditEntry.after_json
            ).where(AuditEntry.id.in_(latest))
        )
        for mm_run_id, outcome, error_class, after_json in rows:
            found[str(mm_run_id)] = (outcome, error_class, json.loads(after_json) if after_json else None)
    return found


def _save_last_written(session: Session, sink: str, written: Sequence[_Done], now: datetime) -> None:
    """What erpsync wrote is what the next cycle compares this sink's value with (one executemany
    per batch); the ERP's value is known again, so the run's writes in doubt are cleared. The
    binding keeps the counts last written by any sink, for the views.

    A Core UPDATE of the write-back columns only, without the ORM version bump: the sync loop owns
    the other columns and must not see its own optimistic lock fail because counts were written.
    """
    _set_sink_counts(
        session,
        sink,
        [
            (
                d.run,
                {
                    **_last_columns(d.counts),
                    "counts_written_at": now,
                    "counts_in_doubt": None,
                },
            )
            for d in written
        ],
    )
    table = cast(Table, RunBinding.__table__)
    statement = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            last_total_parts=bindparam("b_total"),
            last_good_parts=bindparam("b_good"),
            last_scrap_parts=bindparam("b_scrap"),
            last_nonconform_parts=bindparam("b_nonconform"),
            counts_written_at=bindparam("b_at"),
            counts_in_doubt=None,
        )
    )
    params = []
    for d in written:
        assert d.counts is not None
        c = d.counts
        params.append(
            {
                "b_id": d.run.binding_id,
                "b_total": c.total,
                "b_good": c.good,
                "b_scrap": c.scrap,
                "b_nonconform": c.nonconform,
                "b_at": now,
            }
        )
    session.execute(statement, params)


def _clear_doubt(session: Session, sink: str, runs: Sequence[_Run]) -> None:
    """The runs' writes in doubt are settled without a write: the ERP was found holding the value.

    A Core UPDATE, like `_save_last_written`, so the sync loop's optimistic lock is not bumped.
    """
    _set_sink_counts(session, sink, [(run, {"counts_in_doubt": None}) for run in runs])
    binding_ids = [run.binding_id for run in runs]
    table = cast(Table, RunBinding.__table__)
    for start in range(0, len(binding_ids), CHUNK):
        session.execute(
            update(table)
            .where(table.c.id.in_(binding_ids[start : start + CHUNK]))
            .values(counts_in_doubt=None)
        )


def _last_columns(counts: PartCounts | None) -> dict[str, int | None]:
    return {
        "last_total_parts": counts.total if counts is not None else None,
        "last_good_parts": counts.good if counts is not None else None,
        "last_scrap_parts": counts.scrap if counts is not None else None,
        "last_nonconform_parts": counts.nonconform if counts is not None else None,
    }


def _set_sink_counts(session: Session, sink: str, values: Sequence[tuple[_Run, dict[str, Any]]]) -> None:
    """Set columns of each run's `erpsync_sink_counts` row for `sink` (the same columns for all).

    A run without a row gets one, holding the counts the cycle compared the ERP with (`_Run.last`,
    taken over from the binding when no sink had a row yet) plus the given columns.
    """
    if not values:
        return
    table = cast(Table, SinkCounts.__table__)
    ids = [run.binding_id for run, _ in values]
    existing: set[int] = set()
    for start in range(0, len(ids), CHUNK):
        existing.update(
            session.scalars(
                select(table.c.binding_id).where(
                    table.c.sink == sink, table.c.binding_id.in_(ids[start : start + CHUNK])
                )
            )
        )
    columns = sorted(values[0][1])
    updates = [
        {"s_id": run.binding_id, **{f"s_{c}": v[c] for c in columns}}
        for run, v in values
        if run.binding_id in existing
    ]
    inserts = [
        {"binding_id": run.binding_id, "sink": sink, **_last_columns(run.last), **v}
        for run, v in values
        if run.binding_id not in existing
    ]
    if updates:
        session.execute(
            update(table)
            .where(table.c.binding_id == bindparam("s_id"), table.c.sink == sink)
            .values({c: bindparam(f"s_{c}") for c in columns}),
            updates,
        )
    if inserts:
        session.execute(insert(table), inserts)


def _resolve_retried(session: Session, written: Sequence[_Done]) -> None:
    """A conflict a person sent back for retry that now went through is resolved."""
    ids = [d.run.mm_run_id for d in written]
    for start in range(0, len(ids), CHUNK):
        session.execute(
            update(QuarantineEntry)
            .where(
                QuarantineEntry.error_class == CONFLICT_CLASS,
                QuarantineEntry.status == "retry",
                QuarantineEntry.record_key.in_(ids[start : start + CHUNK]),
            )
            .values(status="resolved", last_seen_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def _conflict_record(done: _Done) -> BadRecord:
    return BadRecord(
        source=done.run.source,
        record_key=done.run.mm_run_id,
        reason=done.message or "the ERP value is not what erpsync last wrote: not overwritten",
        error_class=CONFLICT_CLASS,
        raw={
            "run_key": done.run.run_key,
            "erp_value": done.before,
            "last_written": _counts(done.run.last),
            "mm_counts": _counts(done.counts),
        },
    )
