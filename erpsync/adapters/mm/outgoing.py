"""What erpsync refuses to send to MachineMetrics: checks made before any call.

`MMClient` and `FakeMachineMetrics` both run them, so a bad request fails the same way (an
`MMRecordError` with code ``ClientValidation``, no ``http_status``) whichever door it meets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from erpsync.adapters.mm.errors import MMRecordError
from erpsync.adapters.mm.schemas import IMPORT_TYPES, JobFile, StartJobRun, StopJobRun


def request_body(request: StartJobRun | StopJobRun, operation: Literal["start", "stop"]) -> bytes:
    """Validate again (a model_construct'ed request skips validation); the JSON body's bytes."""
    try:
        checked = type(request).model_validate(request.model_dump())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise MMRecordError(
            f"MachineMetrics {operation}: request refused before sending: {problems}",
            operation=operation,
            code="ClientValidation",
        ) from None
    return checked.wire_json()


def check_run_id(run_id: str) -> None:
    if not run_id.strip():
        raise MMRecordError("run id must not be blank", operation="get", code="ClientValidation")


def check_import(job_file: JobFile) -> None:
    if job_file.import_type not in IMPORT_TYPES:
        raise MMRecordError(
            f"import type {job_file.import_type!r} is not one of {', '.join(IMPORT_TYPES)}",
            operation="import",
            code="ClientValidation",
        )
    if not job_file.content.strip():
        raise MMRecordError("job file is empty", operation="import", code="ClientValidation")
