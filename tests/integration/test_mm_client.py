"""MMClient against the simulator over real loopback HTTP: every status class and every fault mode.

The invariant that matters most: a call whose effect was applied but whose answer was lost
(apply-then-fail, dropped after apply, timed out) is retried into success, never into a duplicate
run or a 409 the caller cannot place.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stamina
import structlog
from prometheus_client import REGISTRY
from sqlalchemy import select

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.errors import (
    MMCircuitOpenError,
    MMConfigError,
    MMConflictError,
    MMNotFoundError,
    MMRecordError,
    MMRetryableError,
    MMUnexpectedAnswerError,
)
from erpsync.adapters.mm.schemas import JobFile, JobRun, StartJobRun, StopJobRun
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry
from erpsync.config import MMPaths, MMSettings
from erpsync.runtime.logging import configure_logging
from tests.fixtures_mm import fast_mm_settings

T0 = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)


def start_req(run_id: str = "R1", machine: str = "M1", **extra: Any) -> StartJobRun:
    return StartJobRun(erp_job_operation_run_id=run_id, erp_machine_id=machine, job_name="W1001", **extra)


def api_calls(sim: MMSimulator, operation: str | None = None) -> list[dict[str, Any]]:
    return [c for c in sim.calls() if operation is None or c["operation"] == operation]


def metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def sim(mm_simulator: MMSimulator) -> MMSimulator:
    mm_simulator.set_machines({"M1", "M2", "M3"})
    return mm_simulator


@pytest.fixture
def client(sim: MMSimulator, mm_client: MMClient) -> MMClient:
    return mm_client


def client_for(sim: MMSimulator, **overrides: Any) -> MMClient:
    return MMClient(fast_mm_settings(sim.base_url, sim.api_key, **overrides))


# ---- the operations --------------------------------------------------------------------------


def test_start_get_stop(client: MMClient, sim: MMSimulator) -> None:
    client.start_job_run(start_req(start_at=T0 + timedelta(microseconds=123_456), expected_part_time=60_000))
    run = client.get_job_run("R1")
    assert isinstance(run, JobRun)
    assert run.start_at == T0 + timedelta(milliseconds=123)
    assert run.end_at is None
    assert run.metrics is not None
    assert run.metrics.total_parts == 0
    assert sim.runs()["R1"]["start_at"] == "2024-01-01T08:00:00.123Z"
    sim.set_counts("R1", total=12, scrap=2, nonconform=1)
    client.stop_job_run(StopJobRun(erp_job_operation_run_id="R1", end_at=T0 + timedelta(hours=2)))
    run = client.get_job_run("R1")
    assert run is not None
    assert run.end_at == T0 + timedelta(hours=2)
    assert run.metrics is not None
    assert (run.metrics.total_parts, run.metrics.good_parts) == (12, 9)
    assert (run.metrics.scrap_parts, run.metrics.nonconform_parts) == (2, 1)


def test_get_by_query_form_when_the_path_has_no_placeholder(sim: MMSimulator) -> None:
    paths = MMPaths(get=sim.paths.get_by_query)
    with client_for(sim, paths=paths) as client:
        client.start_job_run(start_req("21431871|10/1"))
        assert client.get_job_run("21431871|10/1") is not None
        assert client.get_job_run("nope") is None
    assert api_calls(sim, "get")[0]["path"] == "/erp/jobrun"


def test_run_ids_with_reserved_characters_in_the_path_form(client: MMClient, sim: MMSimulator) -> None:
    run_id = "21431871|10/1 #?%"
    client.start_job_run(start_req(run_id))
    assert client.get_job_run(run_id) is not None
    assert api_calls(sim, "get")[-1]["run_id"] == run_id


def test_repeated_start_is_idempotent_and_other_values_conflict(client: MMClient, sim: MMSimulator) -> None:
    client.start_job_run(start_req(start_at=T0))
    client.start_job_run(start_req(start_at=T0))
    assert len(sim.runs()) == 1
    with pytest.raises(MMConflictError) as caught:
        client.start_job_run(start_req(start_at=T0, expected_part_time=5000))
    assert caught.value.http_status == 409
    assert caught.value.code == "Conflict"
    assert [e["field"] for e in caught.value.field_errors] == ["expectedPartTime"]
    assert len(api_calls(sim, "start")) == 3  # record errors are never retried


def test_setup_to_production_switch(client: MMClient, sim: MMSimulator) -> None:
    client.start_job_run(start_req(start_at=T0, start_in_setup=True))
    assert sim.runs()["R1"]["phase"] == "setup"
    client.start_job_run(start_req(start_at=T0, start_in_setup=False))
    assert sim.runs()["R1"]["phase"] == "production"
    client.start_job_run(start_req(start_at=T0, start_in_setup=False))  # a retried switch
    with pytest.raises(MMConflictError):
        client.start_job_run(start_req(start_at=T0, start_in_setup=True))


def test_unknown_machine_is_a_record_error(client: MMClient, sim: MMSimulator) -> None:
    with pytest.raises(MMRecordError) as caught:
        client.start_job_run(start_req(machine="M9"))
    assert caught.value.http_status == 400
    assert caught.value.code == "ValidationError"
    assert caught.value.field_errors[0]["code"] == "MachineNotFound"
    assert caught.value.run_id == "R1"
    assert len(api_calls(sim)) == 1


def test_unknown_runs(client: MMClient) -> None:
    assert client.get_job_run("nope") is None
    with pytest.raises(MMNotFoundError) as caught:
        client.stop_job_run(StopJobRun(erp_job_operation_run_id="nope"))
    assert caught.value.http_status == 404
    assert caught.value.code == "NotFound"


def test_stop_twice_keeps_the_first_end(client: MMClient) -> None:
    client.start_job_run(start_req(start_at=T0))
    client.stop_job_run(StopJobRun(erp_job_operation_run_id="R1", end_at=T0 + timedelta(hours=1)))
    client.stop_job_run(StopJobRun(erp_job_operation_run_id="R1", end_at=T0 + timedelta(hours=3)))
    run = client.get_job_run("R1")
    assert run is not None
    assert run.end_at == T0 + timedelta(hours=1)


def test_requests_are_validated_before_sending(client: MMClient, sim: MMSimulator) -> None:
    bad = StartJobRun.model_construct(
        erp_job_operation_run_id="R1", erp_machine_id="M1", job_name="J", expected_part_time=-5
    )
    with pytest.raises(MMRecordError) as caught:
        client.start_job_run(bad)
    assert caught.value.code == "ClientValidation"
    assert caught.value.http_status is None
    assert "expectedPartTime" in str(caught.value)
    with pytest.raises(MMRecordError):
        client.get_job_run("  ")
    assert api_calls(sim) == []


# ---- imports ---------------------------------------------------------------------------------


def test_import_jobs(client: MMClient, sim: MMSimulator) -> None:
    client.import_jobs(JobFile(b"name,part,workcenter,expectedparttime\nW1,P1,M1,60000\nW2,P2,M1,30000\n"))
    client.import_jobs(JobFile(b"name,part\nW2,P2\n", auto_archive=True))
    assert {(j["name"], j["archived"]) for j in sim.jobs()["mm"]} == {("W1", True), ("W2", False)}
    client.import_jobs(JobFile(b"WO,OP,RES\n1,10,M1\n", import_type="inforLN", filename="ln.csv"))
    assert len(sim.jobs()["inforLN"]) == 1


def test_malformed_import_is_a_record_error_with_the_row(client: MMClient) -> None:
    with pytest.raises(MMRecordError) as caught:
        client.import_jobs(JobFile(b"name,quantity\nW1,1\nW2,lots\n"))
    assert caught.value.http_status == 400
    assert caught.value.field_errors[0]["row"] == 3
    assert "row 3" in str(caught.value)


def test_import_arguments_are_checked_before_sending(client: MMClient, sim: MMSimulator) -> None:
    with pytest.raises(MMRecordError, match="import type"):
        client.import_jobs(JobFile(b"name\nW1\n", import_type="excel"))  # type: ignore[arg-type]
    with pytest.raises(MMRecordError, match="empty"):
        client.import_jobs(JobFile(b"  \n"))
    assert api_calls(sim) == []


# ---- configuration errors ----------------------------------------------------------------------


def test_wrong_key_is_a_config_error_without_retry(sim: MMSimulator) -> None:
    with (
        MMClient(fast_mm_settings(sim.base_url, "not-the-key")) as client,
        pytest.raises(MMConfigError) as caught,
    ):
        client.start_job_run(start_req())
    assert caught.value.http_status == 401
    assert caught.value.code == "invalid_token"
    assert client.breaker_state == "closed"
    assert len(api_calls(sim)) == 1


def test_key_without_scope_is_a_config_error() -> None:
    with MMSimulator(extra_keys={"reports-only": {"reporting"}}) as sim:
        with (
            MMClient(fast_mm_settings(sim.base_url, "reports-only")) as client,
            pytest.raises(MMConfigError) as caught,
        ):
            client.get_job_run("R1")
        assert caught.value.http_status == 403
        assert caught.value.code == "insufficient_scope"


def test_missing_key_fails_at_construction() -> None:
    with pytest.raises(MMConfigError, match=r"mm\.api_key"):
        MMClient(MMSettings())


def test_a_body_that_is_not_a_job_run_is_an_unexpected_answer_retried() -> None:
    """Not a config error (as it was before issue #15): a wrong host or path, retried within the call."""
    seen: list[httpx.Request] = []

    def login_page(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="<html>login</html>")

    settings = fast_mm_settings("https://mm.example", "k-123456", max_attempts=3)
    with (
        MMClient(settings, transport=httpx.MockTransport(login_page)) as client,
        pytest.raises(MMUnexpectedAnswerError, match=r"not a JSON job run") as caught,
    ):
        client.get_job_run("R1")
    assert (caught.value.http_status, caught.value.code, len(seen)) == (200, "UnexpectedAnswer", 3)
    assert "https://mm.example/erp/jobdispatch/R1" in str(caught.value)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"startAt": "never"}))
    with (
        MMClient(fast_mm_settings("https://mm.example", "k-123456"), transport=transport) as client,
        pytest.raises(MMUnexpectedAnswerError, match=r"not a job run \(1 schema errors: startAt\)"),
    ):
        client.get_job_run("R1")


@pytest.mark.parametrize("get_path", ["/erp/jobdispatch/{erpJobOperationRunId}", "/erp/jobrun"])
def test_requests_on_the_wire(get_path: str) -> None:
    """URLs keep base_url's path (merged once, as httpx merges), bodies are wire() as JSON."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        cookie = {"Set-Cookie": "lb=node-7; Path=/"}  # a load balancer's; MM's API needs no cookie
        if request.method == "GET":
            return httpx.Response(200, headers=cookie, json={"startAt": "2024-01-01T08:00:00.000Z"})
        return httpx.Response(200, headers=cookie, json=None)

    settings = fast_mm_settings("https://mm.example/api/v2/", "k-123456", paths=MMPaths(get=get_path))
    request = start_req("R 1/2", start_at=T0)
    with MMClient(settings, transport=httpx.MockTransport(answer)) as client:
        client.start_job_run(request)
        client.stop_job_run(StopJobRun(erp_job_operation_run_id="R 1/2"))
        run = client.get_job_run("R 1/2")
        client.import_jobs(JobFile(b"job,op\nW1,10\n"))
    assert run is not None and run.start_at == T0
    start, stop, get, upload = seen
    assert str(start.url) == "https://mm.example/api/v2/erp/jobdispatch/start"
    assert str(stop.url) == "https://mm.example/api/v2/erp/jobdispatch/stop"
    if "{" in get_path:
        assert str(get.url) == "https://mm.example/api/v2/erp/jobdispatch/R%201%2F2"
    else:
        assert get.url.path == "/api/v2/erp/jobrun" and get.url.params["erpRunId"] == "R 1/2"
    assert upload.url.path == "/api/v2/erp/jobs/import" and upload.url.params["type"] == "mm"
    assert json.loads(start.content) == request.wire()
    assert start.content == json.dumps(request.wire(), separators=(",", ":")).encode()
    assert json.loads(stop.content) == {"erpJobOperationRunId": "R 1/2"}
    for sent in (start, stop):
        assert sent.headers["Content-Type"] == "application/json"
        assert sent.headers["Content-Length"] == str(len(sent.content))
    for sent in seen:
        assert sent.headers["Authorization"] == "Bearer k-123456"
        assert sent.headers["User-Agent"].startswith("erpsync/")
        assert sent.headers["Accept"] == "application/json"
        assert "Cookie" not in sent.headers


def test_a_proxy_named_by_the_environment_is_used(sim: MMSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTP_PROXY set, httpx.Client routes the requests; the simulator serves as the proxy here."""
    monkeypatch.setenv("HTTP_PROXY", sim.base_url)
    settings = fast_mm_settings("http://mm.invalid", sim.api_key, max_attempts=1)
    with MMClient(settings) as client:
        client.start_job_run(start_req("via-proxy"))
        assert client.get_job_run("via-proxy") is not None
    assert "via-proxy" in sim.runs()
    monkeypatch.setenv("NO_PROXY", "mm.invalid")
    with (
        MMClient(settings) as client,
        pytest.raises(MMRetryableError, match="network error"),  # no proxy for it: DNS fails
    ):
        client.get_job_run("via-proxy")


def test_a_redirect_is_an_unexpected_answer_naming_its_location() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(302, headers={"Location": "https://login.example/"})
    )
    with (
        MMClient(fast_mm_settings("http://mm.example", "k-123456"), transport=transport) as client,
        pytest.raises(MMUnexpectedAnswerError, match=r"redirected to https://login\.example/"),
    ):
        client.start_job_run(start_req())


# ---- transient failures and faults -----------------------------------------------------------


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_transient_statuses_are_retried_into_success(client: MMClient, sim: MMSimulator, status: int) -> None:
    retries_before = metric("erpsync_mm_retries_total", {"operation": "start"})
    sim.set_faults(Fault("error", status=status, operations=frozenset({"start"}), times=2))
    client.start_job_run(start_req())
    assert [c["status"] for c in api_calls(sim)] == [status, status, 200]
    assert metric("erpsync_mm_retries_total", {"operation": "start"}) == retries_before + 2


def test_persistent_5xx_ends_in_a_retryable_error_after_max_attempts(sim: MMSimulator) -> None:
    sim.set_faults(Fault("error", status=503))
    with client_for(sim, max_attempts=4) as client, pytest.raises(MMRetryableError) as caught:
        client.stop_job_run(StopJobRun(erp_job_operation_run_id="R1"))
    assert type(caught.value) is MMRetryableError
    assert caught.value.http_status == 503
    assert len(api_calls(sim)) == 4


def test_other_4xx_are_record_errors_without_retry(client: MMClient, sim: MMSimulator) -> None:
    sim.set_faults(Fault("error", status=422, times=1))
    with pytest.raises(MMRecordError) as caught:
        client.start_job_run(start_req())
    assert caught.value.http_status == 422
    assert len(api_calls(sim)) == 1


def test_429_retry_after_is_honoured(client: MMClient, sim: MMSimulator) -> None:
    sim.set_faults(Fault("rate_limit", retry_after=0.3, times=1))
    started = time.monotonic()
    client.start_job_run(start_req())
    assert time.monotonic() - started >= 0.3
    assert [c["status"] for c in api_calls(sim)] == [429, 200]


def test_retry_after_beyond_the_deadline_gives_up_at_once(sim: MMSimulator) -> None:
    sim.set_faults(Fault("rate_limit", retry_after=120))
    with client_for(sim, retry_deadline_seconds=5) as client:
        started = time.monotonic()
        with pytest.raises(MMRetryableError) as caught:
            client.start_job_run(start_req())
        assert time.monotonic() - started < 5  # not the 120 s it was asked to wait
    assert caught.value.http_status == 429
    assert caught.value.retry_after == 120
    assert len(api_calls(sim)) == 1


def test_the_total_deadline_bounds_the_retries(sim: MMSimulator) -> None:
    sim.set_faults(Fault("error", status=500))
    with client_for(sim, max_attempts=50, retry_deadline_seconds=0.4, backoff_initial_seconds=0.05) as client:
        started = time.monotonic()
        with pytest.raises(MMRetryableError):
            client.start_job_run(start_req())
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + 1.0  # the deadline also cuts the last attempt's timeouts
    assert 2 <= len(api_calls(sim)) < 50


def test_backoff_grows_exponentially(sim: MMSimulator) -> None:
    sim.set_faults(Fault("error", status=500))
    with client_for(sim, max_attempts=4, backoff_initial_seconds=0.05, backoff_max_seconds=1) as client:
        started = time.monotonic()
        with pytest.raises(MMRetryableError):
            client.start_job_run(start_req())
        elapsed = time.monotonic() - started
    # waits of at least 0.025 + 0.05 + 0.1 (half of 0.05, 0.1, 0.2) and at most 0.35, plus 4 round trips
    assert 0.175 <= elapsed < 0.35 + 2


def test_stamina_testing_mode_removes_the_waits(sim: MMSimulator) -> None:
    sim.set_faults(Fault("rate_limit", retry_after=5, times=2))
    with client_for(sim) as client, stamina.set_testing(True, attempts=3):
        started = time.monotonic()
        client.start_job_run(start_req())
        assert time.monotonic() - started < 1


def test_read_timeout_is_retried_and_the_start_stays_single(sim: MMSimulator) -> None:
    sim.set_faults(Fault("latency", latency_ms=600, operations=frozenset({"start"}), times=1))
    with client_for(sim, read_timeout_seconds=0.2) as client:
        client.start_job_run(start_req(start_at=T0))
    # the slow first attempt is applied after the client gave up on it; the retry matched it
    deadline = time.monotonic() + 10
    while len(api_calls(sim, "start")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [c["status"] for c in api_calls(sim, "start")] == [200, 200]
    assert list(sim.runs()) == ["R1"]


def test_connect_failure_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        MMClient(fast_mm_settings(f"http://127.0.0.1:{port}", "k-123456", max_attempts=3)) as client,
        pytest.raises(MMRetryableError) as caught,
    ):
        client.get_job_run("R1")
    assert caught.value.code == "Network"
    assert caught.value.http_status is None


@pytest.mark.parametrize("kind", ["drop", "drop_after_apply", "apply_then_fail"])
@pytest.mark.parametrize("operation", ["start", "stop", "import"])
def test_lost_answers_are_retried_into_exactly_one_effect(
    client: MMClient, sim: MMSimulator, kind: str, operation: str
) -> None:
    if operation == "stop":
        client.start_job_run(start_req(start_at=T0))
    sim.set_faults(Fault(kind, operations=frozenset({operation}), times=1))  # type: ignore[arg-type]
    if operation == "start":
        client.start_job_run(start_req(start_at=T0))
    elif operation == "stop":
        client.stop_job_run(StopJobRun(erp_job_operation_run_id="R1", end_at=T0 + timedelta(hours=1)))
    else:
        client.import_jobs(JobFile(b"name\nW1\n", auto_archive=True))
    statuses = [c["status"] for c in api_calls(sim, operation)]
    assert statuses == [500 if kind == "apply_then_fail" else None, 200]
    assert 409 not in statuses
    if operation == "import":
        assert [j["name"] for j in sim.jobs()["mm"]] == ["W1"]
        return
    runs = sim.runs()
    assert list(runs) == ["R1"]
    if operation == "stop":
        assert runs["R1"]["end_at"] == "2024-01-01T09:00:00.000Z"


def test_apply_then_fail_on_a_start_without_start_time(client: MMClient, sim: MMSimulator) -> None:
    sim.set_faults(Fault("apply_then_fail", operations=frozenset({"start"}), times=1))
    client.start_job_run(start_req())  # server-time start; the retry carries no startAt either
    assert list(sim.runs()) == ["R1"]


def test_apply_then_fail_on_the_setup_switch(client: MMClient, sim: MMSimulator) -> None:
    client.start_job_run(start_req(start_at=T0, start_in_setup=True))
    sim.set_faults(Fault("apply_then_fail", operations=frozenset({"start"}), times=1))
    client.start_job_run(start_req(start_at=T0, start_in_setup=False))
    assert sim.runs()["R1"]["phase"] == "production"


def test_a_storm_of_faults_never_duplicates_or_conflicts(sim: MMSimulator) -> None:
    sim.set_faults(
        Fault("error", status=503, probability=0.15),
        Fault("rate_limit", retry_after=0.001, probability=0.1),
        Fault("drop", probability=0.1),
        Fault("apply_then_fail", probability=0.15),
        Fault("drop_after_apply", probability=0.1),
        seed=2024,
    )

    def lifecycle(client: MMClient, i: int) -> None:
        run_id = f"R{i}"
        client.start_job_run(start_req(run_id, machine=f"M{i % 3 + 1}", start_at=T0 + timedelta(minutes=i)))
        client.stop_job_run(
            StopJobRun(erp_job_operation_run_id=run_id, end_at=T0 + timedelta(minutes=i, seconds=30))
        )

    with client_for(sim, max_attempts=30) as client, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: lifecycle(client, i), range(60)))
    runs = sim.runs()
    assert len(runs) == 60
    assert all(run["end_at"] is not None for run in runs.values())
    calls = api_calls(sim)
    assert 409 not in {c["status"] for c in calls}
    assert {c["fault"] for c in calls} >= {
        "error",
        "rate_limit",
        "drop",
        "apply_then_fail",
        "drop_after_apply",
    }


# ---- circuit breaker, rate limit, concurrency --------------------------------------------------


def test_breaker_opens_pauses_calls_and_a_probe_closes_it(sim: MMSimulator) -> None:
    sim.set_faults(Fault("error", status=503))
    with client_for(sim, breaker_failure_threshold=3, breaker_reset_seconds=1.0, max_attempts=10) as client:
        with pytest.raises(MMCircuitOpenError) as caught:
            client.start_job_run(start_req())
        assert len(api_calls(sim)) == 3
        assert client.breaker_state == "open"
        assert metric("erpsync_circuit_breaker_open", {}) == 1
        assert caught.value.retry_after is not None
        with pytest.raises(MMCircuitOpenError):
            client.get_job_run("R1")  # fails fast: nothing sent
        assert len(api_calls(sim)) == 3
        sim.set_faults()
        time.sleep(1.0)
        assert client.breaker_state == "half-open"
        assert client.get_job_run("R1") is None  # the probe (a 404 means MM is up)
        assert client.breaker_state == "closed"
        assert metric("erpsync_circuit_breaker_open", {}) == 0


def test_429_and_record_errors_do_not_trip_the_breaker(sim: MMSimulator) -> None:
    sim.set_faults(Fault("rate_limit", retry_after=0.001))
    with client_for(sim, breaker_failure_threshold=2, max_attempts=4) as client:
        with pytest.raises(MMRetryableError) as caught:
            client.start_job_run(start_req())
        assert not isinstance(caught.value, MMCircuitOpenError)
        assert client.breaker_state == "closed"
        sim.set_faults()
        for _ in range(3):
            with pytest.raises(MMNotFoundError):
                client.stop_job_run(StopJobRun(erp_job_operation_run_id="nope"))
        assert client.breaker_state == "closed"


def test_client_rate_limit(sim: MMSimulator) -> None:
    with client_for(sim, rate_limit_per_second=20) as client:
        started = time.monotonic()
        for _ in range(30):
            client.get_job_run("nope")
        assert time.monotonic() - started >= (30 - 20) / 20 - 0.05


def test_concurrency_is_bounded_by_max_concurrency(sim: MMSimulator) -> None:
    sim.set_faults(Fault("latency", latency_ms=50))
    with client_for(sim, max_concurrency=4) as client, ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.get_job_run(f"R{i}"), range(32)))
    assert sim.stats()["peak_in_flight"] <= 4


def test_concurrent_calls_share_one_client(sim: MMSimulator) -> None:
    sim.set_faults(Fault("latency", latency_ms=50))
    with client_for(sim, max_concurrency=32) as client, ThreadPoolExecutor(32) as pool:
        started = time.monotonic()
        list(
            pool.map(lambda i: client.start_job_run(start_req(f"R{i}", machine=f"M{i % 3 + 1}")), range(256))
        )
        elapsed = time.monotonic() - started
    assert len(sim.runs()) == 256
    assert sim.stats()["peak_in_flight"] >= 16
    assert elapsed < 256 * 0.05  # a serial client or server needs at least this


def test_latency_is_reported(client: MMClient) -> None:
    before = metric("erpsync_mm_request_seconds_count", {"operation": "get", "status": "4xx"})
    client.get_job_run("nope")
    assert metric("erpsync_mm_request_seconds_count", {"operation": "get", "status": "4xx"}) == before + 1


# ---- the API key never leaks -------------------------------------------------------------------

SECRET = "mm-live-key-7f3a9c2e5b"


@contextmanager
def debug_logs() -> Iterator[io.StringIO]:
    """Everything logged (erpsync, stamina, httpx, httpcore at DEBUG) as JSON lines; restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    saved_structlog = structlog.get_config()
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    for name in saved_levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        structlog.configure(**saved_structlog)


@pytest.fixture
def secret_sim() -> Iterator[MMSimulator]:
    with MMSimulator(api_key=SECRET, machines={"M1"}) as simulator:
        yield simulator


def test_the_key_never_appears_in_reprs_errors_logs_or_audit_rows(
    secret_sim: MMSimulator, sqlite_state_store: StateStore
) -> None:
    errors: list[BaseException] = []
    with debug_logs() as stream:
        settings = fast_mm_settings(secret_sim.base_url, SECRET, max_attempts=2)
        with MMClient(settings) as client:
            assert SECRET not in repr(client)
            assert SECRET not in repr(client._http.auth)
            assert SECRET not in repr(settings)
            client.start_job_run(start_req())
            secret_sim.set_faults(Fault("error", status=500, times=2))
            for call in (
                lambda: client.start_job_run(start_req("R2")),
                lambda: client.start_job_run(start_req("R3", machine="M9")),
                lambda: client.start_job_run(start_req(start_at=T0)),
            ):
                with pytest.raises(Exception) as caught:
                    call()
                errors.append(caught.value)
        with (
            MMClient(fast_mm_settings(secret_sim.base_url, SECRET + "-wrong")) as wrong,
            pytest.raises(MMConfigError) as refused,
        ):
            wrong.get_job_run("R1")
        errors.append(refused.value)
        with (
            MMClient(fast_mm_settings("http://127.0.0.1:9", SECRET, max_attempts=2)) as down,
            pytest.raises(MMRetryableError) as unreachable,
        ):
            down.get_job_run("R1")
        errors.append(unreachable.value)
    assert [type(e).__name__ for e in errors] == [
        "MMRetryableError",
        "MMRecordError",
        "MMConflictError",
        "MMConfigError",
        "MMRetryableError",
    ]
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert SECRET not in str(chain)
            assert SECRET not in repr(chain)
            chain = chain.__cause__ or chain.__context__
    logged = stream.getvalue()
    assert "mm.retry" in logged
    assert "mm.ok" in logged  # the per-call debug line is there when DEBUG is on
    assert SECRET not in logged
    with sqlite_state_store.session() as session:
        for error in errors:
            record_audit(
                session,
                action="start_run",
                outcome="failed",
                mm_run_id="R1",
                error=error,
                after=start_req().wire(),
                detail=repr(error),
            )
    with sqlite_state_store.session() as session:
        rows = session.scalars(select(AuditEntry)).all()
        assert len(rows) == len(errors)
        for row in rows:
            text = " ".join(str(getattr(row, c.key)) for c in AuditEntry.__table__.columns)
            assert SECRET not in text


def test_the_simulator_never_echoes_or_logs_the_key(secret_sim: MMSimulator) -> None:
    response = httpx.get(
        secret_sim.base_url + "/erp/jobdispatch/R1", headers={"Authorization": f"Bearer {SECRET}-typo"}
    )
    assert SECRET not in response.text
    assert SECRET not in str(secret_sim.snapshot())


def test_threads_share_a_client_safely(client: MMClient, sim: MMSimulator) -> None:
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            client.start_job_run(start_req(f"T{i}", machine="M1"))
            client.get_job_run(f"T{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    runs = sim.runs()
    assert len(runs) == 20
    assert sum(run["end_at"] is None for run in runs.values()) == 1  # one job per machine


def test_each_retry_is_logged_once(sim: MMSimulator) -> None:
    """Two 503s then success: two `mm.retry` lines (with the operation), no second line from stamina."""
    sim.set_faults(Fault("error", status=503, times=2))
    counted_before = stamina_retries()
    with debug_logs() as stream, client_for(sim, max_attempts=4) as mm:
        mm.start_job_run(start_req())
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    retries = [e for e in events if "retry" in str(e.get("event"))]
    assert [e["event"] for e in retries] == ["mm.retry", "mm.retry"], retries
    assert all(e["operation"] == "start" and "503" in e["error"] for e in retries)
    assert stamina_retries() - counted_before == 2  # stamina's Prometheus counter still counts them


def stamina_retries() -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == "stamina_retries_total"
    )
