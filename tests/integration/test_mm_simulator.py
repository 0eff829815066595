"""The MM simulator over real loopback HTTP, spoken to with plain httpx: exact statuses and bodies.

The client has its own tests (test_mm_client.py); these pin what the simulator answers, so the
client is tested against a server that is as strict as the documented API.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from erpsync.adapters.mm.simulator import Fault, MMSimulator, SimPaths
from erpsync.cli.simulator import read_machines

START = "/erp/jobdispatch/start"
STOP = "/erp/jobdispatch/stop"


@pytest.fixture
def sim() -> Iterator[MMSimulator]:
    with MMSimulator(machines={"M1", "M2"}, seed=7) as simulator:
        yield simulator


@pytest.fixture
def http(sim: MMSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as client:
        yield client


def start_body(run_id: str = "R1", machine: str = "M1", **extra: Any) -> dict[str, Any]:
    return {"erpJobOperationRunId": run_id, "erpMachineId": machine, "jobName": "J1", **extra}


def validation_fields(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert response.status_code == 400
    assert body["code"] == "ValidationError"
    assert body["message"] == "Validation Error"
    assert all(set(e) >= {"field", "code", "message"} for e in body["errors"])
    return {e["field"]: e["code"] for e in body["errors"]}


# ---- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic c2ltLWtleQ==", "Bearer", "sim-key"])
def test_bad_or_missing_key_is_401_invalid_token(sim: MMSimulator, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.post(sim.base_url + START, json=start_body(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.json()["error_description"]
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert sim.runs() == {}


def test_key_without_erp_scope_is_403() -> None:
    with MMSimulator(extra_keys={"reports-only": {"reporting"}, "manager-key": {"manager"}}) as sim:
        response = httpx.post(
            sim.base_url + START, json=start_body(), headers={"Authorization": "Bearer reports-only"}
        )
        assert response.status_code == 403
        assert response.json()["error"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
        # import also accepts the manager scope
        files = {"csvFile": ("jobs.csv", b"name\nJ1\n", "text/csv")}
        response = httpx.post(
            sim.base_url + "/erp/jobs/import", files=files, headers={"Authorization": "Bearer manager-key"}
        )
        assert response.status_code == 200


# ---- parsing and validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"erpJobOperationRunId": NaN}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (json.dumps(start_body()).encode(), "text/plain"),
        (b"", "application/json"),
    ],
)
def test_bad_json_or_content_type_is_problem_parsing_json(
    http: httpx.Client, content: bytes, content_type: str
) -> None:
    response = http.post(START, content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.json() == {"message": "Problem parsing JSON"}


def test_start_validation_reports_every_problem_at_once(http: httpx.Client) -> None:
    response = http.post(
        START,
        json={
            "erpMachineId": 2,
            "jobName": "  ",
            "startInSetup": "yes",
            "startAt": "2017-07-19T10:00:00",
            "quantityRequired": 10.0,
            "expectedSetupTime": -1,
            "idealPartTime": True,
            "partNmae": "typo",
        },
    )
    assert validation_fields(response) == {
        "erpJobOperationRunId": "Required",
        "erpMachineId": "InvalidType",
        "jobName": "Required",
        "startInSetup": "InvalidType",
        "startAt": "InvalidDate",
        "quantityRequired": "InvalidType",
        "expectedSetupTime": "OutOfRange",
        "idealPartTime": "InvalidType",
        "partNmae": "UnknownField",
    }


def test_body_must_be_an_object(http: httpx.Client) -> None:
    assert validation_fields(http.post(START, json=["R1"])) == {"body": "InvalidType"}


def test_unknown_machine_is_a_validation_error(http: httpx.Client, sim: MMSimulator) -> None:
    assert validation_fields(http.post(START, json=start_body(machine="M9"))) == {
        "erpMachineId": "MachineNotFound"
    }
    assert sim.runs() == {}


def test_any_machine_is_accepted_without_a_machine_set(mm_simulator: MMSimulator) -> None:
    response = httpx.post(
        mm_simulator.base_url + START,
        json=start_body(machine="anything"),
        headers={"Authorization": f"Bearer {mm_simulator.api_key}"},
    )
    assert response.status_code == 200


def test_legacy_fields_and_nulls_are_accepted(http: httpx.Client, sim: MMSimulator) -> None:
    body = start_body(
        operationName=None, lotName=None, partName=None, dueAt="2024-01-01T00:00:00+02:00", partValue=1.5
    )
    response = http.post(START, json=body)
    assert response.status_code == 200
    assert sim.runs()["R1"]["operation_name"] == ""


# ---- job runs --------------------------------------------------------------------------------


def test_start_get_stop_round_trip(http: httpx.Client) -> None:
    response = http.post(START, json=start_body(startAt="2024-01-01T08:00:00Z"))
    assert response.status_code == 200
    assert response.content == b"null"
    assert response.headers["content-type"].startswith("application/json")
    got = http.get("/erp/jobdispatch/R1").json()
    assert got == {
        "startAt": "2024-01-01T08:00:00.000Z",
        "endAt": None,
        "metrics": {"totalParts": 0, "goodParts": 0, "scrapParts": 0, "nonconformParts": 0},
    }
    assert http.get("/erp/jobrun", params={"erpRunId": "R1"}).json() == got  # current-docs form
    response = http.post(STOP, json={"erpJobOperationRunId": "R1", "endAt": "2024-01-01T09:30:00.5+01:00"})
    assert response.status_code == 200
    assert response.content == b"null"
    assert http.get("/erp/jobdispatch/R1").json()["endAt"] == "2024-01-01T08:30:00.500Z"


def test_missing_start_and_end_times_default_to_server_time(http: httpx.Client) -> None:
    before = time.time()
    http.post(START, json=start_body())
    http.post(STOP, json={"erpJobOperationRunId": "R1"})
    got = http.get("/erp/jobdispatch/R1").json()
    for key in ("startAt", "endAt"):
        assert got[key].endswith("Z")
        stamp = time.mktime(time.strptime(got[key][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert before - 2 <= stamp <= time.time() + 2


def test_repeated_start_with_same_payload_is_200_and_changes_nothing(
    http: httpx.Client, sim: MMSimulator
) -> None:
    body = start_body(startAt="2024-01-01T08:00:00Z", expectedPartTime=1000)
    assert http.post(START, json=body).status_code == 200
    before = sim.runs()["R1"]
    assert http.post(START, json=body).status_code == 200
    same_instant = {**body, "startAt": "2024-01-01T09:00:00.000+01:00"}
    assert http.post(START, json=same_instant).status_code == 200
    without_start = {k: v for k, v in body.items() if k != "startAt"}
    assert http.post(START, json=without_start).status_code == 200  # startAt left out matches
    assert sim.runs()["R1"]["start_at"] == before["start_at"]
    assert len(sim.runs()) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"jobName": "J2"},
        {"erpMachineId": "M2"},
        {"startAt": "2024-01-01T08:00:01Z"},
        {"expectedPartTime": 2000},
        {"quantityRequired": 5},
        {"startInSetup": True},
    ],
)
def test_repeated_start_with_other_values_is_409(http: httpx.Client, change: dict[str, Any]) -> None:
    body = start_body(startAt="2024-01-01T08:00:00Z", expectedPartTime=1000)
    assert http.post(START, json=body).status_code == 200
    response = http.post(START, json={**body, **change})
    assert response.status_code == 409
    conflict = response.json()
    assert conflict["code"] == "Conflict"
    assert conflict["message"]
    assert [e["field"] for e in conflict["errors"]] == list(change)


def test_setup_then_production_switch_keeps_setup_counts_apart(http: httpx.Client, sim: MMSimulator) -> None:
    body = start_body(startInSetup=True, startAt="2024-01-01T08:00:00Z")
    assert http.post(START, json=body).status_code == 200
    assert http.post(START, json=body).status_code == 200  # repeat: still setup
    assert sim.runs()["R1"]["phase"] == "setup"
    sim.set_counts("R1", total=0)  # production counts are explicit from here on
    switch = {**body, "startInSetup": False}
    assert http.post(START, json=switch).status_code == 200
    run = sim.runs()["R1"]
    assert run["phase"] == "production"
    assert run["start_at"] == "2024-01-01T08:00:00.000Z"
    assert run["production_at"] is not None
    assert http.post(START, json=switch).status_code == 200  # repeating the switch is a no-op
    assert http.post(START, json=body).status_code == 409  # no way back to setup
    assert http.get("/erp/jobdispatch/R1").json()["metrics"]["totalParts"] == 0


def test_setup_parts_are_counted_apart() -> None:  # exact split: tests/unit/test_mm_sim_state.py
    with MMSimulator(time_scale=1000, scrap_share=0, nonconform_share=0) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        body = start_body(startInSetup=True, expectedPartTime=1000)
        httpx.post(sim.base_url + START, json=body, headers=headers)
        time.sleep(0.1)  # at least 100 parts in setup
        assert (
            httpx.get(sim.base_url + "/erp/jobdispatch/R1", headers=headers).json()["metrics"]["totalParts"]
            == 0
        )
        httpx.post(sim.base_url + START, json={**body, "startInSetup": False}, headers=headers)
        assert sim.runs()["R1"]["setup_metrics"]["totalParts"] >= 100


def test_switch_of_a_stopped_setup_run_is_a_conflict(http: httpx.Client) -> None:
    body = start_body(startInSetup=True)
    http.post(START, json=body)
    http.post(STOP, json={"erpJobOperationRunId": "R1"})
    assert http.post(START, json={**body, "startInSetup": False}).status_code == 409


def test_one_job_per_machine_ends_the_old_run_at_the_new_start(http: httpx.Client, sim: MMSimulator) -> None:
    http.post(START, json=start_body("R1", startAt="2024-01-01T08:00:00Z"))
    http.post(START, json=start_body("R2", machine="M2", startAt="2024-01-01T08:10:00Z"))
    http.post(START, json=start_body("R3", startAt="2024-01-01T09:00:00Z"))
    runs = sim.runs()
    assert runs["R1"]["end_at"] == "2024-01-01T09:00:00.000Z"
    assert runs["R1"]["ended_by"] == "superseded"
    assert runs["R2"]["end_at"] is None  # other machine untouched
    assert runs["R3"]["end_at"] is None
    # R1 retried late (e.g. an in-doubt start): a no-op, it does not come back to life
    assert http.post(START, json=start_body("R1", startAt="2024-01-01T08:00:00Z")).status_code == 200
    assert sim.runs()["R3"]["end_at"] is None
    assert sim.runs()["R1"]["end_at"] == "2024-01-01T09:00:00.000Z"


def test_busy_machine_can_be_refused_instead() -> None:
    with MMSimulator(reject_busy_machine=True) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        assert httpx.post(sim.base_url + START, json=start_body("R1"), headers=headers).status_code == 200
        response = httpx.post(sim.base_url + START, json=start_body("R2"), headers=headers)
        assert response.status_code == 409
        assert response.json()["errors"][0]["code"] == "MachineBusy"


def test_stop_unknown_twice_and_before_start(http: httpx.Client) -> None:
    response = http.post(STOP, json={"erpJobOperationRunId": "nope"})
    assert response.status_code == 404
    assert response.json() == {"code": "NotFound", "message": "Job run not found", "errors": []}
    http.post(START, json=start_body(startAt="2024-01-01T08:00:00Z"))
    assert validation_fields(
        http.post(STOP, json={"erpJobOperationRunId": "R1", "endAt": "2024-01-01T07:00:00Z"})
    ) == {"endAt": "BeforeStartAt"}
    assert (
        http.post(STOP, json={"erpJobOperationRunId": "R1", "endAt": "2024-01-01T10:00:00Z"}).status_code
        == 200
    )
    assert (
        http.post(STOP, json={"erpJobOperationRunId": "R1", "endAt": "2024-01-01T11:00:00Z"}).status_code
        == 200
    )
    assert http.get("/erp/jobdispatch/R1").json()["endAt"] == "2024-01-01T10:00:00.000Z"
    assert validation_fields(http.post(STOP, json={})) == {"erpJobOperationRunId": "Required"}


def test_get_unknown_run_and_missing_query(http: httpx.Client) -> None:
    assert http.get("/erp/jobdispatch/nope").status_code == 404
    assert http.get("/erp/jobdispatch/nope").json()["code"] == "NotFound"
    assert http.get("/erp/jobrun", params={"erpRunId": "nope"}).status_code == 404
    assert validation_fields(http.get("/erp/jobrun")) == {"erpRunId": "Required"}


def test_run_ids_with_reserved_characters_travel_percent_encoded(
    http: httpx.Client, sim: MMSimulator
) -> None:
    run_id = "21431871|10/1 #?%"
    http.post(START, json=start_body(run_id))
    assert http.get("/erp/jobdispatch/21431871%7C10%2F1%20%23%3F%25").status_code == 200
    assert http.get("/erp/jobrun", params={"erpRunId": run_id}).status_code == 200
    assert sim.calls()[-1]["run_id"] == run_id


def test_unknown_paths_and_methods(http: httpx.Client) -> None:
    assert http.get("/erp/nothing").status_code == 404
    response = http.get(START)
    assert response.status_code == 404  # GET /erp/jobdispatch/start = get job run "start"
    response = http.delete(STOP)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"  # GET /erp/jobdispatch/stop = get job run "stop"
    assert http.put("/erp/jobs/import").headers["Allow"] == "POST"


def test_paths_are_configurable() -> None:
    paths = SimPaths(
        start="/v2/start", stop="/v2/stop", get="/v2/runs/{erpJobOperationRunId}/info", get_by_query="/v2/run"
    )
    with MMSimulator(paths=paths) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        assert httpx.post(sim.base_url + "/v2/start", json=start_body(), headers=headers).status_code == 200
        assert httpx.get(sim.base_url + "/v2/runs/R1/info", headers=headers).status_code == 200
        assert (
            httpx.get(sim.base_url + "/v2/run", params={"erpRunId": "R1"}, headers=headers).status_code == 200
        )
        assert httpx.post(sim.base_url + START, json=start_body(), headers=headers).status_code == 404


# ---- parts -----------------------------------------------------------------------------------


def test_running_runs_make_parts_with_scrap_and_nonconform_shares() -> None:
    with MMSimulator(time_scale=10_000, scrap_share=0.1, nonconform_share=0.05, seed=3) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        httpx.post(sim.base_url + START, json=start_body(expectedPartTime=1000), headers=headers)
        time.sleep(0.3)  # ~3000 parts
        metrics = httpx.get(sim.base_url + "/erp/jobdispatch/R1", headers=headers).json()["metrics"]
        total = metrics["totalParts"]
        assert total >= 1000
        assert metrics["goodParts"] + metrics["scrapParts"] + metrics["nonconformParts"] == total
        assert 0.05 * total < metrics["scrapParts"] < 0.15 * total
        assert 0.02 * total < metrics["nonconformParts"] < 0.08 * total
        httpx.post(sim.base_url + STOP, json={"erpJobOperationRunId": "R1"}, headers=headers)
        stopped = httpx.get(sim.base_url + "/erp/jobdispatch/R1", headers=headers).json()["metrics"]
        time.sleep(0.05)
        assert httpx.get(sim.base_url + "/erp/jobdispatch/R1", headers=headers).json()["metrics"] == stopped


def test_part_time_falls_back_to_the_imported_job_then_the_default() -> None:
    with MMSimulator(default_part_time_ms=42_000) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        files = {"csvFile": ("jobs.csv", b"name,workcenter,expectedcycletime\nJ1,M1,7000\n", "text/csv")}
        assert httpx.post(sim.base_url + "/erp/jobs/import", files=files, headers=headers).status_code == 200
        httpx.post(sim.base_url + START, json=start_body("R1"), headers=headers)
        httpx.post(
            sim.base_url + START, json={**start_body("R2", machine="M2"), "jobName": "other"}, headers=headers
        )
        runs = sim.runs()
        assert runs["R1"]["part_time_ms"] == 7000
        assert runs["R2"]["part_time_ms"] == 42_000


def test_set_counts_through_the_control_endpoint(http: httpx.Client, sim: MMSimulator) -> None:
    http.post(START, json=start_body())
    response = httpx.post(
        sim.base_url + "/_sim/counts", json={"run_id": "R1", "total": 10, "scrap": 2, "nonconform": 1}
    )
    assert response.status_code == 200
    assert http.get("/erp/jobdispatch/R1").json()["metrics"] == {
        "totalParts": 10,
        "goodParts": 7,
        "scrapParts": 2,
        "nonconformParts": 1,
    }
    assert httpx.post(sim.base_url + "/_sim/counts", json={"run_id": "nope", "total": 1}).status_code == 400
    assert httpx.post(sim.base_url + "/_sim/counts", json={"run_id": "R1", "total": -1}).status_code == 400


def test_a_lost_run_is_404_everywhere_and_frees_its_machine(http: httpx.Client, sim: MMSimulator) -> None:
    """`/_sim/lose_run`: MM forgets a run erpsync started (drift tests), and answers as for any
    unknown run; the machine is free, so a new run there ends nothing."""
    http.post(START, json=start_body("R1", startAt="2024-01-01T08:00:00Z"))
    assert httpx.post(sim.base_url + "/_sim/lose_run", json={"run_id": "R1"}).json() == {"lost": "R1"}
    assert http.get("/erp/jobdispatch/R1").status_code == 404
    assert http.post(STOP, json={"erpJobOperationRunId": "R1"}).json()["code"] == "NotFound"
    http.post(START, json=start_body("R2"))
    assert list(sim.runs()) == ["R2"] and sim.runs()["R2"]["end_at"] is None
    assert httpx.post(sim.base_url + "/_sim/lose_run", json={"run_id": "R1"}).status_code == 400


def test_a_run_ended_by_hand_shows_its_end_and_stays_ended(http: httpx.Client, sim: MMSimulator) -> None:
    """`/_sim/end_run`: a person ends a run in MM; a later stop from erpsync changes nothing."""
    http.post(START, json=start_body("R1", startAt="2024-01-01T08:00:00Z"))
    end = {"run_id": "R1", "end_at": "2024-01-01T09:30:00Z"}
    response = httpx.post(sim.base_url + "/_sim/end_run", json=end)
    assert (response.status_code, response.json()["ended_by"]) == (200, "hand")
    assert http.get("/erp/jobdispatch/R1").json()["endAt"] == "2024-01-01T09:30:00.000Z"
    http.post(STOP, json={"erpJobOperationRunId": "R1", "endAt": "2024-01-01T11:00:00Z"})
    assert http.get("/erp/jobdispatch/R1").json()["endAt"] == "2024-01-01T09:30:00.000Z"
    bad = [
        {"run_id": "nope"},
        {"run_id": "R1", "end_at": "yesterday"},
    ]
    assert [httpx.post(sim.base_url + "/_sim/end_run", json=b).status_code for b in bad] == [400, 400]
    http.post(START, json=start_body("R2", machine="M2", startAt="2024-01-01T08:00:00Z"))
    early = {"run_id": "R2", "end_at": "2024-01-01T07:00:00Z"}
    assert httpx.post(sim.base_url + "/_sim/end_run", json=early).status_code == 400
    assert httpx.post(sim.base_url + "/_sim/end_run", json={"run_id": "R2"}).json()["end_at"] is not None


# ---- imports ---------------------------------------------------------------------------------


def upload(
    http: httpx.Client, content: bytes, *, kind: str | None = "mm", archive: str | None = None
) -> httpx.Response:
    data = {"autoArchive": archive} if archive is not None else {}
    params = {"type": kind} if kind is not None else {}
    return http.post(
        "/erp/jobs/import", params=params, files={"csvFile": ("jobs.csv", content, "text/csv")}, data=data
    )


def test_import_keeps_a_job_list_and_auto_archive_archives_the_rest(
    http: httpx.Client, sim: MMSimulator
) -> None:
    response = upload(http, b"name,part,workcenter\nJ1,P1,M1\nJ2,P2,M1\n", kind=None)
    assert response.status_code == 200
    assert response.content == b"null"
    assert {(j["name"], j["archived"]) for j in sim.jobs()["mm"]} == {("J1", False), ("J2", False)}
    assert upload(http, b"name,part\nJ2,P2\nJ3,\n", archive="false").status_code == 200
    assert {(j["name"], j["archived"]) for j in sim.jobs()["mm"]} == {
        ("J1", False),
        ("J2", False),
        ("J3", False),
    }
    assert upload(http, b"NAME,PART\nJ3,\n", archive="TRUE").status_code == 200
    assert {(j["name"], j["archived"]) for j in sim.jobs()["mm"]} == {
        ("J1", True),
        ("J2", True),
        ("J3", False),
    }


def test_malformed_import_is_400_with_the_row_and_reason(http: httpx.Client, sim: MMSimulator) -> None:
    response = upload(http, b"name,quantity\nJ1,5\nJ2,many\n")
    assert validation_fields(response) == {"csvFile": "InvalidFile"}
    error = response.json()["errors"][0]
    assert error["row"] == 3
    assert "quantity 'many'" in error["message"]
    assert sim.jobs()["mm"] == []  # nothing of a refused file is kept


def test_import_parameters_are_validated(http: httpx.Client) -> None:
    assert validation_fields(upload(http, b"name\nJ1\n", kind="excel")) == {"type": "InvalidEnum"}
    assert validation_fields(upload(http, b"name\nJ1\n", archive="yes")) == {"autoArchive": "InvalidType"}
    no_file = http.post("/erp/jobs/import", data={"autoArchive": "false"}, files={"other": ("x", b"1")})
    assert validation_fields(no_file) == {"csvFile": "Required"}
    not_multipart = http.post("/erp/jobs/import", content=b"name\nJ1\n", headers={"Content-Type": "text/csv"})
    assert validation_fields(not_multipart) == {"csvFile": "Required"}


@pytest.mark.parametrize("kind", ["inforVisual", "inforLN"])
def test_infor_imports_are_kept_raw(http: httpx.Client, sim: MMSimulator, kind: str) -> None:
    content = b"WO,OP,RESOURCE,QTY\n1001,10,M1,5\n1001,20,M2,5\n"
    assert upload(http, content, kind=kind).status_code == 200
    jobs = sim.jobs()[kind]
    assert sorted(tuple(j["key"]) for j in jobs) == [("1001", "10"), ("1001", "20")]
    assert jobs[0]["columns"]["RESOURCE"] in {"M1", "M2"}
    assert upload(http, b"", kind=kind).status_code == 400


# ---- faults ----------------------------------------------------------------------------------


def test_injected_error_and_rate_limit(http: httpx.Client, sim: MMSimulator) -> None:
    sim.set_faults(Fault("error", status=503, times=1), Fault("rate_limit", retry_after=0.25, times=1))
    first = http.post(START, json=start_body())
    assert first.status_code == 503
    second = http.post(START, json=start_body())
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "0.25"
    assert sim.runs() == {}  # neither was applied
    assert http.post(START, json=start_body()).status_code == 200
    assert [c["fault"] for c in sim.calls()] == ["error", "rate_limit", None]


def test_latency_is_added_to_the_targeted_operation_only(http: httpx.Client, sim: MMSimulator) -> None:
    sim.set_faults(Fault("latency", latency_ms=120, operations=frozenset({"get"})))
    started = time.perf_counter()
    http.get("/erp/jobdispatch/none")
    assert time.perf_counter() - started >= 0.12
    http.post(STOP, json={"erpJobOperationRunId": "none"})
    assert sim.faults.snapshot()[0]["fired"] == 1  # the stop was not delayed


def test_drop_closes_the_connection_without_an_answer(sim: MMSimulator) -> None:
    sim.set_faults(Fault("drop", times=1))
    request = json.dumps(start_body()).encode()
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
        conn.sendall(
            b"POST " + START.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer "
            + sim.api_key.encode()
            + b"\r\nContent-Length: "
            + str(len(request)).encode()
            + b"\r\n\r\n"
            + request
        )
        assert conn.recv(1024) == b""  # EOF, not a byte of response
    assert sim.runs() == {}
    assert sim.calls()[-1]["status"] is None
    assert sim.calls()[-1]["fault"] == "drop"


def test_apply_then_fail_and_drop_after_apply_make_the_change(http: httpx.Client, sim: MMSimulator) -> None:
    sim.set_faults(Fault("apply_then_fail", operations=frozenset({"start"}), times=1))
    response = http.post(START, json=start_body())
    assert response.status_code == 500
    assert "R1" in sim.runs()
    sim.set_faults(Fault("drop_after_apply", operations=frozenset({"stop"}), times=1))
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(STOP, json={"erpJobOperationRunId": "R1"})
    assert sim.runs()["R1"]["end_at"] is not None


def test_after_faults_do_not_fire_on_refused_requests(http: httpx.Client, sim: MMSimulator) -> None:
    sim.set_faults(Fault("apply_then_fail", times=1))
    assert http.post(STOP, json={"erpJobOperationRunId": "nope"}).status_code == 404
    assert http.post(START, json=start_body()).status_code == 500  # still armed


def test_faults_and_inspection_through_control_endpoints(http: httpx.Client, sim: MMSimulator) -> None:
    control = httpx.Client(base_url=sim.base_url)  # no auth needed
    response = control.post(
        "/_sim/faults", json={"faults": [{"kind": "error", "operation": "get", "status": 502}]}
    )
    assert response.status_code == 200
    assert response.json()["faults"][0]["status"] == 502
    assert http.get("/erp/jobdispatch/R1").status_code == 502
    assert control.delete("/_sim/faults").json() == {"faults": []}
    assert control.post("/_sim/faults", json={"faults": [{"kind": "nope"}]}).status_code == 400
    http.post(START, json=start_body())
    state = control.get("/_sim/state").json()
    assert set(state) == {"runs", "calls", "jobs", "faults", "stats"}
    assert state["runs"]["R1"]["machine_id"] == "M1"
    call = state["calls"][-1]
    assert {k: call[k] for k in ("method", "path", "status", "run_id", "operation")} == {
        "method": "POST",
        "path": START,
        "status": 200,
        "run_id": "R1",
        "operation": "start",
    }
    assert call["time"].endswith("Z")
    assert control.get("/_sim/calls").json() == sim.calls()
    assert control.post("/_sim/machines", json={"machines": ["M7"]}).json() == {"machines": ["M7"]}
    assert validation_fields(http.post(START, json=start_body("R2"))) == {"erpMachineId": "MachineNotFound"}
    assert control.post("/_sim/reset").status_code == 200
    assert sim.runs() == {}
    assert sim.calls() == []
    assert control.get("/_sim/nothing").status_code == 404
    control.close()


def test_probabilistic_faults_repeat_with_the_same_seed() -> None:
    def statuses(seed: int) -> list[int]:
        with (
            MMSimulator(seed=seed, faults=[Fault("error", probability=0.5)]) as sim,
            httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as http,
        ):
            return [http.get("/erp/jobdispatch/x").status_code for _ in range(30)]

    assert statuses(11) == statuses(11)
    assert set(statuses(11)) == {404, 500}


# ---- concurrency -----------------------------------------------------------------------------


def test_serves_32_concurrent_keep_alive_connections_with_50ms_latency() -> None:
    """32 clients, each on its own keep-alive connection, all being answered at the same time.

    Rounds are released together by a barrier and repeated until the server has had all 32 in
    flight at once (on a loaded machine a round can straggle); a serialising server never gets
    there, and would need at least ``rounds x 32 x 50 ms``.
    """
    clients, max_rounds = 32, 20
    with MMSimulator(faults=[Fault("latency", latency_ms=50)]) as sim:
        barrier = threading.Barrier(clients)
        done = threading.Event()
        rounds: list[float] = []  # when each round ended
        failures: list[int] = []
        released: list[float] = []

        def worker(i: int) -> None:
            with httpx.Client(
                base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}
            ) as http:
                for r in range(max_rounds):
                    barrier.wait()
                    if done.is_set():
                        return
                    if i == 0 and r == 0:
                        released.append(time.perf_counter())
                    response = http.post(START, json=start_body(f"R{i}-{r}", machine=f"M{i}"))
                    if response.status_code != 200:
                        failures.append(response.status_code)
                    barrier.wait()
                    if i == 0:
                        rounds.append(time.perf_counter())
                        if sim.stats()["peak_in_flight"] == clients:
                            done.set()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = sim.stats()
    elapsed = rounds[-1] - released[0]  # from the first release to the end of the last round
    assert failures == []
    assert stats["peak_in_flight"] == clients, f"peak {stats['peak_in_flight']} after {len(rounds)} rounds"
    assert stats["connections_opened"] == clients  # every client kept its one connection
    assert elapsed < len(rounds) * clients * 0.05, f"{elapsed:.2f}s for {len(rounds)} rounds"


def test_stop_returns_promptly_with_idle_keep_alive_connections(sim: MMSimulator) -> None:
    clients = [httpx.Client(base_url=sim.base_url) for _ in range(5)]
    for client in clients:
        client.get("/_sim/stats")
    started = time.perf_counter()
    sim.stop()
    assert time.perf_counter() - started < 2
    for client in clients:
        client.close()


# ---- CLI -------------------------------------------------------------------------------------


def test_read_machines_from_flag_and_file(tmp_path: Path) -> None:
    assert read_machines(None, None) is None
    path = tmp_path / "machines.txt"
    path.write_text("M1\n# a comment\n\n M2  # inline\n", encoding="utf-8")
    assert read_machines("M3, M4,", path) == {"M1", "M2", "M3", "M4"}


def test_cli_runs_until_sigterm_and_prints_url_and_key(tmp_path: Path) -> None:
    machines = tmp_path / "machines.txt"
    machines.write_text("M1\n", encoding="utf-8")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erpsync",
            "simulator",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--machines-file",
            str(machines),
            "--latency-ms",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in first, first + (
            process.stderr.read() if process.poll() else ""
        )
        url = first.strip().rsplit(" ", 1)[-1]
        assert process.stdout.readline().strip() == "API key: cli-key"
        headers = {"Authorization": "Bearer cli-key"}
        assert httpx.post(url + START, json=start_body(), headers=headers).status_code == 200
        assert validation_fields(httpx.post(url + START, json=start_body(machine="M2"), headers=headers))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "simulator stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
