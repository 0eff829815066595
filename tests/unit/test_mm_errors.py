"""The status -> resolution table, the error classes, and what an error message may say."""

from __future__ import annotations

import json

import pytest

from erpsync.adapters.mm.errors import (
    ERROR_CLASS,
    STATUS_RESOLUTION,
    MMCircuitOpenError,
    MMConfigError,
    MMConflictError,
    MMError,
    MMNotFoundError,
    MMRecordError,
    MMRetryableError,
    Resolution,
    error_from_response,
    resolve,
)
from erpsync.domain.errors import ConfigError, RecordError, RetryableError
from erpsync.observability.scrub import register_secret


@pytest.mark.parametrize(
    ("status", "resolution", "error_class"),
    [
        (400, Resolution.RECORD, MMRecordError),
        (401, Resolution.CONFIG, MMConfigError),
        (403, Resolution.CONFIG, MMConfigError),
        (404, Resolution.NOT_FOUND, MMNotFoundError),
        (405, Resolution.CONFIG, MMConfigError),
        (408, Resolution.RETRY, MMRetryableError),
        (409, Resolution.CONFLICT, MMConflictError),
        (410, Resolution.RECORD, MMRecordError),  # other 4xx
        (413, Resolution.RECORD, MMRecordError),
        (422, Resolution.RECORD, MMRecordError),
        (429, Resolution.RETRY, MMRetryableError),
        (500, Resolution.RETRY, MMRetryableError),
        (502, Resolution.RETRY, MMRetryableError),
        (503, Resolution.RETRY, MMRetryableError),
        (504, Resolution.RETRY, MMRetryableError),
        (599, Resolution.RETRY, MMRetryableError),  # other 5xx
        (301, Resolution.CONFIG, MMConfigError),  # a redirect: wrong base URL
        (302, Resolution.CONFIG, MMConfigError),
    ],
)
def test_each_status_resolves_as_the_issue_says(
    status: int, resolution: Resolution, error_class: type[MMError]
) -> None:
    assert resolve(status) is resolution
    assert ERROR_CLASS[resolution] is error_class
    error = error_from_response(operation="start", status=status, body=b"", content_type="", run_id="R1")
    assert type(error) is error_class
    assert error.http_status == status
    assert error.operation == "start"


def test_the_table_is_one_dict_of_statuses() -> None:
    assert all(isinstance(k, int) and isinstance(v, Resolution) for k, v in STATUS_RESOLUTION.items())
    assert {s for s, r in STATUS_RESOLUTION.items() if r is Resolution.CONFIG} >= {401, 403}


def test_error_classes_are_erpsync_categories() -> None:
    assert issubclass(MMConfigError, ConfigError)
    assert issubclass(MMRecordError, RecordError)
    assert issubclass(MMNotFoundError, MMRecordError)
    assert issubclass(MMConflictError, MMRecordError)
    assert issubclass(MMRetryableError, RetryableError)
    assert issubclass(MMCircuitOpenError, MMRetryableError)
    for cls in (MMConfigError, MMRecordError, MMRetryableError):
        assert issubclass(cls, MMError)


def test_validation_error_body_becomes_code_fields_and_a_readable_message() -> None:
    body = {
        "code": "ValidationError",
        "message": "Validation Error",
        "errors": [{"field": "erpMachineId", "code": "MachineNotFound", "message": "No machine 'M9'"}],
    }
    error = error_from_response(
        operation="start",
        status=400,
        body=json.dumps(body).encode(),
        content_type="application/json",
        run_id="R1",
    )
    assert isinstance(error, MMRecordError)
    assert error.code == "ValidationError"
    assert error.field_errors == (
        {"field": "erpMachineId", "code": "MachineNotFound", "message": "No machine 'M9'"},
    )
    assert "erpMachineId: MachineNotFound" in str(error)
    assert "'R1'" in str(error)


def test_oauth_error_body_and_plain_text_bodies() -> None:
    error = error_from_response(
        operation="get",
        status=401,
        body=b'{"error":"invalid_token","error_description":"Invalid token: access token is invalid"}',
        content_type="application/json",
        run_id=None,
    )
    assert error.code == "invalid_token"
    assert "access token is invalid" in str(error)
    assert "mm.api_key" in str(error)
    html = error_from_response(
        operation="start", status=502, body=b"<html>" + b"x" * 5000, content_type="text/html", run_id=None
    )
    assert html.code is None
    assert len(str(html)) < 600


def test_retry_after_is_carried() -> None:
    error = error_from_response(
        operation="start",
        status=429,
        body=b"{}",
        content_type="application/json",
        run_id=None,
        retry_after=2.5,
    )
    assert error.retry_after == 2.5


def test_messages_and_reprs_never_show_a_registered_secret() -> None:
    secret = "mm-secret-key-0123456789"
    register_secret(secret)
    error = error_from_response(
        operation="start",
        status=401,
        body=json.dumps({"error": "invalid_token", "error_description": f"bad token {secret}"}).encode(),
        content_type="application/json",
        run_id=None,
    )
    assert secret not in str(error)
    assert secret not in repr(error)
    direct = MMRetryableError(f"boom {secret}", operation="stop")
    assert secret not in str(direct)
    assert secret not in repr(direct)
