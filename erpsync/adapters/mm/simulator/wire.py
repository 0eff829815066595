"""The simulated MachineMetrics' wire: replies, timestamps and strict checks of JSON bodies.

This module deliberately shares no code with the client's schemas: it validates the documented API
by hand, so a mistake in the client's models is caught here instead of being mirrored. Bodies are
validated strictly: required ids and ``jobName`` non-blank strings; names string or null;
``startInSetup`` boolean; integers are JSON integers (not ``600.0``, not ``true``), not negative;
timestamps ISO 8601 **with** a zone (``Z`` or an offset); unknown fields refused (``dueAt`` and
``partValue`` of the legacy API are accepted). All problems come back together as
``ValidationError``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE
)

# field -> kind, for the two JSON operations
START_FIELDS: Final = {
    "erpJobOperationRunId": "id",
    "erpMachineId": "id",
    "jobName": "id",
    "operationName": "name",
    "lotName": "name",
    "partName": "name",
    "startInSetup": "bool",
    "startAt": "timestamp",
    "jobOperationDescription": "text",
    "quantityRequired": "integer",
    "expectedSetupTime": "integer",
    "idealPartTime": "integer",
    "expectedPartTime": "integer",
    "dueAt": "timestamp",
    "partValue": "number",
}
STOP_FIELDS: Final = {"erpJobOperationRunId": "id", "endAt": "timestamp"}
# what must be equal for a repeated start to be "the same payload" (startAt/startInSetup apart)
IDENTITY_EXEMPT: Final = frozenset({"erpJobOperationRunId", "startAt", "startInSetup"})


@dataclass(frozen=True)
class Reply:
    """An answer: status, JSON body (None = ``null``) and extra headers."""

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()

    def content(self) -> bytes:
        """The body as the bytes MM sends."""
        return json.dumps(self.body).encode("utf-8")

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def fmt(value: datetime | None) -> str | None:
    """A timestamp as MM writes it: UTC, milliseconds, ``Z``."""
    if value is None:
        return None
    return f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def millis(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_timestamp(value: str) -> datetime | None:
    """An ISO 8601 date-time with a zone, as UTC at millisecond precision; None if it is not one."""
    match = TIMESTAMP.match(value)
    if not match:
        return None
    day, clock, zone = match.groups()
    if "." in clock:
        whole, fraction = clock.split(".")
        clock = f"{whole}.{fraction[:6]:0<6}"
    zone = "+00:00" if zone.upper() == "Z" else zone
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}{zone}")
    except ValueError:
        return None
    return millis(parsed.astimezone(UTC))


def problem(field_name: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"field": field_name, "code": code, "message": message, **extra}


def validation_error(errors: list[dict[str, Any]]) -> Reply:
    return Reply(400, {"code": "ValidationError", "message": "Validation Error", "errors": errors})


def _check_field(name: str, kind: str, value: Any) -> tuple[Any, dict[str, Any] | None]:
    """(normalised value, problem or None) for one field of a JSON body."""
    if kind == "id":
        if value is None or (isinstance(value, str) and not value.strip()):
            return None, problem(name, "Required", f"{name} is required")
        if not isinstance(value, str):
            return None, problem(name, "InvalidType", f"{name} must be a string")
        return value, None
    if value is None:
        return ("" if kind == "name" else False if kind == "bool" else None), None
    if kind in {"name", "text"}:
        return (
            (value, None)
            if isinstance(value, str)
            else (None, problem(name, "InvalidType", f"{name} must be a string or null"))
        )
    if kind == "bool":
        return (
            (value, None)
            if isinstance(value, bool)
            else (None, problem(name, "InvalidType", f"{name} must be a boolean"))
        )
    if kind == "timestamp":
        parsed = parse_timestamp(value) if isinstance(value, str) else None
        if parsed is None:
            return None, problem(
                name,
                "InvalidDate",
                f"{name} must be an ISO 8601 date-time with a zone, e.g. 2017-07-19T10:00:00Z",
            )
        return parsed, None
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, problem(name, "InvalidType", f"{name} must be an integer or null")
        if value < 0:
            return None, problem(name, "OutOfRange", f"{name} must not be negative")
        return value, None
    # number
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None, problem(name, "InvalidType", f"{name} must be a number of at least 0 or null")
    return value, None


def check_body(body: Any, spec: Mapping[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every field of ``spec`` normalised (defaults applied), and every problem found."""
    if not isinstance(body, dict):
        return {}, [problem("body", "InvalidType", "the request body must be a JSON object")]
    errors = [
        problem(key, "UnknownField", f"{key} is not a field of this operation")
        for key in body
        if key not in spec
    ]
    values: dict[str, Any] = {}
    for name, kind in spec.items():
        values[name], error = _check_field(name, kind, body.get(name))
        if error:
            errors.append(error)
    return values, errors
