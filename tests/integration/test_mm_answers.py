"""Issue #15 case 1: only MachineMetrics' own answer counts as an answer.

The misbehaving proxy (tests/mm_proxy.py) stands in front of the real simulator over loopback and
answers, instead of MM or after MM applied the request, what a wrong host, a captive portal or a
gateway answers. First the client's reading of each status x body x operation, with what MM holds
afterwards; then real sync cycles on every state backend: MM state, journal, binding and audit,
and that the cycles converge once the "host is fixed" (the proxy rule cleared).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.errors import (
    MMConfigError,
    MMConflictError,
    MMError,
    MMNotFoundError,
    MMRetryableError,
    MMUnexpectedAnswerError,
)
from erpsync.adapters.mm.schemas import JobFile, JobRun, StartJobRun, StopJobRun
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state.store import StateStore
from erpsync.config import MMPaths
from tests.fixtures_mm import fast_mm_settings
from tests.integration.test_mm_give_up import RUN, World, local, utc
from tests.mm_proxy import HTML, HTML_PAGE, JSON, MisbehavingProxy, Operation, Rule

NOT_FOUND = b'{"code":"NotFound","message":"Job run not found","errors":[]}'
CONFLICT = b'{"code":"Conflict","message":"Job run conflicts with an existing one","errors":[]}'
INVALID_TOKEN = b'{"error":"invalid_token","error_description":"The access token is invalid"}'
SERVER_ERROR = b'{"code":"InternalServerError","message":"Internal Server Error","errors":[]}'
JOB_RUN = b'{"startAt":"2024-01-01T08:00:00.000Z","endAt":null}'
LOGIN = "http://portal.example/login"
ID = "erp:A1"


@pytest.fixture
def proxy(mm_simulator: MMSimulator) -> Iterator[MisbehavingProxy]:
    with MisbehavingProxy(mm_simulator.base_url) as misbehaving:
        yield misbehaving


def client_via(proxy: MisbehavingProxy, sim: MMSimulator, **overrides: Any) -> MMClient:
    return MMClient(fast_mm_settings(proxy.url, sim.api_key, **{"max_attempts": 2, **overrides}))


def rule(
    operation: Operation | None,
    when: Literal["instead", "after"],
    status: int,
    content_type: str | None,
    body: bytes,
) -> Rule:
    """A proxy rule; a 302 leads to a login page."""
    location = (("Location", LOGIN),) if status == 302 else ()
    return Rule(operation, when=when, status=status, body=body, content_type=content_type, headers=location)


def call(client: MMClient, operation: Operation) -> JobRun | None:
    if operation == "start":
        client.start_job_run(StartJobRun(erp_job_operation_run_id=ID, erp_machine_id="M1", job_name="W1"))
    elif operation == "stop":
        client.stop_job_run(StopJobRun(erp_job_operation_run_id=ID))
    elif operation == "get":
        return client.get_job_run(ID)
    else:
        client.import_jobs(JobFile(b"name\nW1\n"))
    return None


# (operation, when, status, content type, body) -> the client's outcome: an error class, "ok"
# (success) or "none" (get: MM has no such run)
Outcome = type[MMError] | Literal["ok", "none"]
U = MMUnexpectedAnswerError
TABLE: list[tuple[str, Operation, Literal["instead", "after"], int, str | None, bytes, Outcome]] = [
    ("start 200 html", "start", "instead", 200, HTML, HTML_PAGE, U),
    ("start 200 html after MM applied", "start", "after", 200, HTML, HTML_PAGE, U),
    ("start 200 text/plain", "start", "instead", 200, "text/plain", b"OK", U),
    ("start 200 empty text/html", "start", "instead", 200, HTML, b"", U),
    ("start 200 empty untyped", "start", "after", 200, None, b"", "ok"),
    ("start 200 null", "start", "after", 200, JSON, b"null", "ok"),
    ("start 200 null as text/plain", "start", "instead", 200, "text/plain", b"null", U),
    ("start 200 json not json", "start", "instead", 200, JSON, HTML_PAGE, U),
    ("start 404 html", "start", "instead", 404, HTML, b"<h1>404 Not Found</h1>", U),
    ("start 409 html", "start", "instead", 409, HTML, b"<h1>409 Conflict</h1>", U),
    ("start 409 json", "start", "instead", 409, JSON, CONFLICT, MMConflictError),
    ("start 500 html", "start", "instead", 500, HTML, b"<h1>500 Internal Server Error</h1>", U),
    ("start 500 json", "start", "instead", 500, JSON, SERVER_ERROR, MMRetryableError),
    ("start 302 login", "start", "instead", 302, HTML, b"", U),
    ("start 401 html", "start", "instead", 401, HTML, b"<form>Sign in</form>", U),
    ("start 401 json", "start", "instead", 401, JSON, INVALID_TOKEN, MMConfigError),
    ("start 400 html", "start", "instead", 400, HTML, b"<h1>Bad Request</h1>", U),
    ("stop 200 html", "stop", "instead", 200, HTML, HTML_PAGE, U),
    ("stop 200 null", "stop", "after", 200, JSON, b"null", "ok"),
    ("stop 404 html", "stop", "instead", 404, HTML, b"<h1>404 Not Found</h1>", U),
    ("stop 404 json", "stop", "instead", 404, JSON, NOT_FOUND, MMNotFoundError),
    ("stop 302 login", "stop", "instead", 302, None, b"", U),
    ("get 200 html", "get", "instead", 200, HTML, HTML_PAGE, U),
    ("get 200 malformed json", "get", "instead", 200, JSON, b'{"startAt": "2024-01-01T08:00', U),
    ("get 200 wrong shape", "get", "instead", 200, JSON, b'{"startAt": "never"}', U),
    ("get 200 null", "get", "instead", 200, JSON, b"null", U),
    ("get 200 job run", "get", "instead", 200, JSON, JOB_RUN, "ok"),
    ("get 404 html", "get", "instead", 404, HTML, b"<h1>404 Not Found</h1>", U),
    ("get 404 json", "get", "instead", 404, JSON, NOT_FOUND, "none"),
    ("get 401 html", "get", "instead", 401, HTML, b"<form>Sign in</form>", U),
    ("import 200 html", "import", "instead", 200, HTML, HTML_PAGE, U),
    ("import 200 null", "import", "after", 200, JSON, b"null", "ok"),
]


@pytest.mark.parametrize(
    ("operation", "when", "status", "content_type", "body", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_the_client_reads_each_answer_by_status_type_and_body(
    mm_simulator: MMSimulator,
    proxy: MisbehavingProxy,
    operation: Operation,
    when: Literal["instead", "after"],
    status: int,
    content_type: str | None,
    body: bytes,
    expected: Outcome,
) -> None:
    sim = mm_simulator
    with client_via(proxy, sim) as client:
        if operation == "stop":
            call(client, "start")  # a run MM has open, for the stop to end (or not)
        proxy.arm(rule(operation, when, status, content_type, body))
        mm_before = len(sim.calls())
        if expected in ("ok", "none"):
            answer = call(client, operation)
            assert (answer is None) is (expected != "ok" or operation != "get")
        else:
            assert isinstance(expected, type)
            with pytest.raises(expected) as caught:
                call(client, operation)
            error = caught.value
            assert type(error) is expected  # e.g. a 404 HTML page is no MMNotFoundError
            if expected is U:
                assert error.code == "UnexpectedAnswer" and error.http_status == status
                assert f"HTTP {status}" in str(error)
                assert f"{proxy.url}/" in str(error)  # the URL it came from
                assert "mm.base_url" in str(error) and "mm.paths" in str(error)
                assert len(proxy.seen(operation)) >= 2, "an unexpected answer is retried within the call"
                if status == 302:
                    assert f"redirected to {LOGIN}" in str(error)

    mm_got = [c for c in sim.calls()[mm_before:] if c["operation"] == operation]
    assert len(mm_got) == (len(proxy.seen(operation)) if when == "after" else 0)
    runs = sim.runs()
    if operation == "start":  # MM has the run only if it got the start; never because of the answer
        assert (ID in runs) is (when == "after")
    if operation == "stop":  # only MM's own stop ends the run
        assert runs[ID]["end_at"] is None if when == "instead" else runs[ID]["end_at"] is not None


def test_unexpected_answers_count_as_breaker_failures(
    mm_simulator: MMSimulator, proxy: MisbehavingProxy
) -> None:
    proxy.arm(Rule("start"))
    with client_via(proxy, mm_simulator, breaker_failure_threshold=2, breaker_reset_seconds=60) as client:
        with pytest.raises(MMUnexpectedAnswerError):
            call(client, "start")
        assert client.breaker_state == "open"
        with pytest.raises(MMRetryableError, match="calls paused"):
            call(client, "get")
    assert len(proxy.calls) == 2  # the paused get never left the client


def test_every_answer_the_simulator_gives_is_read_as_mm_s_own() -> None:
    """The simulator answers as MM does (JSON, errors with a code), so none of its answers, success
    or refusal, is taken for something else's: the shape rules reject only what MM never sends."""
    with MMSimulator(machines={"M1"}, extra_keys={"reports-only": {"reporting"}}, seed=7) as sim:
        settings = fast_mm_settings(sim.base_url, sim.api_key, max_attempts=1)
        outcomes: dict[str, object] = {}

        def outcome(name: str, action: Any) -> None:
            try:
                action()
                outcomes[name] = "ok"
            except MMError as exc:
                outcomes[name] = type(exc).__name__

        def start(client: MMClient, run_id: str = ID, machine: str = "M1", job: str = "W1") -> None:
            client.start_job_run(
                StartJobRun(erp_job_operation_run_id=run_id, erp_machine_id=machine, job_name=job)
            )

        with MMClient(settings) as client:
            outcome("start 200 null", lambda: start(client))
            outcome("start again 200 null", lambda: start(client))
            outcome("start 409 conflict", lambda: start(client, job="W2"))
            outcome("start 400 unknown machine", lambda: start(client, "erp:A2", machine="M9"))
            outcome("get 200 job run", lambda: client.get_job_run(ID))
            outcome("get 404", lambda: client.get_job_run("erp:none"))
            outcome("stop 200 null", lambda: client.stop_job_run(StopJobRun(erp_job_operation_run_id=ID)))
            outcome("stop 404", lambda: client.stop_job_run(StopJobRun(erp_job_operation_run_id="erp:none")))
            outcome("import 200 null", lambda: client.import_jobs(JobFile(b"name\nW1\n")))
            sim.set_faults(Fault("rate_limit", times=1, retry_after=0), Fault("error", status=503, times=1))
            outcome("429", lambda: client.get_job_run(ID))
            outcome("503", lambda: client.get_job_run(ID))
        with MMClient(fast_mm_settings(sim.base_url, "wrong-key", max_attempts=1)) as wrong:
            outcome("401", lambda: wrong.get_job_run(ID))
        with MMClient(fast_mm_settings(sim.base_url, "reports-only", max_attempts=1)) as reports:
            outcome("403", lambda: reports.get_job_run(ID))
        nowhere = MMPaths(start="/erp/nowhere", get="/erp/elsewhere/{erpJobOperationRunId}/x")
        with MMClient(fast_mm_settings(sim.base_url, sim.api_key, max_attempts=1, paths=nowhere)) as lost:
            outcome("unknown path 404", lambda: start(lost))
            outcome("get unknown path 404", lambda: lost.get_job_run(ID))
        stop_as_get = MMPaths(start="/erp/jobdispatch/{erpJobOperationRunId}")
        with MMClient(
            fast_mm_settings(sim.base_url, sim.api_key, max_attempts=1, paths=stop_as_get)
        ) as wrong_way:
            outcome("405", lambda: start(wrong_way))

    assert outcomes == {
        "start 200 null": "ok",
        "start again 200 null": "ok",
        "start 409 conflict": "MMConflictError",
        "start 400 unknown machine": "MMRecordError",
        "get 200 job run": "ok",
        "get 404": "ok",
        "stop 200 null": "ok",
        "stop 404": "MMNotFoundError",
        "import 200 null": "ok",
        "429": "MMRetryableError",
        "503": "MMRetryableError",
        "401": "MMConfigError",
        "403": "MMConfigError",
        "unknown path 404": "MMNotFoundError",
        "get unknown path 404": "ok",  # MM's JSON 404: no such run
        "405": "MMConfigError",
    }


# -- real sync cycles on every state backend --------------------------------------------------------
@pytest.fixture
def world(
    database_url: str, state_store: StateStore, mm_simulator: MMSimulator, tmp_path: Path
) -> Iterator[World]:
    with MisbehavingProxy(mm_simulator.base_url) as misbehaving:
        here = World(f"sqlite:///{tmp_path / 'erp.db'}", database_url, state_store, mm_simulator, misbehaving)
        here.with_attempts(8)
        yield here
        here.shop.dispose()


START_ANSWERS = [
    ("200-html", "instead", 200, HTML, HTML_PAGE),
    ("200-html-after-mm-applied", "after", 200, HTML, HTML_PAGE),
    ("200-text", "instead", 200, "text/plain", b"OK"),
    ("404-html", "instead", 404, HTML, b"<h1>404 Not Found</h1>"),
    ("409-html", "instead", 409, HTML, b"<h1>409 Conflict</h1>"),
    ("500-html", "instead", 500, HTML, b"<h1>500 Internal Server Error</h1>"),
    ("302", "instead", 302, None, b""),
    ("401-html", "instead", 401, HTML, b"<form>Sign in</form>"),
]


@pytest.mark.parametrize(
    ("when", "status", "content_type", "body"),
    [a[1:] for a in START_ANSWERS],
    ids=[a[0] for a in START_ANSWERS],
)
def test_a_start_answered_by_something_else_is_retried_and_started_once_the_host_is_fixed(
    world: World, when: Literal["instead", "after"], status: int, content_type: str | None, body: bytes
) -> None:
    world.proxy.arm(rule("start", when, status, content_type, body))
    ticket = world.shop.fx.clock_in(world.op, local(8))

    summary = world.sync()

    assert (summary.started, summary.retried, summary.quarantined) == (0, 1, 0)
    assert (RUN in world.sim.runs()) is (when == "after")  # MM has it only if it got it
    assert world.journal() == {f"start_run:{RUN}:production": "failed_retryable"}
    (row,) = world.audit("start_run")
    assert (row.outcome, row.http_status, row.error_class) == ("retrying", status, "MMUnexpectedAnswerError")
    assert "unexpected answer" in (row.error_message or "") and "mm.base_url" in (row.error_message or "")
    assert world.quarantined() == []

    world.proxy.clear()  # the host is fixed
    world.due_now()
    summary = world.sync()
    assert summary.started + summary.recovered == 1  # sent again: by the recovery of actions in doubt

    assert world.run()["end_at"] is None and world.run()["start_at"] == utc(8)
    assert world.journal() == {f"start_run:{RUN}:production": "succeeded"}
    assert world.binding()[0] == "running"
    assert [r.outcome for r in world.audit("start_run")] == ["retrying", "succeeded"]
    world.shop.fx.clock_out(ticket, local(11))
    assert world.sync().stopped == 1
    assert world.run()["end_at"] == utc(11)
    world.assert_converged(open_in_erp=False)


STOP_ANSWERS = [
    ("200-html", 200, HTML, HTML_PAGE),
    ("404-html", 404, HTML, b"<h1>404 Not Found</h1>"),
    ("404-json-without-code", 404, JSON, b'{"status": 404}'),
    ("302", 302, None, b""),
]


@pytest.mark.parametrize(
    ("status", "content_type", "body"), [a[1:] for a in STOP_ANSWERS], ids=[a[0] for a in STOP_ANSWERS]
)
def test_a_stop_answered_by_something_else_is_neither_done_nor_nothing_to_stop(
    world: World, status: int, content_type: str | None, body: bytes
) -> None:
    ticket = world.shop.fx.clock_in(world.op, local(8))
    assert world.sync().started == 1
    world.proxy.arm(rule("stop", "instead", status, content_type, body))
    world.shop.fx.clock_out(ticket, local(11))

    summary = world.sync()

    assert (summary.stopped, summary.retried) == (0, 1)
    assert world.run()["end_at"] is None  # MM never saw the stop: the run is open
    assert world.journal()[f"stop_run:{RUN}"] == "failed_retryable"
    assert world.binding()[0] == "stopping"
    (row,) = world.audit("stop_run")
    assert (row.outcome, row.error_class) == ("retrying", "MMUnexpectedAnswerError")

    world.proxy.clear()
    world.due_now()
    summary = world.sync()
    assert summary.stopped + summary.recovered == 1
    assert world.run()["end_at"] == utc(11)
    assert world.journal()[f"stop_run:{RUN}"] == "succeeded"
    assert world.binding()[0] == "stopped"
    assert [r.outcome for r in world.audit("stop_run")] == ["retrying", "succeeded"]
    world.assert_converged(open_in_erp=False)


def test_html_200_to_every_start_for_several_cycles_then_the_host_is_fixed(world: World) -> None:
    """The audit never says succeeded for a start MM does not have; fixed, MM gets it exactly once."""
    world.proxy.arm(Rule("start"))
    ticket = world.shop.fx.clock_in(world.op, local(8))
    for _ in range(4):
        summary = world.sync()
        assert (summary.started, summary.retried) == (0, 1)
        world.due_now()
    assert world.sim.runs() == {}
    assert world.mm_calls("start") == 0
    assert [r.outcome for r in world.audit("start_run")] == ["retrying"] * 4
    assert world.journal() == {f"start_run:{RUN}:production": "failed_retryable"}
    assert world.binding()[0] != "running"

    world.proxy.clear()
    summary = world.sync()
    assert summary.started + summary.recovered == 1

    assert world.mm_calls("start") == 1
    assert world.run()["start_at"] == utc(8) and world.run()["end_at"] is None
    assert world.journal() == {f"start_run:{RUN}:production": "succeeded"}
    assert world.binding()[0] == "running"
    assert [r.outcome for r in world.audit("start_run")] == ["retrying"] * 4 + ["succeeded"]
    world.assert_converged(open_in_erp=True)
    world.shop.fx.clock_out(ticket, local(11))
    assert world.sync().stopped == 1
    world.assert_converged(open_in_erp=False)


def test_only_html_answers_give_up_after_a_read_that_is_html_too(world: World) -> None:
    """At sync.max_action_attempts the give-up path reads MM; the read is HTML as well, so the start
    is not taken as done or as missing: MM may have it (binding unconfirmed), a person is told, and
    the run is still stopped (after a read) when the ERP run ends."""
    world.with_attempts(2)
    world.proxy.arm(Rule(None))  # every operation: a web app on the wrong host
    ticket = world.shop.fx.clock_in(world.op, local(8))
    assert world.sync().retried == 1
    world.due_now()

    summary = world.sync()

    assert (summary.started, summary.quarantined) == (0, 1)
    assert world.sim.calls() == []  # MM never saw a thing
    assert world.journal() == {f"start_run:{RUN}:production": "failed_permanent"}
    assert world.binding()[0] == "unconfirmed"
    rows = world.audit("start_run")
    assert [r.outcome for r in rows] == ["retrying", "failed"]
    assert "could not be read either" in (rows[-1].error_message or "")
    assert "unexpected answer" in (rows[-1].error_message or "")
    assert "may have the run" in (rows[-1].detail or "")
    assert [c.operation for c in world.proxy.calls][-2:] == ["get", "get"]  # the read, retried once

    world.proxy.clear()  # fixed; the ERP run ends: the stop is sent, MM's 404 confirmed by a read
    world.shop.fx.clock_out(ticket, local(11))
    assert world.sync().stopped == 1
    assert world.binding()[0] == "stopped"
    (stop,) = world.audit("stop_run")
    assert (stop.outcome, stop.http_status) == ("noop", 404)
    assert "a read confirms it has no such run" in (stop.detail or "")
    world.assert_converged(open_in_erp=False)
