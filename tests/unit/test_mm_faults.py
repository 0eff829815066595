"""The simulator's fault plan: targeting, next-N counting, seeded probabilities, ordering."""

from __future__ import annotations

import pytest

from erpsync.adapters.mm.simulator.faults import Fault, FaultPlan


def test_faults_target_operations_and_stop_after_n_calls() -> None:
    plan = FaultPlan([Fault("error", operations=frozenset({"start"}), status=503, times=2)])
    assert plan.before("stop") == (0.0, None)
    first = plan.before("start")[1]
    assert first is not None
    assert first.status == 503
    assert plan.before("start")[1] is not None
    assert plan.before("start")[1] is None  # used up
    assert plan.snapshot() == []


def test_latency_adds_up_and_the_first_answering_fault_wins() -> None:
    plan = FaultPlan(
        [
            Fault("latency", latency_ms=30),
            Fault("rate_limit", retry_after=2),
            Fault("latency", latency_ms=20),
            Fault("error"),
        ]
    )
    latency, fault = plan.before("get")
    assert latency == pytest.approx(0.05)
    assert fault is not None
    assert fault.kind == "rate_limit"


def test_after_faults_fire_only_when_asked_after_a_success() -> None:
    plan = FaultPlan([Fault("apply_then_fail", times=1)])
    assert plan.before("start") == (0.0, None)
    fault = plan.after("start")
    assert fault is not None
    assert fault.kind == "apply_then_fail"
    assert plan.after("start") is None


def test_probabilistic_faults_are_reproducible_with_a_seed() -> None:
    def draws(seed: int) -> list[bool]:
        plan = FaultPlan([Fault("error", probability=0.3)], seed=seed)
        return [plan.before("start")[1] is not None for _ in range(200)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert 30 <= sum(draws(7)) <= 90


def test_set_replaces_or_appends_and_can_reseed() -> None:
    plan = FaultPlan([Fault("error")])
    plan.set([Fault("drop")], append=True)
    assert [f["kind"] for f in plan.snapshot()] == ["error", "drop"]
    plan.set([])
    assert plan.snapshot() == []


def test_from_dict_accepts_one_operation_or_a_list() -> None:
    assert Fault.from_dict({"kind": "drop", "operation": "stop"}).operations == frozenset({"stop"})
    fault = Fault.from_dict({"kind": "latency", "operations": ["start", "get"], "latency_ms": 50})
    assert fault.operations == frozenset({"start", "get"})
    assert fault.to_dict()["operations"] == ["get", "start"]


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "explode"},
        {"kind": "error", "operation": "delete"},
        {"kind": "error", "status": 42},
        {"kind": "error", "times": 0},
        {"kind": "error", "probability": 1.5},
        {"kind": "latency", "latency_ms": -1},
    ],
)
def test_bad_fault_definitions_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fault.from_dict(bad)
