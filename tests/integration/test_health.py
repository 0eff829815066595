"""The health endpoint over real HTTP: /healthz, /readyz fields, /metrics series, and `erpsync health`."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from typer.testing import CliRunner

from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Heartbeat
from erpsync.cli.app import app
from erpsync.config import ServiceSettings, Settings
from erpsync.runtime.health import HealthServer, ReadyState
from erpsync.runtime.scheduler import ScheduledJob
from erpsync.runtime.service import Service
from erpsync.runtime.term import FencingContext

runner = CliRunner()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_health_server_endpoints() -> None:
    state = {"ready": True}

    def readiness() -> ReadyState:
        if state["ready"] is None:
            raise RuntimeError("check broke")
        return ReadyState(bool(state["ready"]), {"role": "standby"})

    server = HealthServer("127.0.0.1", 0, readiness)
    server.start()
    try:
        assert server.port != 0, "port 0 picks a free port"
        base = f"http://127.0.0.1:{server.port}"
        assert get(f"{base}/healthz") == (200, b"ok\n")
        status, body = get(f"{base}/readyz")
        assert status == 200
        assert json.loads(body) == {"status": "ready", "role": "standby"}
        state["ready"] = False
        status, body = get(f"{base}/readyz")
        assert (status, json.loads(body)["status"]) == (503, "not_ready")
        state["ready"] = None
        status, body = get(f"{base}/readyz")
        assert (status, json.loads(body)) == (503, {"status": "not_ready", "error": "RuntimeError"})
        assert get(f"{base}/nope")[0] == 404
        assert ("erpsync_leader", ()) in metrics(server.port)
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2)


@dataclass
class Running:
    service: Service
    thread: threading.Thread
    result: list[int]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.health.port}"

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = get(f"{self.base}/readyz")
        return status, json.loads(body)

    def stop(self) -> int:
        self.service.request_stop("test")
        self.thread.join(15)
        assert not self.thread.is_alive()
        return self.result[0]


def start_service(store: StateStore, jobs: Callable[[FencingContext], list[ScheduledJob]]) -> Running:
    settings = Settings(
        service=ServiceSettings(
            instance_name="health-test",
            health_port=0,
            lease_ttl_seconds=3,
            lease_renew_seconds=0.5,
            lease_retry_seconds=0.2,
            stop_grace_seconds=2,
        )
    )
    service = Service(settings, store, jobs, breaker_state=lambda: "closed")
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(service.run()), daemon=True)
    thread.start()
    wait_for(lambda: service.health.port != 0 and service.role() != "starting")
    return Running(service, thread, result)


@pytest.fixture
def leading(sqlite_state_store: StateStore) -> Iterator[Running]:
    def jobs(_: FencingContext) -> list[ScheduledJob]:
        return [ScheduledJob("sync", lambda _stop: None, 0.2, 2, stale_after_seconds=30)]

    running = start_service(sqlite_state_store, jobs)
    yield running
    if running.thread.is_alive():
        running.stop()


def test_readyz_and_metrics_of_a_leader(
    leading: Running, sqlite_state_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wait_for(lambda: leading.readyz()[1]["loops"].get("sync", {}).get("last_success_at") is not None)
    status, ready = leading.readyz()
    assert status == 200
    assert ready["status"] == "ready"
    assert ready["role"] == "leader"
    assert ready["fencing_token"] == 1
    assert ready["db_ok"] is True
    assert ready["recovery"] == "done"
    assert ready["circuit_breaker"] == "closed"
    assert ready["instance"] == "health-test"
    loop = ready["loops"]["sync"]
    assert loop["fresh"] is True
    assert 0 <= loop["last_success_age_seconds"] < 30
    assert loop["stale_after_seconds"] == 30

    samples = metrics(leading.service.health.port)
    assert samples[("erpsync_leader", ())] == 1
    assert samples[("erpsync_fencing_token", ())] == 1
    assert samples[("erpsync_state_db_up", ())] == 1
    assert samples[("erpsync_last_success_timestamp_seconds", (("loop", "sync"),))] > time.time() - 60
    assert samples[("erpsync_job_runs_total", (("loop", "sync"), ("outcome", "ok")))] >= 1
    assert samples[("erpsync_lease_events_total", (("event", "acquired"),))] >= 1

    def heartbeat() -> Heartbeat | None:
        with sqlite_state_store.session() as session:
            return session.scalars(select(Heartbeat).where(Heartbeat.instance == "health-test")).first()

    wait_for(lambda: (row := heartbeat()) is not None and row.last_sync_ok_at is not None)
    row = heartbeat()
    assert row is not None and row.role == "leader"

    monkeypatch.setenv("ERPSYNC_SERVICE__HEALTH_PORT", str(leading.service.health.port))
    result = runner.invoke(app, ["health", "--ready"])
    assert result.exit_code == 0, result.output
    assert "ready (role leader, token 1" in result.output
    assert runner.invoke(app, ["health"]).exit_code == 0

    assert leading.stop() == 0
    assert heartbeat().role == "stopped"  # type: ignore[union-attr]
    assert leading.service.lease.status().held is False, "the lease is released on stop"
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 1
    assert "did not answer" in result.output


def test_a_stale_loop_makes_the_leader_not_ready(
    sqlite_state_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(_: threading.Event) -> None:
        raise RuntimeError("MM unreachable")

    running = start_service(
        sqlite_state_store, lambda _: [ScheduledJob("sync", failing, 0.2, 2, stale_after_seconds=0.5)]
    )
    try:
        wait_for(lambda: running.readyz()[1].get("loops", {}).get("sync", {}).get("fresh") is False)
        status, ready = running.readyz()
        assert status == 503
        assert ready["status"] == "not_ready"
        assert ready["role"] == "leader"
        assert ready["loops"]["sync"]["fresh"] is False
        assert ready["loops"]["sync"]["last_success_at"] is None
        monkeypatch.setenv("ERPSYNC_SERVICE__HEALTH_PORT", str(running.service.health.port))
        result = runner.invoke(app, ["health", "--ready"])
        assert result.exit_code == 1
        assert "stale: sync" in result.output
        assert runner.invoke(app, ["health"]).exit_code == 0, "alive even when not ready"
    finally:
        assert running.stop() == 0


def test_health_with_a_random_port_or_bad_config_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERPSYNC_SERVICE__HEALTH_PORT", "0")
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 1
    assert "health_port is 0" in result.output
    monkeypatch.setenv("ERPSYNC_SERVICE__HEALTH_PORT", "not-a-port")
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 1, "Docker reserves exit code 2"
