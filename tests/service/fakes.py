"""Stand-ins for the write-back service tests: an in-memory ERP sink and MachineMetrics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from erpsync.adapters.erp.sinks.base import CountWrite, WriteResult
from erpsync.adapters.mm.errors import MMRetryableError
from erpsync.adapters.mm.schemas import ImportType, JobRun, JobRunMetrics, StartJobRun, StopJobRun
from erpsync.domain.writeback_rules import counts_dict, describe_values, erp_verdict


class Crash(BaseException):
    """The process dies (not an error a flow handles): nothing after it runs."""


class MemorySink:
    """A count sink holding each run's ERP value in a dict; compares like the staging sink does."""

    batch_size: int | None = None

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.rows: dict[str, dict[str, int]] = {}
        self.calls = 0
        self.crash_after_commit = False  # the next write commits, then the process dies

    def write(self, batch: Sequence[CountWrite]) -> list[WriteResult]:
        self.calls += 1
        results = []
        for w in batch:
            before = self.rows.get(w.mm_run_id)
            new = counts_dict(w.counts)
            expected = counts_dict(w.previous) if w.previous is not None else None
            in_doubt = [counts_dict(c) for c in w.in_doubt]
            verdict = erp_verdict(current=before, expected=expected, new=new, in_doubt=in_doubt)
            if verdict == "write":
                self.rows[w.mm_run_id] = new
                results.append(WriteResult(w.mm_run_id, "written", before, new))
            elif verdict == "conflict":
                message = f"holds {describe_values(before or {})}: edited outside erpsync"
                results.append(WriteResult(w.mm_run_id, "conflict", before, new, message))
            else:
                results.append(WriteResult(w.mm_run_id, verdict, before, new))
        if self.crash_after_commit:
            self.crash_after_commit = False
            raise Crash
        return results

    def check(self) -> str:
        return "memory sink ready"

    def close(self) -> None:
        """Nothing to release."""


class FakeMM:
    """MachineMetrics' job-run reads from a dict: counts, None (404), or an error to raise."""

    def __init__(self) -> None:
        self.runs: dict[str, JobRun | Exception | None] = {}
        self.reads: list[str] = []

    def counts(self, run_id: str, total: int, scrap: int = 0) -> None:
        metrics = JobRunMetrics(
            total_parts=total, good_parts=total - scrap, scrap_parts=scrap, nonconform_parts=0
        )
        self.runs[run_id] = JobRun(start_at=datetime(2026, 12, 7, 6, tzinfo=UTC), metrics=metrics)

    def no_metrics(self, run_id: str) -> None:
        self.runs[run_id] = JobRun(start_at=datetime(2026, 12, 7, 6, tzinfo=UTC))

    def unreachable(self, run_id: str) -> None:
        self.runs[run_id] = MMRetryableError("MM unreachable", operation="get", http_status=503)

    def get_job_run(self, run_id: str) -> JobRun | None:
        self.reads.append(run_id)
        answer = self.runs.get(run_id)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def start_job_run(self, request: StartJobRun) -> None:
        raise NotImplementedError

    def stop_job_run(self, request: StopJobRun) -> None:
        raise NotImplementedError

    def import_jobs(
        self,
        csv_content: bytes,
        *,
        import_type: ImportType = "mm",
        auto_archive: bool = False,
        filename: str = "jobs.csv",
    ) -> None:
        raise NotImplementedError
