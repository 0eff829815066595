"""MachineMetrics errors, and the one table that decides what an HTTP status means for erpsync.

Every failed MM call ends as exactly one of these, each also an erpsync error category
(``erpsync.domain.errors``) so callers that do not care about MM can catch the category:

- ``MMConfigError`` (a ``ConfigError``): the key or the configuration is wrong. Stop calling MM and
  tell a human; retrying cannot help.
- ``MMRecordError`` (a ``RecordError``), with ``MMNotFoundError`` and ``MMConflictError``: MM refused
  this one record. Quarantine it and carry on with the rest.
- ``MMRetryableError`` (a ``RetryableError``), with ``MMCircuitOpenError`` and
  ``MMUnexpectedAnswerError``: a passing fault that the client already retried until its attempts
  or deadline ran out. Try again in a later cycle.

An answer that is not MachineMetrics' own (HTML, a wrong content type, a redirect: see
answer_shape.py) is ``MMUnexpectedAnswerError`` whatever its status: never a success, a "not
found", a conflict or a refused record, since MM never said so.

Messages are written for the person who must act and never contain the API key: every text taken
from a response passes through the logging scrubber first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from erpsync.adapters.mm.answer_shape import snippet
from erpsync.domain.errors import ConfigError, RecordError, RetryableError
from erpsync.observability.scrub import scrub

MAX_DETAIL_CHARS = 300


class Resolution(StrEnum):
    """What the caller does with a failed call."""

    CONFIG = "config"  # stop calling MM, alert: never retried
    RECORD = "record"  # this record is bad: quarantine it
    NOT_FOUND = "not_found"  # a record error: MM does not have it
    CONFLICT = "conflict"  # a record error: MM has it, with other values
    RETRY = "retry"  # transient: back off (honouring Retry-After) within the deadline


# The status -> resolution table. Statuses not listed fall back by class (see `resolve`):
# other 4xx -> RECORD, other 5xx -> RETRY, anything else that is not 2xx -> CONFIG.
STATUS_RESOLUTION: dict[int, Resolution] = {
    400: Resolution.RECORD,
    401: Resolution.CONFIG,
    403: Resolution.CONFIG,
    404: Resolution.NOT_FOUND,
    405: Resolution.CONFIG,  # the path table points at something that is not this operation
    408: Resolution.RETRY,
    409: Resolution.CONFLICT,
    413: Resolution.RECORD,
    422: Resolution.RECORD,
    429: Resolution.RETRY,
    500: Resolution.RETRY,
    502: Resolution.RETRY,
    503: Resolution.RETRY,
    504: Resolution.RETRY,
}


def resolve(status: int) -> Resolution:
    """The resolution for a non-2xx status: the table first, then the status class."""
    if status in STATUS_RESOLUTION:
        return STATUS_RESOLUTION[status]
    if 400 <= status < 500:
        return Resolution.RECORD
    if 500 <= status < 600:
        return Resolution.RETRY
    # 1xx/3xx: a redirect to a login page or a plain-http base URL: the base URL is wrong
    return Resolution.CONFIG


class MMError(Exception):
    """Base of every MachineMetrics error; also mixed into the matching erpsync category.

    ``http_status`` is None when no response arrived (network fault, client-side validation,
    open circuit); ``code`` is MM's error code (``ValidationError``, ``Conflict``, ``invalid_token``)
    or erpsync's own (``ClientValidation``, ``Network``, ``Timeout``, ``Deadline``,
    ``UnexpectedAnswer``, ``CircuitOpen``); ``field_errors`` are MM's
    per-field ``errors[]`` items; ``retry_after`` is the server's (or breaker's) wait in seconds;
    ``cause`` is the failure without its subject, as the circuit breaker's message repeats it.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        http_status: int | None = None,
        code: str | None = None,
        run_id: str | None = None,
        field_errors: Sequence[Mapping[str, Any]] = (),
        retry_after: float | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(scrub(message))
        self.cause = scrub(cause) if cause is not None else None
        self.operation = operation
        self.http_status = http_status
        self.code = code
        self.run_id = run_id
        self.field_errors: tuple[Mapping[str, Any], ...] = tuple(field_errors)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(operation={self.operation!r}, http_status={self.http_status!r}, "
            f"code={self.code!r}, run_id={self.run_id!r}, message={str(self)!r})"
        )


class MMConfigError(MMError, ConfigError):
    """MM refused the credentials (401/403) or answers in a way that means the setup is wrong."""


class MMRecordError(MMError, RecordError):
    """MM refused this record (400/422), or erpsync refused to send it (client-side validation)."""


class MMNotFoundError(MMRecordError):
    """MM does not know the run (404)."""


class MMConflictError(MMRecordError):
    """MM already has this run id with different values (409)."""


class MMRetryableError(MMError, RetryableError):
    """A transient failure (408/429/5xx/network) that outlasted the client's retries."""


class MMCircuitOpenError(MMRetryableError):
    """Calls are paused after repeated failures; ``retry_after`` says when a probe is allowed."""


class MMUnexpectedAnswerError(MMRetryableError):
    """An answer that is not MachineMetrics' (answer_shape.py): retried, never settled on its face."""


ERROR_CLASS: dict[Resolution, type[MMError]] = {
    Resolution.CONFIG: MMConfigError,
    Resolution.RECORD: MMRecordError,
    Resolution.NOT_FOUND: MMNotFoundError,
    Resolution.CONFLICT: MMConflictError,
    Resolution.RETRY: MMRetryableError,
}

_ADVICE: dict[Resolution, str] = {
    Resolution.CONFIG: (
        "check mm.api_key (a key with the erp scope, ERP enabled for the company), mm.base_url "
        "(commercial, GovCloud and demo hosts differ) and mm.paths"
    ),
    Resolution.RECORD: "MachineMetrics will not take this record as it is; fix it in the ERP or the mapping",
    Resolution.NOT_FOUND: "MachineMetrics does not have it",
    Resolution.CONFLICT: "MachineMetrics already has this run id with other values",
    Resolution.RETRY: "MachineMetrics is unavailable or throttling; it will be retried later",
}


def describe_body(body: bytes, content_type: str) -> tuple[str | None, str, list[Mapping[str, Any]]]:
    """MM's error code, a short readable detail and the per-field errors from a response body.

    Understands the documented shapes: ``{code, message, errors[]}``, ``{message}`` and the OAuth
    ``{error, error_description}``; anything else becomes a short snippet of the text.
    """
    text = body.decode("utf-8", errors="replace").strip()
    data: Any = None
    if "json" in content_type.lower() or text.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
    if not isinstance(data, dict):
        return None, text[:MAX_DETAIL_CHARS], []
    code = data.get("code") or data.get("error")
    message = data.get("message") or data.get("error_description") or ""
    raw_errors = data.get("errors")
    field_errors: list[Mapping[str, Any]] = (
        [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
    )
    parts = [str(message)] if message else []
    parts += [
        f"{e.get('field', '?')}: {e.get('code', '?')}" + (f" ({e['message']})" if e.get("message") else "")
        for e in field_errors
    ]
    return (str(code) if code else None), "; ".join(parts)[:MAX_DETAIL_CHARS], field_errors


def error_from_response(
    *,
    operation: str,
    status: int,
    body: bytes,
    content_type: str,
    run_id: str | None,
    retry_after: float | None = None,
) -> MMError:
    """Build the error for a non-2xx response, as the table says."""
    resolution = resolve(status)
    code, detail, field_errors = describe_body(body, content_type)
    subject = f" for run {run_id!r}" if run_id else ""
    head = f"MachineMetrics {operation}{subject}: HTTP {status}" + (f" {code}" if code else "")
    message = f"{head}: {detail}; {_ADVICE[resolution]}" if detail else f"{head}; {_ADVICE[resolution]}"
    return ERROR_CLASS[resolution](
        message,
        operation=operation,
        http_status=status,
        code=code,
        run_id=run_id,
        field_errors=field_errors,
        retry_after=retry_after,
    )


def unexpected_answer(
    *,
    operation: str,
    status: int,
    content_type: str,
    body: bytes,
    url: str,
    why: str,
    run_id: str | None,
    location: str | None = None,
    retry_after: float | None = None,
) -> MMUnexpectedAnswerError:
    """The error for an answer that is not MM's: what came back, from where, and the likely cause."""
    subject = f" for run {run_id!r}" if run_id else ""
    typed = content_type.strip()[:60] or "no Content-Type"
    sent = f"redirected to {location[:200]}" if location else snippet(body)
    likely = (
        "a proxy or gateway in front of MachineMetrics, or mm.base_url / mm.paths"
        if status >= 500
        else "mm.base_url or mm.paths (or a proxy in front of MachineMetrics)"
    )
    return MMUnexpectedAnswerError(
        f"MachineMetrics {operation}{subject}: unexpected answer from {url}: HTTP {status}, {typed}, {sent}: "
        f"{why}. Not MachineMetrics' own answer; likely cause: {likely}; retried later",
        cause=f"unexpected answer (HTTP {status}, {typed}: {why}) from {url}",
        operation=operation,
        http_status=status,
        code="UnexpectedAnswer",
        run_id=run_id,
        retry_after=retry_after,
    )
