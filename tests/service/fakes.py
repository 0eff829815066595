"""What the service tests share beyond erpsync's own fakes: an in-memory ERP sink, a crash, and the
few words a test needs to set up and read `FakeMachineMetrics` (the simulator's model in process).

MM is always the real model: a run it "already holds" is put into its state without a logged
call (`hold`), an error comes from its fault plan or its own rules, and what MM got is read from
its call log (`calls`, `sent`). Only `BareRunsMM` answers what the model never does (see there).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from erpsync.adapters.erp.sinks.base import CountWrite, WriteResult
from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.schemas import JobRun, StartJobRun, StopJobRun
from erpsync.domain.writeback_rules import counts_dict, describe_values, erp_verdict


class Crash(BaseException):
    """The process dies (not an error a flow handles): nothing after it runs."""


# -- MachineMetrics ------------------------------------------------------------------------------
def hold(
    mm: FakeMachineMetrics,
    run_id: str,
    *,
    start_at: datetime,
    machine: str = "M1",
    job: str = "started elsewhere",
    in_setup: bool = True,
    end_at: datetime | None = None,
) -> None:
    """MM holds this run already (started, maybe ended), as if an earlier call had reached it.

    Written straight into the model's state, so it passes its rules but leaves no call in the log.
    """
    state = mm.model.state
    start = StartJobRun(
        erp_job_operation_run_id=run_id,
        erp_machine_id=machine,
        job_name=job,
        start_in_setup=in_setup,
        start_at=start_at,
    )
    answer = state.start(start.wire())
    assert answer.status == 200, answer.body
    if end_at is not None:
        answer = state.stop(StopJobRun(erp_job_operation_run_id=run_id, end_at=end_at).wire())
        assert answer.status == 200, answer.body


def calls(mm: FakeMachineMetrics, after: int = 0) -> list[tuple[str, str | None]]:
    """(operation, run id) of every call MM got after call number `after` (see `call_count`)."""
    return [(c["operation"], c["run_id"]) for c in mm.calls() if c["seq"] > after]


def call_count(mm: FakeMachineMetrics) -> int:
    """How many calls MM got so far: pass it to `calls` to leave out what a test set up."""
    log = mm.calls()
    return int(log[-1]["seq"]) if log else 0


def sent(mm: FakeMachineMetrics, operation: str, after: int = 0) -> list[str]:
    """The run ids of the `operation` ("start", "stop" or "get") calls MM got, whatever it answered."""
    return [str(run_id) for op, run_id in calls(mm, after) if op == operation]


class BareRunsMM(FakeMachineMetrics):
    """`FakeMachineMetrics`, except that the runs in `bare` come back without metrics.

    The model always reports counts (zeros at first), but MM's get may leave ``metrics`` out and
    erpsync must then write nothing: the one answer these tests script.
    """

    def __init__(self, bare: Collection[str]) -> None:
        super().__init__()
        self.bare = frozenset(bare)

    def get_job_run(self, run_id: str) -> JobRun | None:
        run = super().get_job_run(run_id)
        return run.model_copy(update={"metrics": None}) if run is not None and run_id in self.bare else run


# -- the ERP sink ----------------------------------------------------------------------------------
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
