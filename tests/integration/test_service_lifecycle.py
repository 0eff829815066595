"""The service's lifecycle: schema gate, recovery before jobs, hot standby, takeover, fencing, SIGTERM.

The subprocess tests run real `erpsync serve` processes against one PostgreSQL state database with a
short lease (2 s) and kill -9, SIGSTOP/SIGCONT and SIGTERM them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import select
from typer.testing import CliRunner

from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Heartbeat
from erpsync.cli.app import app
from erpsync.config import ServiceSettings, Settings
from erpsync.domain.errors import ConfigError, FencedError
from erpsync.runtime.leader import LeaderLease, LeaseStatus
from erpsync.runtime.logging import configure_logging
from erpsync.runtime.scheduler import ScheduledJob
from erpsync.runtime.service import Service
from erpsync.runtime.term import FencingContext

TTL, RENEW, RETRY = 2.0, 0.5, 0.25
runner = CliRunner()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until `condition()`; returns the seconds it took."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, f"timed out waiting for: {what}"
        time.sleep(0.05)
    return time.monotonic() - began


def service_settings(name: str) -> Settings:
    return Settings(
        service=ServiceSettings(
            instance_name=name,
            health_port=0,
            lease_ttl_seconds=TTL,
            lease_renew_seconds=RENEW,
            lease_retry_seconds=RETRY,
            stop_grace_seconds=2,
        )
    )


class InProcess:
    """A Service running in a thread (no signal handlers off the main thread)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(service.run()), daemon=True)
        self.thread.start()

    def stop(self) -> int:
        self.service.request_stop("test")
        self.thread.join(15)
        assert not self.thread.is_alive()
        return self.result[0]


def test_recovery_runs_once_leader_and_before_any_job(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    migrate.upgrade(engine)
    events: list[str] = []
    tokens: list[int] = []

    def recovery(fencing: FencingContext) -> None:
        tokens.append(fencing.token)
        assert fencing.is_current()
        if len(tokens) == 1:
            events.append("recovery-failed")
            raise RuntimeError("MM unreachable")
        events.append("recovery-ok")

    def jobs(fencing: FencingContext) -> list[ScheduledJob]:
        events.append("jobs-built")
        return [ScheduledJob("sync", lambda _: events.append("sync"), 0.2, 2)]

    running = InProcess(Service(service_settings("rec"), StateStore(engine), jobs, recovery))
    try:
        wait_for(lambda: "sync" in events, 15, "the first sync run")
    finally:
        assert running.stop() == 0
    assert events[:4] == ["recovery-failed", "recovery-ok", "jobs-built", "sync"]
    assert tokens == [1, 1], "recovery is retried within the same term"


def test_standby_takes_over_on_release_and_old_fence_is_refused(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    migrate.upgrade(engine)
    fences: dict[str, FencingContext] = {}

    def jobs_for(name: str) -> Callable[[FencingContext], list[ScheduledJob]]:
        def jobs(fencing: FencingContext) -> list[ScheduledJob]:
            fences[name] = fencing
            return []

        return jobs

    first = InProcess(
        Service(service_settings("one"), StateStore(create_db_engine(sqlite_url)), jobs_for("one"))
    )
    wait_for(lambda: "one" in fences, 15, "the first instance to lead")
    second = InProcess(
        Service(service_settings("two"), StateStore(create_db_engine(sqlite_url)), jobs_for("two"))
    )
    try:
        wait_for(lambda: second.service.role() == "standby", 15, "the second instance on standby")
        time.sleep(3 * RETRY)
        assert second.service.role() == "standby", "never two leaders"
        assert second.service.readiness().ready, "a standby with a reachable database is ready"
        old = fences["one"]
        assert old.token == 1

        assert first.stop() == 0
        took = wait_for(lambda: "two" in fences, 10, "the standby to take over")
        assert took < TTL, "a released lease is taken at once, not after the TTL"
        assert fences["two"].token == 2
        assert not old.is_current()
        store = StateStore(engine)
        with store.session() as session, pytest.raises(FencedError):
            old.check(session)
        with store.session() as session:
            fences["two"].check(session)
    finally:
        assert second.stop() == 0


def test_schema_behind_head_is_refused_unless_migrating(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(service_settings("schema"), StateStore(create_db_engine(sqlite_url)), lambda _: [])
    with pytest.raises(ConfigError, match="run `erpsync db upgrade`"):
        service.run()

    monkeypatch.setenv("ERPSYNC_STATE__URL", sqlite_url)
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "mm.api_key: required" in result.output
    assert "source: required" in result.output
    monkeypatch.setenv("ERPSYNC_MM__API_KEY", "lifecycle-key-1234")
    monkeypatch.setenv("ERPSYNC_SOURCE__URL", "sqlite:///erp-not-used.db")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "erpsync db upgrade" in result.output
    assert "Traceback" not in result.output

    migrating = Service(
        service_settings("schema"),
        StateStore(create_db_engine(sqlite_url)),
        lambda _: [],
        migrate_schema=True,
    )
    running = InProcess(migrating)
    wait_for(migrating.is_leader, 15, "the migrated instance to lead")
    assert running.stop() == 0
    assert migrate.is_at_head(create_db_engine(sqlite_url))


# --- real processes on PostgreSQL -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """One `erpsync serve` process."""

    def __init__(self, config: Path, name: str, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        env = {
            **os.environ,
            "ERPSYNC_SERVICE__INSTANCE_NAME": name,
            "ERPSYNC_SERVICE__HEALTH_PORT": str(self.port),
            "ERPSYNC_SERVICE__LEASE_TTL_SECONDS": str(TTL),
            "ERPSYNC_SERVICE__LEASE_RENEW_SECONDS": str(RENEW),
            "ERPSYNC_SERVICE__LEASE_RETRY_SECONDS": str(RETRY),
        }
        self.log = log_dir / f"{name}-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "erpsync", "--config", str(config), "serve"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except (urllib.error.URLError, OSError):
            return 0, {}

    def role(self) -> str | None:
        return self.readyz()[1].get("role")

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serve_config(pg_url: str, tmp_path: Path) -> Path:
    """A config the service accepts: state on PostgreSQL, an MM key and a [source] (not reached here)."""
    migrate.upgrade(create_db_engine(pg_url))
    config = tmp_path / "erpsync.toml"
    config.write_text(
        f"""
[state]
url = "{pg_url}"

[mm]
base_url = "http://127.0.0.1:9"
api_key = "lifecycle-test-key-0001"

[source]
kind = "infor-visual"
url = "sqlite:///{tmp_path / "erp.db"}"

[logging]
format = "json"
level = "INFO"
""",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def processes() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for process in started:
        process.kill()


def test_standby_takeover_fencing_and_sigterm(
    serve_config: Path, pg_url: str, tmp_path: Path, processes: list[Serve]
) -> None:
    engine = create_db_engine(pg_url)
    watcher = LeaderLease(engine, holder="test-watcher", ttl_seconds=TTL)

    def lease() -> LeaseStatus:
        return watcher.status()

    def led_by(proc: Serve) -> bool:
        status = lease()
        return status.held and (status.holder or "").startswith(f"{proc.name}#")

    def start(name: str) -> Serve:
        proc = Serve(serve_config, name, tmp_path)
        processes.append(proc)
        return proc

    # A leads; B waits as a hot standby.
    a = start("alpha")
    wait_for(lambda: led_by(a) and a.role() == "leader", 30, "alpha to lead")
    assert lease().token == 1
    b = start("bravo")
    wait_for(lambda: b.readyz()[0] == 200 and b.role() == "standby", 30, "bravo ready on standby")
    status, ready = a.readyz()
    assert (status, ready["role"], ready["fencing_token"]) == (200, "leader", 1)
    leader = subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(serve_config), "leader", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert leader.returncode == 0, leader.stderr
    assert json.loads(leader.stdout)["holder"].startswith("alpha#")

    # kill -9 the leader: the standby takes over within TTL + retry, with a new token.
    a.proc.kill()
    a.proc.wait(10)
    took = wait_for(lambda: led_by(b), 15, "bravo to take over from a killed alpha")
    assert took <= TTL + RETRY + 1.0
    assert lease().token == 2
    wait_for(lambda: b.role() == "leader", 10, "bravo to report leader")

    # A new standby; then the leader is paused past its lease: the standby takes over, and the
    # paused ex-leader, once resumed, finds its token stale and steps down.
    c = start("charlie")
    wait_for(lambda: c.role() == "standby", 30, "charlie on standby")
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: led_by(c), 15, "charlie to take over from a paused bravo")
        assert lease().token == 3
        with engine.connect() as conn, pytest.raises(FencedError, match="stale"):
            watcher.check_token(conn, 2)
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    wait_for(lambda: b.role() == "standby", 10, "the resumed bravo to stop acting as leader")
    wait_for(lambda: "leader lease lost" in b.logs(), 10, "bravo to end its term")
    assert led_by(c) and lease().token == 3, "the resumed ex-leader did not take the lease back"

    def beat_role(name: str) -> str | None:
        with StateStore(create_db_engine(pg_url)).session() as session:
            return session.scalar(select(Heartbeat.role).where(Heartbeat.instance == name))

    wait_for(lambda: beat_role("bravo") == "standby", 10, "bravo's heartbeat to say standby")

    # SIGTERM the leader: exit 0 well within 10 s, lease released, so the standby leads at once.
    began = time.monotonic()
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(10) == 0
    assert time.monotonic() - began < 10
    took = wait_for(lambda: led_by(b), 10, "bravo to take over a released lease")
    assert took < TTL, "released, not left to expire"
    assert lease().token == 4
    assert "leader lease released" in c.logs()
    assert beat_role("charlie") == "stopped"

    # SIGTERM the last one: the lease is left free, token kept.
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(10) == 0
    final = lease()
    assert (final.held, final.token) == (False, 4)


def test_a_taken_health_port_is_a_one_line_config_error(sqlite_state_store: StateStore) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = service_settings("port")
        settings.service.health_port = taken.getsockname()[1]
        service = Service(settings, sqlite_state_store, lambda _: [])
        with pytest.raises(ConfigError, match=r"service\.health_port: cannot listen"):
            service.run()
    assert not LeaderLease(sqlite_state_store.engine, holder="x", ttl_seconds=1).status().held


def _job_checking_its_fence_after_being_told_to_stop(
    store: StateStore, outcomes: list[str], started: threading.Event
) -> Callable[[FencingContext], list[ScheduledJob]]:
    """A job that, once its stop flag is set, takes a moment to wind down and then commits."""

    def jobs(fencing: FencingContext) -> list[ScheduledJob]:
        def run(stop: threading.Event) -> None:
            started.set()
            stop.wait(30)
            time.sleep(0.3)  # finishing the call in flight
            try:
                with store.session() as session:
                    fencing.check(session)
                outcomes.append("committed")
            except FencedError:
                outcomes.append("fenced")

        return [ScheduledJob("sync", run, 60, 30)]

    return jobs


def test_a_clean_stop_lets_the_running_job_commit_then_releases(sqlite_state_store: StateStore) -> None:
    outcomes: list[str] = []
    started = threading.Event()
    jobs = _job_checking_its_fence_after_being_told_to_stop(sqlite_state_store, outcomes, started)
    running = InProcess(Service(service_settings("clean"), sqlite_state_store, jobs))
    assert started.wait(15)
    began = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - began < 2
    assert outcomes == ["committed"], "the term stays current while its running job finishes"
    assert not LeaderLease(sqlite_state_store.engine, holder="x", ttl_seconds=1).status().held


def test_a_lost_lease_fences_the_running_job_at_once(sqlite_state_store: StateStore) -> None:
    outcomes: list[str] = []
    started = threading.Event()
    jobs = _job_checking_its_fence_after_being_told_to_stop(sqlite_state_store, outcomes, started)
    running = InProcess(Service(service_settings("lost"), sqlite_state_store, jobs))
    try:
        assert started.wait(15)
        with sqlite_state_store.engine.begin() as conn:  # another instance took the lease
            conn.exec_driver_sql(
                "UPDATE erpsync_leader SET holder = 'thief', fencing_token = fencing_token + 1, "
                "expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '+60 seconds')"
            )
        wait_for(lambda: outcomes != [], 10, "the running job to try to commit")
        assert outcomes == ["fenced"]
        assert running.service.role() == "standby"
    finally:
        assert running.stop() == 0
    status = LeaderLease(sqlite_state_store.engine, holder="x", ttl_seconds=1).status()
    assert (status.holder, status.token) == ("thief", 2), "a lost lease is not released by the loser"


@contextmanager
def json_logs() -> Iterator[io.StringIO]:
    """The service's INFO log lines as JSON, for the duration; the logging set-up restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_structlog = root.handlers[:], root.level, structlog.get_config()
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)


def test_a_standby_says_it_stands_by_and_who_leads(database_url: str) -> None:
    """Logged when it starts standing by and when the leader changes, not on every poll."""
    migrate.upgrade(create_db_engine(database_url))

    def service(name: str) -> Service:
        return Service(service_settings(name), StateStore(create_db_engine(database_url)), lambda _: [])

    with json_logs() as stream:
        one = InProcess(service("one"))
        wait_for(lambda: one.service.role() == "leader", 15, "the first instance to lead")
        two, three = InProcess(service("two")), InProcess(service("three"))
        try:
            wait_for(lambda: three.service.role() == "standby", 15, "the third instance on standby")
            time.sleep(8 * RETRY)  # many polls, no new line
            assert one.stop() == 0
            wait_for(lambda: "leader" in (two.service.role(), three.service.role()), 15, "a takeover")
            time.sleep(8 * RETRY)
        finally:
            new_leader = two if two.service.role() == "leader" else three
            standby = three if new_leader is two else two
            assert standby.stop() == 0 and new_leader.stop() == 0
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    said = [
        (e["event"], e["leader"], e["fencing"])
        for e in events
        if e.get("instance") == standby.service.holder and "standing by" in e["event"]
    ]
    assert said == [
        ("standing by", one.service.holder, 1),
        ("leader changed; standing by", new_leader.service.holder, 2),
    ], said
