"""The APScheduler wiring: failing and hanging jobs never stop later runs; gates and shutdown hold."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import structlog
from prometheus_client import REGISTRY

from erpsync.observability.scrub import register_secret
from erpsync.runtime.logging import configure_logging
from erpsync.runtime.scheduler import JobScheduler, ScheduledJob, build_scheduler


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def started() -> Iterator[list[JobScheduler]]:
    schedulers: list[JobScheduler] = []
    yield schedulers
    for scheduler in schedulers:
        scheduler.shutdown(grace_seconds=1)


def test_raising_and_hanging_jobs_keep_being_run(started: list[JobScheduler]) -> None:
    calls = {"raises": 0, "hangs": 0, "fine": 0}
    flags_set_on_timeout: list[bool] = []
    successes: list[str] = []

    def raises(_: threading.Event) -> None:
        calls["raises"] += 1
        raise RuntimeError("boom")

    def hangs(stop: threading.Event) -> None:
        calls["hangs"] += 1
        flags_set_on_timeout.append(stop.wait(5))  # hangs until the runner gives up on it

    def fine(_: threading.Event) -> None:
        calls["fine"] += 1

    scheduler = build_scheduler(
        [
            ScheduledJob("t1_raises", raises, interval_seconds=0.3, timeout_seconds=2),
            ScheduledJob("t1_hangs", hangs, interval_seconds=0.3, timeout_seconds=0.25),
            ScheduledJob("t1_fine", fine, interval_seconds=0.3, timeout_seconds=2),
        ],
        on_success=successes.append,
    )
    started.append(scheduler)
    scheduler.start()
    wait_for(lambda: min(calls.values()) >= 3)

    assert flags_set_on_timeout[:2] == [True, True], "a timed-out run is told to stop"
    assert sample("erpsync_job_runs_total", loop="t1_raises", outcome="error") >= 3
    assert sample("erpsync_scheduler_events_total", loop="t1_raises", event="error") >= 3
    assert sample("erpsync_job_runs_total", loop="t1_hangs", outcome="timeout") >= 2
    assert sample("erpsync_job_runs_total", loop="t1_fine", outcome="ok") >= 3
    assert set(successes) == {"t1_fine"}, "only runs that returned normally count as successes"


def test_a_job_that_ignores_its_stop_flag_is_blocked_then_resumes(started: list[JobScheduler]) -> None:
    release = threading.Event()
    calls: list[float] = []

    def truly_hung(_: threading.Event) -> None:
        calls.append(time.monotonic())
        release.wait(30)

    scheduler = build_scheduler(
        [ScheduledJob("t2_hung", truly_hung, interval_seconds=0.2, timeout_seconds=0.15)], max_abandoned=2
    )
    started.append(scheduler)
    scheduler.start()
    wait_for(lambda: sample("erpsync_job_runs_total", loop="t2_hung", outcome="blocked") >= 2)
    assert len(calls) == 2, "no new thread while two abandoned runs are still alive"
    assert sample("erpsync_jobs_abandoned", loop="t2_hung") == 2

    release.set()
    wait_for(lambda: len(calls) >= 4)
    assert sample("erpsync_jobs_abandoned", loop="t2_hung") <= 1


def test_jobs_do_not_start_while_the_gate_is_closed(started: list[JobScheduler]) -> None:
    leader = threading.Event()
    calls: list[int] = []
    scheduler = build_scheduler(
        [ScheduledJob("t3_gated", lambda _: calls.append(1), interval_seconds=0.1, timeout_seconds=1)],
        may_run=leader.is_set,
    )
    started.append(scheduler)
    scheduler.start()
    wait_for(lambda: sample("erpsync_job_runs_total", loop="t3_gated", outcome="skipped") >= 3)
    assert calls == []
    leader.set()
    wait_for(lambda: len(calls) >= 2)


def test_apscheduler_options_follow_the_interval() -> None:
    scheduler = build_scheduler(
        [
            ScheduledJob("t4_a", lambda _: None, interval_seconds=60, timeout_seconds=10),
            ScheduledJob("t4_b", lambda _: None, interval_seconds=30, timeout_seconds=10, run_at_start=False),
        ]
    )
    scheduler.scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.scheduler.get_jobs()}
        assert jobs["t4_a"].misfire_grace_time == 30
        assert jobs["t4_b"].misfire_grace_time == 15
        assert all(job.coalesce and job.max_instances == 1 for job in jobs.values())
        assert jobs["t4_b"].next_run_time > jobs["t4_a"].next_run_time, "run_at_start=False waits"
    finally:
        scheduler.shutdown(grace_seconds=0)
    with pytest.raises(ValueError, match="unique"):
        build_scheduler([ScheduledJob("x", lambda _: None, 1, 1), ScheduledJob("x", lambda _: None, 1, 1)])


@pytest.mark.parametrize("cooperative", [True, False])
def test_shutdown_stops_or_abandons_running_jobs_within_the_grace(cooperative: bool) -> None:
    entered = threading.Event()
    never = threading.Event()

    def long_job(stop: threading.Event) -> None:
        entered.set()
        (stop if cooperative else never).wait(30)

    loop = f"t5_{cooperative}"
    scheduler = build_scheduler([ScheduledJob(loop, long_job, interval_seconds=60, timeout_seconds=60)])
    scheduler.start()
    assert entered.wait(5)
    began = time.monotonic()
    finished = scheduler.shutdown(grace_seconds=0.5)
    elapsed = time.monotonic() - began
    assert finished is cooperative
    assert elapsed < (0.4 if cooperative else 1.5)
    if not cooperative:
        wait_for(lambda: sample("erpsync_job_runs_total", loop=loop, outcome="timeout") == 1)
        never.set()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_failed_run_is_logged_once_with_its_class_and_a_scrubbed_message(
    started: list[JobScheduler], fmt: str
) -> None:
    """One `job failed` line per failed run, by erpsync; APScheduler's own traceback record is dropped."""
    secret = "Zx@:/#%?&=sched-pw-77"
    register_secret(secret)
    root = logging.getLogger()
    saved = root.handlers[:], root.level, structlog.get_config(), sys.excepthook, threading.excepthook
    stream = io.StringIO()
    configure_logging("INFO", fmt, stream=stream)  # type: ignore[arg-type]
    try:

        def fails(_: threading.Event) -> None:
            connection = {"host": "erp", "password": secret}  # a local a rich traceback would show
            raise ConnectionError(f"cannot reach {connection['host']} as erp:{secret}")

        before = sample("erpsync_job_runs_total", loop="t6_fails", outcome="error")
        scheduler = build_scheduler(
            [ScheduledJob("t6_fails", fails, interval_seconds=0.2, timeout_seconds=2)]
        )
        started.append(scheduler)
        scheduler.start()
        wait_for(lambda: sample("erpsync_job_runs_total", loop="t6_fails", outcome="error") >= before + 3)
        scheduler.shutdown(grace_seconds=1)
        failures = sample("erpsync_job_runs_total", loop="t6_fails", outcome="error") - before
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.configure(**saved[2])
        sys.excepthook, threading.excepthook = saved[3], saved[4]
    out = stream.getvalue()
    failed_lines = [line for line in out.splitlines() if "job failed" in line]
    assert len(failed_lines) == failures
    assert all("ConnectionError" in line and "**********" in line for line in failed_lines)
    assert "raised an exception" not in out and "Traceback" not in out
    assert secret not in out and "password" not in out


def test_a_failed_run_on_a_database_names_its_config_key() -> None:
    """The ERP down under `serve`: the failure line's text says which database (as the CLI's errors do),
    with the driver's message and without SQLAlchemy's SQL, parameters or background link."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from erpsync.adapters.state.db import create_db_engine, label_engine
    from erpsync.runtime.scheduler import _failure_text

    engine = label_engine(create_db_engine("postgresql+psycopg://erp:pw@127.0.0.1:9/erp", 2), "source.url")
    try:
        with pytest.raises(OperationalError) as raised, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    line = _failure_text(raised.value)
    assert line.startswith("source.url: connection failed"), line
    assert "Background on this error" not in line and "[SQL" not in line
    assert _failure_text(ConnectionError("MM unreachable")) == "MM unreachable"
