"""What the fake does that the contract test does not cover: no retries, threads, a shared model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from erpsync.adapters.mm.errors import MMRetryableError
from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.mm.schemas import StartJobRun
from erpsync.adapters.mm.simulator import Fault, MMModel, MMSimulator


def start(run_id: str, machine: str = "M1") -> StartJobRun:
    return StartJobRun(erp_job_operation_run_id=run_id, erp_machine_id=machine, job_name="J1")


def test_apply_then_fail_is_retryable_at_once_and_the_run_exists() -> None:
    """MMClient would retry and converge (a repeated start is a no-op); the fake does not retry."""
    fake = FakeMachineMetrics()
    fake.set_faults(Fault("apply_then_fail", times=1))
    with pytest.raises(MMRetryableError) as caught:
        fake.start_job_run(start("R1"))
    assert (caught.value.http_status, caught.value.run_id) == (500, "R1")
    assert "R1" in fake.runs()
    fake.start_job_run(start("R1"))  # what the client's retry would send
    assert [(c["status"], c["fault"]) for c in fake.calls()] == [(500, "apply_then_fail"), (200, None)]


def test_latency_goes_to_the_given_sleep() -> None:
    slept: list[float] = []
    fake = FakeMachineMetrics(sleep=slept.append)
    fake.set_faults(Fault("latency", latency_ms=250, operations=frozenset({"get"})))
    assert fake.get_job_run("R1") is None
    fake.start_job_run(start("R1"))
    assert slept == [0.25]


def test_threads_share_one_model_safely() -> None:
    fake = FakeMachineMetrics(MMModel(seed=1))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: fake.start_job_run(start(f"R{i}", machine=f"M{i}")), range(200)))
    assert len(fake.runs()) == 200
    assert sorted(c["seq"] for c in fake.calls()) == list(range(1, 201))


def test_the_fake_and_the_simulator_can_share_a_model() -> None:
    model = MMModel(machines={"M1"})
    fake = FakeMachineMetrics(model)
    fake.start_job_run(start("R1"))
    with MMSimulator(model=model) as sim:
        assert sim.runs() == fake.runs()
        assert sim.api_key == fake.api_key == model.api_key
