"""The simulator's state machine without HTTP, on fake clocks: part production and run rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from erpsync.adapters.mm.simulator.state import SimState
from erpsync.adapters.mm.simulator.wire import parse_timestamp


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


def make_state(clocks: Clocks, **options: Any) -> SimState:
    defaults: dict[str, Any] = {"scrap_share": 0.0, "nonconform_share": 0.0, "seed": 1}
    return SimState(
        keys={"k": {"erp"}},
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
        **{**defaults, **options},
    )


def body(run_id: str = "R1", **extra: Any) -> dict[str, Any]:
    return {
        "erpJobOperationRunId": run_id,
        "erpMachineId": "M1",
        "jobName": "J",
        "expectedPartTime": 1000,
        **extra,
    }


def metrics(state: SimState, run_id: str = "R1") -> dict[str, int]:
    reply = state.get(run_id)
    assert reply.status == 200
    return dict(reply.body["metrics"])


def test_parts_follow_the_part_time_and_time_scale_and_stop_with_the_run() -> None:
    clocks = Clocks()
    state = make_state(clocks, time_scale=2.0)
    assert state.start(body()).status == 200
    clocks.advance(10)  # 20 simulated seconds, 1 s per part
    assert metrics(state)["totalParts"] == 20
    assert state.stop({"erpJobOperationRunId": "R1"}).status == 200
    clocks.advance(10)
    assert metrics(state)["totalParts"] == 20


def test_setup_parts_are_kept_apart_from_production() -> None:
    clocks = Clocks()
    state = make_state(clocks)
    state.start(body(startInSetup=True))
    clocks.advance(30)
    assert metrics(state)["totalParts"] == 0
    state.start(body(startInSetup=False))  # the switch, 30 s after the start
    clocks.advance(12)
    run = state.runs()["R1"]
    assert run["setup_metrics"]["totalParts"] == 30
    assert run["metrics"]["totalParts"] == 12
    assert run["production_at"] == "2024-01-01T08:00:30.000Z"
    assert run["start_at"] == "2024-01-01T08:00:00.000Z"


def test_setup_ends_by_itself_once_the_expected_setup_time_has_passed() -> None:
    clocks = Clocks()
    state = make_state(clocks, time_scale=2.0)
    state.start(body(startInSetup=True, expectedSetupTime=60))  # 60 MM seconds = 30 real seconds
    clocks.advance(29)
    assert state.runs()["R1"]["phase"] == "setup"
    clocks.advance(11)  # 80 MM seconds since the start: 60 in setup, 20 in production
    run = state.runs()["R1"]
    assert run["phase"] == "production"
    assert run["production_at"] == "2024-01-01T08:00:30.000Z"  # wall clock: 60 MM s at 2x
    assert run["setup_metrics"]["totalParts"] == 60
    assert run["metrics"]["totalParts"] == 20
    # the switch erpsync sends later is a no-op; repeating the setup start is a conflict, as
    # after a switch that was sent
    assert state.start(body(startInSetup=False, expectedSetupTime=60)).status == 200
    assert state.start(body(startInSetup=True, expectedSetupTime=60)).status == 409
    assert state.runs()["R1"]["metrics"]["totalParts"] == 20


def test_a_run_stopped_in_setup_before_its_setup_time_never_reaches_production() -> None:
    clocks = Clocks()
    state = make_state(clocks)
    state.start(body(startInSetup=True, expectedSetupTime=60))
    clocks.advance(30)
    assert state.stop({"erpJobOperationRunId": "R1"}).status == 200
    clocks.advance(60)
    run = state.runs()["R1"]
    assert (run["phase"], run["production_at"], run["metrics"]["totalParts"]) == ("setup", None, 0)
    assert run["setup_metrics"]["totalParts"] == 30


def test_shares_split_the_parts_and_add_up() -> None:
    clocks = Clocks()
    state = make_state(clocks, scrap_share=0.2, nonconform_share=0.1)
    state.start(body())
    clocks.advance(5000)
    counts = metrics(state)
    assert counts["totalParts"] == 5000
    assert counts["goodParts"] + counts["scrapParts"] + counts["nonconformParts"] == 5000
    assert 800 < counts["scrapParts"] < 1200
    assert 350 < counts["nonconformParts"] < 650


def test_the_same_seed_gives_the_same_counts_however_often_they_are_read() -> None:
    def run(reads: int) -> dict[str, int]:
        clocks = Clocks()
        state = make_state(clocks, scrap_share=0.3, nonconform_share=0.3, seed=9)
        state.start(body())
        started = clocks.mono
        for k in range(1, reads + 1):
            clocks.mono = started + 100 * k / reads  # exactly 100 s at the last read
            state.get("R1")
        return metrics(state)

    assert run(1) == run(7) == run(100)


def test_a_huge_time_scale_does_not_draw_per_part() -> None:
    clocks = Clocks()
    state = make_state(clocks, time_scale=1e6, scrap_share=0.02)
    state.start(body())
    clocks.advance(60)
    counts = metrics(state)
    assert counts["totalParts"] == 60_000_000
    assert counts["scrapParts"] == 1_200_000


def test_a_zero_part_time_makes_no_parts_and_the_default_applies_when_none_is_given() -> None:
    clocks = Clocks()
    state = make_state(clocks, default_part_time_ms=10_000)
    state.start(body("R1", expectedPartTime=0, idealPartTime=None))
    state.start({"erpJobOperationRunId": "R2", "erpMachineId": "M2", "jobName": "J2"})
    clocks.advance(100)
    runs = state.runs()
    assert runs["R1"]["part_time_ms"] == 10_000  # 0 means "not known": falls through to the default
    assert runs["R2"]["metrics"]["totalParts"] == 10


def test_set_counts_is_exact_and_freezes_production() -> None:
    clocks = Clocks()
    state = make_state(clocks)
    state.start(body())
    state.set_counts("R1", total=7, scrap=1)
    clocks.advance(100)
    assert metrics(state) == {"totalParts": 7, "goodParts": 6, "scrapParts": 1, "nonconformParts": 0}
    with pytest.raises(KeyError):
        state.set_counts("nope", total=1)
    with pytest.raises(ValueError, match="negative"):
        state.set_counts("R1", total=1, scrap=2)


def test_superseded_run_ends_at_the_later_of_the_two_starts() -> None:
    clocks = Clocks()
    state = make_state(clocks)
    state.start(body("R1", startAt="2024-01-01T08:00:00Z"))
    state.start(body("R2", startAt="2024-01-01T07:00:00Z"))  # out of order: never end before start
    assert state.runs()["R1"]["end_at"] == "2024-01-01T08:00:00.000Z"


def test_the_call_log_is_bounded() -> None:
    state = make_state(Clocks(), call_log_limit=3)
    for i in range(5):
        state.log_call(method="GET", path="/x", operation="get", status=200, run_id=str(i), fault=None)
    assert [c["run_id"] for c in state.calls()] == ["2", "3", "4"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-07-19T10:00:00Z", "2017-07-19T10:00:00+00:00"),
        ("2017-07-19T10:00:00.123456789Z", "2017-07-19T10:00:00.123000+00:00"),
        ("2017-07-19T12:00:00+02:00", "2017-07-19T10:00:00+00:00"),
        ("2017-07-19T12:00+0200", "2017-07-19T10:00:00+00:00"),
        ("2017-07-19t10:00:00z", "2017-07-19T10:00:00+00:00"),
        ("2017-07-19T10:00:00", None),
        ("2017-07-19 10:00:00Z", None),
        ("2017-02-30T10:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_timestamps_need_a_zone(text: str, expected: str | None) -> None:
    parsed = parse_timestamp(text)
    assert (parsed.isoformat() if parsed else None) == expected


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        SimState(keys={}, time_scale=0)
    with pytest.raises(ValueError, match="add up"):
        SimState(keys={}, scrap_share=0.7, nonconform_share=0.5)
