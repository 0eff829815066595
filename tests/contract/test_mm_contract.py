"""Contract: what erpsync relies on from MachineMetrics, checked against any server through MMClient.

By default (CI) the server is an in-process simulator. To check a real MM sandbox instead:

    ERPSYNC_CONTRACT_BASE_URL=https://api-demo.machinemetrics.com \\
    ERPSYNC_CONTRACT_API_KEY=...            # a key with the erp scope \\
    ERPSYNC_CONTRACT_MACHINE_ID=...         # the ERP machine id of a sandbox machine \\
    uv run pytest tests/contract

Optional: ``ERPSYNC_CONTRACT_GET_PATH`` (e.g. a current-docs path without ``{erpJobOperationRunId}``,
then the id goes in query ``erpRunId``) and ``ERPSYNC_CONTRACT_IMPORT=1`` to also run the job
import against a real server (it adds a job to the company; the import path is an assumption).

These tests start and stop job runs on that one machine (ids ``erpsync-contract-*``), one at a
time, and never use the simulator's ``/_sim/`` endpoints: what they see is what MM answers. Where
they fail against a real server, docs/machinemetrics.md marks the assumption that broke.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.errors import MMConfigError, MMConflictError, MMNotFoundError, MMRecordError
from erpsync.adapters.mm.schemas import JobFile, JobRun, StartJobRun, StopJobRun
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.config import MMPaths, MMSettings
from tests.fixtures_mm import fast_mm_settings

SIMULATED_MACHINE = "CONTRACT-M1"
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Target:
    settings: MMSettings
    machine_id: str
    real: bool


def _real_target(base_url: str) -> Target:
    key = os.environ.get("ERPSYNC_CONTRACT_API_KEY")
    machine = os.environ.get("ERPSYNC_CONTRACT_MACHINE_ID")
    if not key or not machine:
        pytest.fail(
            "ERPSYNC_CONTRACT_BASE_URL is set: also set ERPSYNC_CONTRACT_API_KEY and "
            "ERPSYNC_CONTRACT_MACHINE_ID",
            pytrace=False,
        )
    get_path = os.environ.get("ERPSYNC_CONTRACT_GET_PATH")
    settings = MMSettings(
        base_url=base_url,
        api_key=SecretStr(key),
        paths=MMPaths(get=get_path) if get_path else MMPaths(),
        retry_deadline_seconds=30,
        max_attempts=4,
        rate_limit_per_second=2,
        max_concurrency=2,
    )
    return Target(settings, machine, real=True)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    base_url = os.environ.get("ERPSYNC_CONTRACT_BASE_URL")
    if base_url:
        yield _real_target(base_url)
        return
    with MMSimulator(machines={SIMULATED_MACHINE}) as sim:
        yield Target(fast_mm_settings(sim.base_url, sim.api_key), SIMULATED_MACHINE, real=False)


@pytest.fixture(scope="module")
def client(target: Target) -> Iterator[MMClient]:
    with MMClient(target.settings) as mm:
        yield mm


@pytest.fixture
def run_id(client: MMClient) -> Iterator[str]:
    """A fresh run id; the run is stopped afterwards if a test left it running."""
    value = f"erpsync-contract-{uuid.uuid4().hex[:12]}"
    yield value
    run = client.get_job_run(value)
    if run is not None and run.end_at is None:
        client.stop_job_run(StopJobRun(erp_job_operation_run_id=value))


def now_ms() -> datetime:
    now = datetime.now(UTC) - timedelta(seconds=5)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def start_req(target: Target, run_id: str, start_at: datetime | None, **extra: object) -> StartJobRun:
    return StartJobRun(
        erp_job_operation_run_id=run_id,
        erp_machine_id=target.machine_id,
        job_name="erpsync contract",
        operation_name="10",
        part_name="CONTRACT-PART",
        start_at=start_at,
        expected_part_time=60_000,
        **extra,  # type: ignore[arg-type]
    )


def fetch(client: MMClient, run_id: str) -> JobRun:
    run = client.get_job_run(run_id)
    assert run is not None, f"MM does not have run {run_id}"
    return run


def test_start_get_stop(client: MMClient, target: Target, run_id: str) -> None:
    started = now_ms()
    client.start_job_run(start_req(target, run_id, started))
    run = fetch(client, run_id)
    assert run.start_at == started
    assert run.end_at is None
    assert run.metrics is not None
    ended = started + timedelta(seconds=3)
    client.stop_job_run(StopJobRun(erp_job_operation_run_id=run_id, end_at=ended))
    run = fetch(client, run_id)
    assert run.end_at == ended
    assert run.metrics is not None
    counts = run.metrics
    assert min(counts.total_parts, counts.good_parts, counts.scrap_parts, counts.nonconform_parts) >= 0


def test_missing_times_default_to_server_time(client: MMClient, target: Target, run_id: str) -> None:
    client.start_job_run(start_req(target, run_id, None))
    run = fetch(client, run_id)
    assert run.start_at is not None
    assert abs(run.start_at - datetime.now(UTC)) < CLOCK_SKEW
    client.stop_job_run(StopJobRun(erp_job_operation_run_id=run_id))
    run = fetch(client, run_id)
    assert run.end_at is not None
    assert run.end_at >= run.start_at


def test_repeating_a_start_with_the_same_values_is_accepted(
    client: MMClient, target: Target, run_id: str
) -> None:
    request = start_req(target, run_id, now_ms())
    client.start_job_run(request)
    client.start_job_run(request)
    assert fetch(client, run_id).start_at == request.start_at


def test_a_start_with_other_values_for_a_known_id_conflicts(
    client: MMClient, target: Target, run_id: str
) -> None:
    started = now_ms()
    client.start_job_run(start_req(target, run_id, started))
    with pytest.raises(MMConflictError):
        client.start_job_run(start_req(target, run_id, started, quantity_required=7))


def test_setup_then_production_with_the_same_id(client: MMClient, target: Target, run_id: str) -> None:
    started = now_ms()
    client.start_job_run(start_req(target, run_id, started, start_in_setup=True))
    client.start_job_run(start_req(target, run_id, started, start_in_setup=False))
    client.start_job_run(start_req(target, run_id, started, start_in_setup=False))
    run = fetch(client, run_id)
    assert run.start_at == started
    assert run.end_at is None


def test_stopping_twice_keeps_the_first_end(client: MMClient, target: Target, run_id: str) -> None:
    started = now_ms()
    client.start_job_run(start_req(target, run_id, started))
    first_end = started + timedelta(seconds=2)
    client.stop_job_run(StopJobRun(erp_job_operation_run_id=run_id, end_at=first_end))
    client.stop_job_run(StopJobRun(erp_job_operation_run_id=run_id, end_at=first_end + timedelta(seconds=2)))
    assert fetch(client, run_id).end_at == first_end


def test_a_new_run_on_the_machine_ends_the_previous_one(
    client: MMClient, target: Target, run_id: str
) -> None:
    started = now_ms() - timedelta(seconds=10)
    client.start_job_run(start_req(target, run_id, started))
    second = f"{run_id}-next"
    second_start = started + timedelta(seconds=5)
    client.start_job_run(start_req(target, second, second_start))
    try:
        assert fetch(client, run_id).end_at == second_start
        assert fetch(client, second).end_at is None
    finally:
        client.stop_job_run(StopJobRun(erp_job_operation_run_id=second))


def test_unknown_runs(client: MMClient) -> None:
    unknown = f"erpsync-contract-unknown-{uuid.uuid4().hex}"
    assert client.get_job_run(unknown) is None
    with pytest.raises(MMNotFoundError):
        client.stop_job_run(StopJobRun(erp_job_operation_run_id=unknown))


def test_an_unknown_machine_is_refused(client: MMClient, target: Target, run_id: str) -> None:
    request = start_req(target, run_id, now_ms())
    request.erp_machine_id = f"erpsync-no-such-machine-{uuid.uuid4().hex[:8]}"
    with pytest.raises(MMRecordError):
        client.start_job_run(request)
    assert client.get_job_run(run_id) is None


def test_a_wrong_key_is_a_configuration_error(target: Target) -> None:
    settings = target.settings.model_copy(update={"api_key": SecretStr("erpsync-contract-wrong-key")})
    with MMClient(settings) as wrong, pytest.raises(MMConfigError) as caught:
        wrong.get_job_run("erpsync-contract-any")
    assert caught.value.http_status == 401


def test_job_import(client: MMClient, target: Target) -> None:
    if target.real and os.environ.get("ERPSYNC_CONTRACT_IMPORT") != "1":
        pytest.skip("set ERPSYNC_CONTRACT_IMPORT=1 to import a job into the real company")
    name = f"erpsync-contract-{uuid.uuid4().hex[:8]}"
    header = "name,part,operation,workcenter,expectedparttime"
    csv = f"{header}\n{name},CONTRACT-PART,10,{target.machine_id},60000\n"
    client.import_jobs(JobFile(csv.encode(), auto_archive=False))
    with pytest.raises(MMRecordError):
        client.import_jobs(JobFile(b"name,quantity\nx,not-a-number\n"))
