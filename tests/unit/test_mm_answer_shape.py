"""The rules of what counts as MachineMetrics' own answer (erpsync/adapters/mm/answer_shape.py)."""

from __future__ import annotations

import pytest

from erpsync.adapters.mm.answer_shape import (
    ack_problem,
    error_problem,
    is_json_type,
    read_job_run,
    snippet,
)
from erpsync.adapters.mm.errors import MMRetryableError, unexpected_answer
from erpsync.adapters.mm.schemas import JobRun
from erpsync.observability.scrub import MASK, register_secret

JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"
PAGE = b"<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=UTF-8", True),
        ("application/problem+json", True),
        ("application/vnd.api+json", True),
        ("text/html; charset=utf-8", False),
        ("text/plain", False),
        ("text/json", False),
        ("application/jsonp", False),
        ("", False),
    ],
)
def test_json_media_types(content_type: str, expected: bool) -> None:
    assert is_json_type(content_type) is expected


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, b"null"),  # what MM answers
        ("application/json", b""),
        ("", b""),  # e.g. a 204
        (JSON, b"{}"),
        (JSON, b'{"ok": true}'),
        (JSON, b"[]"),
        (JSON, b"true"),
        (JSON, b" null\n"),
        ("", b"null"),
    ],
)
def test_acks_mm_gives(content_type: str, body: bytes) -> None:
    assert ack_problem(content_type, body) is None


@pytest.mark.parametrize(
    ("content_type", "body", "why"),
    [
        (HTML, PAGE, "Content-Type text/html, not JSON"),
        ("text/plain", b"OK", "Content-Type text/plain, not JSON"),
        ("text/plain", b"null", "Content-Type text/plain, not JSON"),
        (HTML, b"", "an empty body with Content-Type text/html, not JSON"),
        ("", b"OK", "no Content-Type, not JSON"),
        (JSON, PAGE, "a body that is not JSON"),
        (JSON, b"{", "a body that is not JSON"),
        (JSON, b"\xff\xfe", "a body that is not JSON"),
    ],
)
def test_acks_mm_never_gives(content_type: str, body: bytes, why: str) -> None:
    assert ack_problem(content_type, body) == why


def test_a_job_run_is_read_only_from_json() -> None:
    run = read_job_run(JSON, b'{"startAt": "2024-01-01T08:00:00.000Z", "endAt": null}')
    assert isinstance(run, JobRun) and run.end_at is None
    assert read_job_run(HTML, PAGE) == "Content-Type text/html, not a JSON job run"
    assert read_job_run(JSON, b"<html>") == "a body that is not JSON"
    assert read_job_run(JSON, b"null") == "JSON that is not a job run (1 schema errors: body)"
    assert read_job_run(JSON, b"[1]") == "JSON that is not a job run (1 schema errors: body)"
    assert read_job_run(JSON, b'{"startAt": "never"}') == (
        "JSON that is not a job run (1 schema errors: startAt)"
    )


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (404, JSON, b'{"code": "NotFound", "message": "Job run not found", "errors": []}'),
        (409, JSON, b'{"code": "Conflict"}'),
        (400, JSON, b'{"message": "Problem parsing JSON"}'),
        (401, JSON, b'{"error": "invalid_token", "error_description": "bad key"}'),
        (503, "application/problem+json", b'{"message": "down"}'),
        (429, HTML, PAGE),  # throttling, whoever says it
        (429, "", b""),
    ],
)
def test_errors_mm_gives(status: int, content_type: str, body: bytes) -> None:
    assert error_problem(status, content_type, body) is None


@pytest.mark.parametrize(
    ("status", "content_type", "body", "why"),
    [
        (302, JSON, b'{"code": "x"}', "a redirect (MachineMetrics never redirects)"),
        (301, "", b"", "a redirect (MachineMetrics never redirects)"),
        (404, HTML, PAGE, "Content-Type text/html, not MachineMetrics' JSON error"),
        (409, HTML, PAGE, "Content-Type text/html, not MachineMetrics' JSON error"),
        (401, HTML, PAGE, "Content-Type text/html, not MachineMetrics' JSON error"),
        (
            500,
            "text/plain",
            b"Internal Server Error",
            "Content-Type text/plain, not MachineMetrics' JSON error",
        ),
        (502, "", b"", "no Content-Type, not MachineMetrics' JSON error"),
        (404, JSON, PAGE, "an error body that is not JSON"),
        (404, JSON, b"null", "JSON without MachineMetrics' error code or message"),
        (409, JSON, b'{"status": 409}', "JSON without MachineMetrics' error code or message"),
        (400, JSON, b'["code"]', "JSON without MachineMetrics' error code or message"),
    ],
)
def test_errors_mm_never_gives(status: int, content_type: str, body: bytes, why: str) -> None:
    assert error_problem(status, content_type, body) == why


def test_snippets_are_short_single_lines() -> None:
    assert snippet(b"") == "(empty body)"
    assert snippet(b"<p>\n  hello\tworld</p>") == repr("<p> hello world</p>")
    long = snippet(b"x" * 500)
    assert long == repr("x" * 80 + "...")
    assert "\x00" not in snippet(b"a\x00b")


def test_the_unexpected_answer_names_what_came_from_where_and_the_likely_cause() -> None:
    register_secret("sk-answer-shape-secret")
    error = unexpected_answer(
        operation="start",
        status=200,
        content_type=HTML,
        body=b"<html>token sk-answer-shape-secret</html>",
        url="http://mm.example:8080/erp/jobdispatch/start",
        why="Content-Type text/html, not JSON",
        run_id="erp:LT1",
    )
    assert isinstance(error, MMRetryableError) and error.code == "UnexpectedAnswer"
    text = str(error)
    for part in (
        "start for run 'erp:LT1'",
        "HTTP 200",
        "text/html; charset=utf-8",
        "http://mm.example:8080/erp/jobdispatch/start",
        "mm.base_url or mm.paths",
        "retried later",
        MASK,
    ):
        assert part in text, part
    assert "sk-answer-shape-secret" not in text
    gateway = unexpected_answer(
        operation="stop", status=502, content_type="", body=b"", url="u", why="w", run_id=None
    )
    assert "a proxy or gateway in front of MachineMetrics" in str(gateway)
    assert "no Content-Type, (empty body)" in str(gateway)
