"""One model of MachineMetrics, two front doors: the fake answers as MMClient over HTTP does.

Each scenario runs through `MMClient` over real loopback HTTP against the simulator and through
`FakeMachineMetrics` in process, each on a fresh `MMModel`, and must see the same results and the
same exceptions (class, http_status, code, field errors, message). The client's retries are not
part of the contract: injected faults here are permanent, so the client's last attempt meets the
answer the fake's only call meets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.errors import (
    MMConfigError,
    MMConflictError,
    MMError,
    MMNotFoundError,
    MMRecordError,
    MMRetryableError,
)
from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.schemas import JobFile, StartJobRun, StopJobRun
from erpsync.adapters.mm.simulator import Fault, MMModel, MMSimulator
from erpsync.adapters.mm.simulator.model import ModelHelpers
from erpsync.service.ports import MachineMetrics
from tests.fixtures_mm import fast_mm_settings

DOORS = ("http", "fake")
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
JOBS_CSV = b"name,part,operation,workcenter,expectedcycletime\nJ1,P1,10,M1,60000\nJ2,P2,20,M2,30000\n"


@dataclass
class Door:
    """A way into a model: the port erpsync calls, and the model's test helpers behind it."""

    mm: MachineMetrics
    helpers: ModelHelpers


@contextmanager
def open_door(kind: str, *, api_key: str | None = None) -> Iterator[Door]:
    """A fresh model (machines M1 and M2, seeded) behind the simulator and MMClient, or the fake."""
    model = MMModel(machines={"M1", "M2"}, seed=7)
    if kind == "fake":
        fake = FakeMachineMetrics(model, api_key=api_key)
        yield Door(fake, fake)
        return
    with (
        MMSimulator(model=model) as sim,
        MMClient(fast_mm_settings(sim.base_url, api_key or sim.api_key)) as client,
    ):
        yield Door(client, sim)


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest) -> Iterator[Door]:
    with open_door(request.param) as opened:
        yield opened


def start(run_id: str = "R1", machine: str = "M1", **extra: Any) -> StartJobRun:
    values: dict[str, Any] = {"job_name": "J1", "operation_name": "10", "part_name": "P1", "start_at": T0}
    return StartJobRun(erp_job_operation_run_id=run_id, erp_machine_id=machine, **{**values, **extra})


def stop(run_id: str = "R1", end_at: datetime | None = T0 + timedelta(hours=1)) -> StopJobRun:
    return StopJobRun(erp_job_operation_run_id=run_id, end_at=end_at)


def error_of(door: Door, call: Callable[[MachineMetrics], object]) -> MMError:
    with pytest.raises(MMError) as caught:
        call(door.mm)
    return caught.value


def seen(error: MMError) -> tuple[object, ...]:
    return (
        type(error),
        error.operation,
        error.http_status,
        error.code,
        error.run_id,
        error.field_errors,
        str(error),
    )


# ---- the scenarios, door by door ---------------------------------------------------------------


def test_start_then_get(door: Door) -> None:
    door.mm.start_job_run(start())
    run = door.mm.get_job_run("R1")
    assert run is not None
    assert (run.start_at, run.end_at) == (T0, None)
    assert run.metrics is not None
    assert door.helpers.runs()["R1"]["machine_id"] == "M1"


def test_duplicate_start_is_a_no_op(door: Door) -> None:
    door.mm.start_job_run(start())
    door.mm.start_job_run(start())
    assert list(door.helpers.runs()) == ["R1"]
    assert [c["status"] for c in door.helpers.calls()] == [200, 200]


def test_start_with_other_job_fields_is_a_conflict(door: Door) -> None:
    door.mm.start_job_run(start())
    error = error_of(door, lambda mm: mm.start_job_run(start(job_name="J2")))
    assert isinstance(error, MMConflictError)
    assert (error.http_status, error.code, error.run_id) == (409, "Conflict", "R1")
    assert door.helpers.runs()["R1"]["job_name"] == "J1"


def test_stop_ends_the_run(door: Door) -> None:
    door.mm.start_job_run(start())
    door.mm.stop_job_run(stop())
    door.mm.stop_job_run(stop(end_at=T0 + timedelta(hours=2)))  # a stopped run stays as it is
    run = door.mm.get_job_run("R1")
    assert run is not None
    assert run.end_at == T0 + timedelta(hours=1)


def test_stop_unknown_is_not_found(door: Door) -> None:
    error = error_of(door, lambda mm: mm.stop_job_run(stop("NOPE")))
    assert isinstance(error, MMNotFoundError)
    assert (error.http_status, error.code, error.run_id) == (404, "NotFound", "NOPE")


def test_get_unknown_is_none(door: Door) -> None:
    assert door.mm.get_job_run("NOPE") is None
    assert door.helpers.calls()[-1]["status"] == 404


def test_unknown_machine_is_refused(door: Door) -> None:
    error = error_of(door, lambda mm: mm.start_job_run(start(machine="M9")))
    assert type(error) is MMRecordError
    assert (error.http_status, error.code) == (400, "ValidationError")
    assert [e["code"] for e in error.field_errors] == ["MachineNotFound"]
    assert door.helpers.runs() == {}
    door.helpers.set_machines(None)  # any machine is accepted then
    door.mm.start_job_run(start(machine="M9"))


def test_client_side_validation_refuses_before_calling(door: Door) -> None:
    bad = StartJobRun.model_construct(erp_job_operation_run_id=" ", erp_machine_id="M1", job_name="J1")
    error = error_of(door, lambda mm: mm.start_job_run(bad))
    assert (type(error), error.http_status, error.code) == (MMRecordError, None, "ClientValidation")
    assert door.helpers.calls() == []


def test_import_jobs(door: Door) -> None:
    door.mm.import_jobs(JobFile(JOBS_CSV, auto_archive=True, filename="jobs.csv"))
    assert {(j["name"], j["archived"]) for j in door.helpers.jobs()["mm"]} == {("J1", False), ("J2", False)}
    error = error_of(door, lambda mm: mm.import_jobs(JobFile(b"name,quantity\nJ3,many\n")))
    assert (type(error), error.http_status, error.code) == (MMRecordError, 400, "ValidationError")
    assert error.field_errors[0]["row"] == 2


def test_part_counts_appear_on_get(door: Door) -> None:
    door.mm.start_job_run(start())
    door.helpers.set_counts("R1", total=10, scrap=1, nonconform=2)
    run = door.mm.get_job_run("R1")
    assert run is not None and run.metrics is not None
    assert (run.metrics.total_parts, run.metrics.good_parts) == (10, 7)
    assert (run.metrics.scrap_parts, run.metrics.nonconform_parts) == (1, 2)


@pytest.mark.parametrize(
    ("fault", "error_class", "status", "code"),
    [
        (Fault("error", status=503), MMRetryableError, 503, "InternalServerError"),
        (Fault("rate_limit", retry_after=0.001), MMRetryableError, 429, "TooManyRequests"),
        (Fault("error", status=401), MMConfigError, 401, "InternalServerError"),
        (Fault("drop"), MMRetryableError, None, "Network"),
    ],
)
def test_injected_faults(
    door: Door, fault: Fault, error_class: type[MMError], status: int | None, code: str
) -> None:
    door.helpers.set_faults(fault)
    error = error_of(door, lambda mm: mm.start_job_run(start()))
    assert (type(error), error.http_status, error.code) == (error_class, status, code)
    assert door.helpers.runs() == {}  # refused before the rules: nothing applied
    assert {c["fault"] for c in door.helpers.calls()} == {fault.kind}


@pytest.mark.parametrize("kind", DOORS)
def test_a_wrong_key_is_a_config_error(kind: str) -> None:
    with open_door(kind, api_key="wrong") as wrong:
        error = error_of(wrong, lambda mm: mm.get_job_run("R1"))
    assert (type(error), error.http_status, error.code) == (MMConfigError, 401, "invalid_token")


# ---- both doors at once: identical errors and call logs --------------------------------------


def refusals(mm: MachineMetrics) -> list[tuple[object, ...]]:
    """Every refusal of a fixed sequence of calls, as the caller sees it."""
    calls: list[Callable[[], object]] = [
        lambda: mm.start_job_run(start()),
        lambda: mm.start_job_run(start(lot_name="L2")),
        lambda: mm.start_job_run(start("R2", machine="M9")),
        lambda: mm.stop_job_run(stop("NOPE")),
        lambda: mm.stop_job_run(stop(end_at=T0 - timedelta(hours=1))),
        lambda: mm.get_job_run("NOPE"),
        lambda: mm.import_jobs(JobFile(b"name,quantity\nJ3,-1\n", import_type="mm")),
        lambda: mm.import_jobs(JobFile(JOBS_CSV, import_type="inforVisual")),
    ]
    seen_errors: list[tuple[object, ...]] = []
    for call in calls:
        try:
            call()
        except MMError as exc:
            seen_errors.append(seen(exc))
    return seen_errors


def test_both_doors_refuse_alike_and_log_the_same_calls() -> None:
    results = {}
    for kind in DOORS:
        with open_door(kind) as opened:
            errors = refusals(opened.mm)
            calls = [{k: v for k, v in c.items() if k not in {"seq", "time"}} for c in opened.helpers.calls()]
            runs = {
                k: {f: v for f, v in r.items() if f != "production_at"}
                for k, r in opened.helpers.runs().items()
            }
            results[kind] = (errors, calls, runs, opened.helpers.jobs())
    assert len(results["fake"][0]) == 5
    assert results["fake"] == results["http"]
