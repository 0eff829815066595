"""Write-back step 1: each run's part counts read from MachineMetrics, many reads at a time.

Nothing is written yet, so a crash here loses nothing. A read that gives no counts says why
(`NoDataReason`): such a run is skipped and audited, never written as 0. Counts MM did send are
checked here (domain/plausible_counts.py): an implausible answer (10^30 parts, -5, 12.5, more good
parts than parts) carries what MM sent and the rule broken instead of counts, so it can never reach
the ERP or erpsync's columns. Only a configuration problem (MM refuses the key, a bad base URL)
raises and ends the cycle.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog

from erpsync.adapters.mm.errors import MMRecordError, MMRetryableError
from erpsync.domain.errors import ConfigError
from erpsync.domain.lifecycle import MMRunState
from erpsync.domain.model import PartCounts
from erpsync.domain.plausible_counts import DEFAULT_MAX_PART_COUNT, Implausible, check_counts
from erpsync.domain.writeback_rules import CountTarget, NoDataReason
from erpsync.service.ports import MachineMetrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CountRead:
    """One run's MM counts, or why there are none (`error` alone: the read itself failed;
    `implausible`: MM answered counts that must not be written)."""

    target: CountTarget
    counts: PartCounts | None
    reason: NoDataReason | None = None
    error: BaseException | None = None
    implausible: Implausible | None = None
    # what MM answered of the run, when it answered: no such run (404), open, or ended (and when)
    mm_state: MMRunState | None = None
    mm_end_at: datetime | None = None


def read_counts(
    mm: MachineMetrics,
    targets: Sequence[CountTarget],
    concurrency: int,
    max_part_count: int = DEFAULT_MAX_PART_COUNT,
) -> Generator[CountRead, None, None]:
    """MM reads, `concurrency` at a time, yielded as they complete; counts above `max_part_count`
    (``writeback.max_part_count``) or otherwise implausible come back as `CountRead.implausible`.

    Closing the generator early (the service is stopping) cancels the reads not yet started.
    """
    if not targets:
        return
    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(targets)), thread_name_prefix="writeback-read")
    try:
        futures: list[Future[CountRead]] = [
            pool.submit(_read, mm, target, max_part_count) for target in targets
        ]
        for future in as_completed(futures):
            yield future.result()  # a ConfigError (401/403, bad base URL) ends the cycle
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read(mm: MachineMetrics, target: CountTarget, max_part_count: int) -> CountRead:
    try:
        job_run = mm.get_job_run(target.mm_run_id)
    except ConfigError:
        raise
    except MMRetryableError as exc:
        return CountRead(target, None, NoDataReason.UNREACHABLE, exc)
    except MMRecordError as exc:
        return CountRead(target, None, NoDataReason.REJECTED, exc)
    except Exception as exc:  # a bug or an unforeseen answer: this run fails, the cycle goes on
        log.exception("writeback.read_failed", mm_run_id=target.mm_run_id)
        return CountRead(target, None, None, exc)
    if job_run is None:
        return CountRead(target, None, NoDataReason.NOT_FOUND, mm_state="missing")
    seen: dict[str, Any] = {
        "mm_state": "open" if job_run.end_at is None else "ended",
        "mm_end_at": job_run.end_at,
    }
    if job_run.metrics is None:
        return CountRead(target, None, NoDataReason.NO_METRICS, **seen)
    m = job_run.metrics
    raw = {
        "total": m.total_parts,
        "good": m.good_parts,
        "scrap": m.scrap_parts,
        "nonconform": m.nonconform_parts,
    }
    checked = check_counts(raw, bound=max_part_count)
    if isinstance(checked, Implausible):
        return CountRead(target, None, implausible=checked, **seen)
    counts = replace(checked, start_at=job_run.start_at, end_at=job_run.end_at)
    return CountRead(target, counts, **seen)
