"""MM request/response models: wire names, units, timestamps, refusal of bad values before sending."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from erpsync.adapters.mm.schemas import JobRun, JobRunMetrics, StartJobRun, StopJobRun, format_timestamp


def start(**overrides: object) -> StartJobRun:
    values: dict[str, object] = {"erp_job_operation_run_id": "R1", "erp_machine_id": "M1", "job_name": "J1"}
    return StartJobRun(**{**values, **overrides})  # type: ignore[arg-type]


def test_start_serialises_camel_case_and_leaves_unset_optionals_out() -> None:
    body = start(
        start_at=datetime(2017, 10, 10, 10, 11, tzinfo=UTC),
        job_operation_description="Sprockets",
        quantity_required=1000,
        expected_setup_time=600,
        expected_part_time=120_000,
        ideal_part_time=100_000,
        part_name="Sprocket001",
    ).wire()
    assert body == {
        "erpJobOperationRunId": "R1",
        "erpMachineId": "M1",
        "jobName": "J1",
        "operationName": "",
        "lotName": "",
        "partName": "Sprocket001",
        "startInSetup": False,
        "startAt": "2017-10-10T10:11:00.000Z",
        "jobOperationDescription": "Sprockets",
        "quantityRequired": 1000,
        "expectedSetupTime": 600,
        "idealPartTime": 100_000,
        "expectedPartTime": 120_000,
    }
    assert "startAt" not in start().wire()  # MM uses the time it receives the request


@given(
    run_id=st.text(min_size=1).filter(str.strip),
    description=st.none() | st.text(),
    quantity=st.none() | st.integers(min_value=0, max_value=2**53),
    start_at=st.none() | st.datetimes(timezones=st.timezones(), min_value=datetime(1971, 1, 2)),
)
def test_wire_json_is_exactly_the_json_of_wire(
    run_id: str, description: str | None, quantity: int | None, start_at: datetime | None
) -> None:
    """The client sends wire_json(); it must be the bytes httpx made of wire() (compact, UTF-8)."""
    request = start(
        erp_job_operation_run_id=run_id,
        job_operation_description=description,
        quantity_required=quantity,
        start_at=start_at,
    )
    expected = json.dumps(request.wire(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert request.wire_json() == expected.encode("utf-8")
    stop = StopJobRun(erp_job_operation_run_id=run_id, end_at=start_at)
    assert stop.wire_json() == json.dumps(stop.wire(), ensure_ascii=False, separators=(",", ":")).encode()


def test_models_accept_wire_names_and_attribute_names() -> None:
    by_alias = StartJobRun.model_validate(
        {"erpJobOperationRunId": "R1", "erpMachineId": "M1", "jobName": "J"}
    )
    assert by_alias.erp_job_operation_run_id == "R1"
    assert StopJobRun(erp_job_operation_run_id="R1").wire() == {"erpJobOperationRunId": "R1"}


def test_timestamps_become_utc_milliseconds_with_z() -> None:
    chicago = datetime(2024, 3, 10, 1, 30, 15, 987654, tzinfo=ZoneInfo("America/Chicago"))
    request = start(start_at=chicago)
    assert request.start_at == datetime(2024, 3, 10, 7, 30, 15, 987000, tzinfo=UTC)
    assert request.wire()["startAt"] == "2024-03-10T07:30:15.987Z"
    plus_two = datetime(2024, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert (
        StopJobRun(erp_job_operation_run_id="R", end_at=plus_two).wire()["endAt"]
        == "2024-01-01T00:00:00.000Z"
    )


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValidationError, match="naive datetime"):
        start(start_at=datetime(2024, 1, 1, 8, 0))
    with pytest.raises(ValidationError, match="naive datetime"):
        StopJobRun(erp_job_operation_run_id="R", end_at=datetime(2024, 1, 1, 8, 0))
    with pytest.raises(ValidationError, match="naive datetime"):
        StartJobRun.model_validate(
            {
                "erpJobOperationRunId": "R",
                "erpMachineId": "M",
                "jobName": "J",
                "startAt": "2024-01-01T08:00:00",
            }
        )


@pytest.mark.parametrize(
    "field", ["quantity_required", "expected_setup_time", "ideal_part_time", "expected_part_time"]
)
@pytest.mark.parametrize("bad", [-1, 1.5, 600.0, float("nan"), float("inf"), True, "600"])
def test_integer_fields_take_only_non_negative_integers(field: str, bad: object) -> None:
    with pytest.raises(ValidationError):
        start(**{field: bad})


def test_zero_durations_are_allowed() -> None:
    assert start(expected_setup_time=0, ideal_part_time=0).wire()["expectedSetupTime"] == 0


@pytest.mark.parametrize("field", ["erp_job_operation_run_id", "erp_machine_id", "job_name"])
@pytest.mark.parametrize("bad", ["", "   ", None, 7])
def test_required_identifiers_must_be_non_blank_strings(field: str, bad: object) -> None:
    with pytest.raises(ValidationError):
        start(**{field: bad})


def test_unknown_fields_and_bad_assignments_are_refused() -> None:
    with pytest.raises(ValidationError):
        StartJobRun.model_validate(
            {"erpJobOperationRunId": "R", "erpMachineId": "M", "jobName": "J", "jobname": "typo"}
        )
    request = start()
    with pytest.raises(ValidationError):
        request.expected_part_time = -5


def test_job_run_parses_the_documented_sample() -> None:
    run = JobRun.model_validate(
        {
            "startAt": "2017-03-09T18:20:18.000Z",
            "endAt": None,
            "metrics": {"totalParts": 2069, "goodParts": 2069, "scrapParts": 0, "nonconformParts": 0},
            "somethingNew": 1,
        }
    )
    assert run.start_at == datetime(2017, 3, 9, 18, 20, 18, tzinfo=UTC)
    assert run.end_at is None
    assert run.metrics == JobRunMetrics(total_parts=2069, good_parts=2069, scrap_parts=0, nonconform_parts=0)


def test_job_run_reads_a_zoneless_timestamp_as_utc_and_tolerates_missing_parts() -> None:
    run = JobRun.model_validate({"startAt": "2017-03-09T18:20:18"})
    assert run.start_at == datetime(2017, 3, 9, 18, 20, 18, tzinfo=UTC)
    assert run.end_at is None
    assert run.metrics is None


@pytest.mark.parametrize(
    ("wire", "parsed"),
    [("12", 12), ("12.0", 12.0), ("1e30", 1e30), ("1" + "0" * 30, 10**30), ("-5", -5), ("12.5", 12.5)],
)
def test_job_run_metrics_take_any_json_number_for_the_domain_to_judge(wire: str, parsed: float) -> None:
    """A count MM sends as a number is parsed as sent (domain/plausible_counts.py judges it), so an
    implausible count is quarantined with its value rather than failing the answer's shape."""
    body = f'{{"metrics": {{"totalParts": {wire}, "goodParts": 0, "scrapParts": 0, "nonconformParts": 0}}}}'
    metrics = JobRun.model_validate_json(body).metrics
    assert metrics is not None and metrics.total_parts == parsed
    assert type(metrics.total_parts) is type(parsed)


@pytest.mark.parametrize("wire", ['"12"', "true", "null", "[]"])
def test_job_run_metrics_refuse_a_count_that_is_not_a_number(wire: str) -> None:
    """A string, boolean or null count is not MM's answer shape: a schema error, as is a missing one."""
    body = f'{{"metrics": {{"totalParts": {wire}, "goodParts": 0, "scrapParts": 0, "nonconformParts": 0}}}}'
    with pytest.raises(ValidationError):
        JobRun.model_validate_json(body)
    with pytest.raises(ValidationError):
        JobRun.model_validate_json('{"metrics": {"totalParts": 1, "goodParts": 1, "scrapParts": 0}}')


@given(st.datetimes(timezones=st.timezones(), min_value=datetime(1971, 1, 2), max_value=datetime(9998, 1, 1)))
def test_a_sent_timestamp_reads_back_as_the_same_instant(value: datetime) -> None:
    sent = start(start_at=value)
    wire = sent.wire()["startAt"]
    assert isinstance(wire, str)
    assert wire.endswith("Z")
    assert len(wire) == len("2017-10-10T10:11:00.000Z")
    assert JobRun.model_validate({"startAt": wire}).start_at == sent.start_at
    assert abs(sent.start_at - value) < timedelta(milliseconds=1)  # type: ignore[operator]
    assert format_timestamp(sent.start_at) == wire  # type: ignore[arg-type]
