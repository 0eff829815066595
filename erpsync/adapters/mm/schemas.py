"""Typed request and response bodies of the MachineMetrics job-run and import operations.

Attributes are snake_case; the wire names are MM's camelCase (``erpJobOperationRunId``...), used
when serialising and accepted when parsing. Requests are validated when built (and on every
assignment), so a bad value fails in erpsync, with a field name, before anything is sent:

- ids and the job name are non-blank strings;
- times are plain integers (``expected_setup_time`` in **seconds**, the part times in
  **milliseconds**, as the API documents), never negative, never a float or NaN;
- timestamps must be timezone-aware; they are converted to UTC, cut to milliseconds (what MM stores
  and returns, so a value read back compares equal) and sent as ``2017-10-10T10:11:00.000Z``.
  A naive datetime is refused: converting ERP local time is the mapper's explicit job.

Responses are parsed leniently where MM is vague (unknown keys ignored, a timestamp without an
offset read as UTC, since "MachineMetrics uses UTC").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, Strict
from pydantic.alias_generators import to_camel

ImportType = Literal["mm", "inforVisual", "inforLN"]
IMPORT_TYPES: Final[tuple[ImportType, ...]] = ("mm", "inforVisual", "inforLN")


@dataclass(frozen=True, slots=True)
class JobFile:
    """A job file to import: what the port, `MMClient` and the fake take as one value.

    ``auto_archive`` makes MM archive the jobs the file does not name; ``filename`` is the name
    the multipart upload gives it (MM does not keep it).
    """

    content: bytes
    import_type: ImportType = "mm"
    auto_archive: bool = False
    filename: str = "jobs.csv"


def format_timestamp(value: datetime) -> str:
    """An aware datetime as MM's wire format: UTC, milliseconds, ``Z``."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def _utc_millis(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "naive datetime: give a timezone-aware datetime; convert ERP local time to UTC explicitly"
        )
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _assume_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


UtcTimestamp = Annotated[
    datetime,
    AfterValidator(_utc_millis),
    PlainSerializer(format_timestamp, return_type=str, when_used="json-unless-none"),
]
ResponseTimestamp = Annotated[
    datetime,
    AfterValidator(_assume_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json-unless-none"),
]
Identifier = Annotated[str, AfterValidator(_not_blank)]
Count = Annotated[int, Field(strict=True, ge=0)]
Seconds = Annotated[int, Field(strict=True, ge=0)]
Milliseconds = Annotated[int, Field(strict=True, ge=0)]
# A count as MM reports it: any JSON number (12, 12.0, 1e30, -5, 12.5), never a string, a boolean
# or null. Whether it can be written is the domain's judgement (domain/plausible_counts.py), so an
# implausible count is quarantined with its value instead of failing the whole answer's shape.
ReportedCount = Annotated[int, Strict()] | Annotated[float, Strict()]


class _Request(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        validate_assignment=True,
    )

    def wire(self) -> dict[str, object]:
        """The JSON body: camelCase keys; unset optional values left out (MM applies its defaults)."""
        return self.model_dump(mode="json", exclude_none=True)

    def wire_json(self) -> bytes:
        """`wire()` as the UTF-8 JSON bytes sent, serialised by pydantic-core in one pass."""
        return self.model_dump_json(exclude_none=True).encode()


class StartJobRun(_Request):
    """Start (or, same id and ``start_in_setup`` true -> false, switch to production) a job run."""

    erp_job_operation_run_id: Identifier
    erp_machine_id: Identifier
    job_name: Identifier
    operation_name: str = ""
    lot_name: str = ""
    part_name: str = ""
    start_in_setup: bool = False
    start_at: UtcTimestamp | None = None
    job_operation_description: str | None = None
    quantity_required: Count | None = None
    expected_setup_time: Seconds | None = None
    ideal_part_time: Milliseconds | None = None
    expected_part_time: Milliseconds | None = None


class StopJobRun(_Request):
    """Stop a job run; without ``end_at`` MM uses the time it receives the request."""

    erp_job_operation_run_id: Identifier
    end_at: UtcTimestamp | None = None


class _Response(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, extra="ignore"
    )


class JobRunMetrics(_Response):
    """Part counts of a job run (production only; parts made in setup are not in them), as MM
    sent them: numbers, not yet judged (`ReportedCount`)."""

    total_parts: ReportedCount
    good_parts: ReportedCount
    scrap_parts: ReportedCount
    nonconform_parts: ReportedCount


class JobRun(_Response):
    """What MM reports for a job run; ``end_at`` is None while it runs."""

    start_at: ResponseTimestamp | None = None
    end_at: ResponseTimestamp | None = None
    metrics: JobRunMetrics | None = None
