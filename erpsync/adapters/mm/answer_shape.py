"""What counts as MachineMetrics' own answer: status, Content-Type and body shape (issue #15).

MM answers JSON. A 2xx to start, stop or import is ``null``, an empty body or any JSON value; a
2xx to get job run is a JSON job run; an error (4xx/5xx) is a JSON object with a ``code`` or a
``message`` (OAuth's ``error`` too); MM never redirects. Anything else came from something that is
not MM (a web app on the wrong host, a captive portal's login page, a gateway's error page, a
redirect), and the client raises `MMUnexpectedAnswerError` for it instead of reading it as a
success, a "not found" or a conflict. A 429 is throttling whoever says it, so its body is not
judged.

Each function returns why an answer is not MM's (a short phrase for the error message), or None.
Pure functions, no I/O: unit-tested on their own (tests/unit/test_mm_answer_shape.py).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from pydantic import ValidationError

from erpsync.adapters.mm.schemas import JobRun

SNIPPET_CHARS: Final = 80
# application/json and the structured-syntax suffix (application/problem+json...)
_JSON_MEDIA: Final = re.compile(r"application/(?:[\w.!#$&^-]+\+)?json")
_ERROR_KEYS: Final = ("code", "message", "error")
_NOT_JSON: Final = object()


def media_type(content_type: str) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_type(content_type: str) -> bool:
    return _JSON_MEDIA.fullmatch(media_type(content_type)) is not None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return _NOT_JSON


def _typed(content_type: str) -> str:
    return f"Content-Type {media_type(content_type)}" if content_type.strip() else "no Content-Type"


def ack_problem(content_type: str, body: bytes) -> str | None:
    """Why a 2xx to start, stop or import is not MM's: ``null``, an empty body (untyped or JSON)
    or any JSON value is; a body that is not JSON, or not labelled JSON, is not."""
    if body == b"null" or not body.strip():
        if not content_type.strip() or is_json_type(content_type):
            return None
        if not body.strip():
            return f"an empty body with {_typed(content_type)}, not JSON"
    if not is_json_type(content_type):
        return f"{_typed(content_type)}, not JSON"
    if _json(body) is _NOT_JSON:
        return "a body that is not JSON"
    return None


def read_job_run(content_type: str, body: bytes) -> JobRun | str:
    """A 2xx to get job run: the run, or why the answer is not MM's job run."""
    if not is_json_type(content_type):
        return f"{_typed(content_type)}, not a JSON job run"
    try:
        return JobRun.model_validate_json(body)
    except ValidationError as exc:  # invalid JSON is a ValidationError too, of type json_invalid
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            return "a body that is not JSON"
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in errors[:3])
        return f"JSON that is not a job run ({exc.error_count()} schema errors: {fields})"


def error_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why a non-2xx answer is not MM's: a redirect never is; an error is a JSON object with a
    code or a message; a 429 is throttling whatever its body."""
    if 300 <= status < 400:
        return "a redirect (MachineMetrics never redirects)"
    if status == 429:
        return None
    if not is_json_type(content_type):
        return f"{_typed(content_type)}, not MachineMetrics' JSON error"
    data = _json(body)
    if data is _NOT_JSON:
        return "an error body that is not JSON"
    if not isinstance(data, dict) or not any(data.get(key) for key in _ERROR_KEYS):
        return "JSON without MachineMetrics' error code or message"
    return None


def snippet(body: bytes) -> str:
    """The start of a body, on one line, for a message (the caller's error scrubs it)."""
    text = " ".join(body.decode("utf-8", errors="replace").split())
    if not text:
        return "(empty body)"
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text[:SNIPPET_CHARS] + ("..." if len(text) > SNIPPET_CHARS else ""))
