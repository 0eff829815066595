"""The simulator's job-file parser: the MM 22-column template, spellings, and refusals with a row."""

from __future__ import annotations

import pytest

from erpsync.adapters.mm.simulator.jobfiles import (
    MM_COLUMNS,
    JobFileError,
    parse_mm_jobs,
    parse_raw_jobs,
)

FULL_HEADER = ",".join(MM_COLUMNS)


def test_full_template_with_one_job_on_two_workcenters() -> None:
    rows = [
        FULL_HEADER,
        "W1,P1,10,L1,Sprockets,2024-05-01,100,12.50,120000,100000,600,1,1,80,60,M1,110000,90000,300,1,1,O1001",
        "W1,P1,10,L1,,,,,,,,,,,,M2,130000,,,,,O1002",
    ]
    jobs = parse_mm_jobs("\r\n".join(rows).encode())
    job = jobs[("W1", "P1", "10", "L1")]
    assert job["description"] == "Sprockets"
    assert job["due_date"] == "2024-05-01"
    assert job["quantity"] == 100
    assert job["partvalue"] == "12.50"
    assert job["default_expectedcycletime"] == 120_000
    assert job["default_setuptime"] == 600
    assert set(job["workcenters"]) == {"M1", "M2"}
    assert job["workcenters"]["M1"]["expectedcycletime"] == 110_000
    assert job["workcenters"]["M2"]["programname"] == "O1002"


def test_headers_are_case_insensitive_and_parttime_spellings_are_accepted() -> None:
    data = b"\xef\xbb\xbfName, WorkCenter ,ExpectedPartTime,Default_IdealPartTime\nJ1,M1,5000,4000\nJ2,,,\n"
    jobs = parse_mm_jobs(data)
    assert jobs[("J1", "", "", "")]["workcenters"]["M1"]["expectedcycletime"] == 5000
    assert jobs[("J1", "", "", "")]["default_idealcycletime"] == 4000
    assert ("J2", "", "", "") in jobs


def test_blank_lines_are_skipped_and_quoted_commas_kept() -> None:
    jobs = parse_mm_jobs(b'name,description\n\n"J,1","a, b"\n\n')
    assert jobs[("J,1", "", "", "")]["description"] == "a, b"


@pytest.mark.parametrize(
    ("data", "row", "reason"),
    [
        (b"", None, "empty"),
        (b"part,operation\nP1,10\n", 1, "'name' is missing"),
        (b"name,colour\nJ1,red\n", 1, "unknown column 'colour'"),
        (b"name,expectedcycletime,ExpectedPartTime\nJ1,1,2\n", 1, "appears twice"),
        (b"name,part\nJ1,P1\nJ2\n", 3, "has 1 columns, the header has 2"),
        (b"name,part\n,P1\n", 2, "name is required"),
        (b"name,quantity\nJ1,ten\n", 2, "quantity 'ten' is not a whole number"),
        (b"name,expectedcycletime\nJ1,1.5\n", 2, "not a whole number"),
        (b"name,setuptime\nJ1,-60\n", 2, "not a whole number"),
        (b"name,partvalue\nJ1,abc\n", 2, "partvalue 'abc' is not a number"),
        (b"name,partvalue\nJ1,NaN\n", 2, "partvalue 'NaN' is not a number"),
        (b"name,due_date\nJ1,31/12/2024\n", 2, "due_date '31/12/2024' is not a date"),
        (b"name,workcenter\nJ1,M1\nJ1,M1\n", 3, "appears twice with workcenter 'M1'"),
        (b"name,workcenter,programname\nJ1,M1,O1\nJ2,M1,O1\n", 3, "program 'O1' already belongs to job 'J1'"),
        (b'name,part\n"J1,P1\n', 2, "not a well-formed CSV"),
        (b"name\n\xff\xfe\n", None, "not UTF-8"),
        (b"\nname\nJ1\n", 2, "header must be the first line"),
    ],
)
def test_malformed_files_are_refused_with_the_row_and_the_reason(
    data: bytes, row: int | None, reason: str
) -> None:
    with pytest.raises(JobFileError) as caught:
        parse_mm_jobs(data)
    assert caught.value.row == row
    assert reason in str(caught.value)


def test_us_dates_are_accepted() -> None:
    jobs = parse_mm_jobs(b"name,due_date\nJ1,12/31/2024\nJ2,2024-12-31T08:00:00Z\n")
    assert jobs[("J1", "", "", "")]["due_date"] == "2024-12-31"
    assert jobs[("J2", "", "", "")]["due_date"] == "2024-12-31T08:00:00+00:00"


def test_raw_files_are_keyed_by_their_first_columns() -> None:
    data = b"WORKORDER_BASE_ID,SEQUENCE_NO,RESOURCE_ID\n21431871,10,M1\n21431871,20,M2\n"
    jobs = parse_raw_jobs(data, key_columns=2)
    assert set(jobs) == {("21431871", "10"), ("21431871", "20")}
    assert jobs[("21431871", "20")]["RESOURCE_ID"] == "M2"
    with pytest.raises(JobFileError, match="first column"):
        parse_raw_jobs(b"A,B\n,1\n", key_columns=2)
    with pytest.raises(JobFileError, match="columns"):
        parse_raw_jobs(b"A,B\n1,2,3\n", key_columns=2)
