"""Circuit breaker, rate limiter and Retry-After parsing, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from erpsync.adapters.mm.client import parse_retry_after
from erpsync.adapters.mm.resilience import CircuitBreaker, CircuitOpen, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_breaker_opens_after_threshold_consecutive_failures_and_success_resets_the_count() -> None:
    clock = FakeClock()
    changes: list[bool] = []
    breaker = CircuitBreaker(3, 10, clock=clock, on_change=changes.append)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    breaker.record_success()  # resets the streak
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert changes == [True]
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert caught.value.retry_in == pytest.approx(10)


def test_breaker_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = FakeClock()
    changes: list[bool] = []
    breaker = CircuitBreaker(1, 5, clock=clock, on_change=changes.append)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 5
    assert breaker.state == "half-open"
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller while the probe runs
    breaker.record_failure()  # probe failed: open again for another 5 s
    assert breaker.state == "open"
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 0.1
    breaker.before_call()
    breaker.record_neutral()  # e.g. 429: probe slot freed, still half-open
    assert breaker.state == "half-open"
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"
    assert changes == [True, False]


def test_breaker_open_keeps_the_last_underlying_error() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 60, clock=clock)
    breaker.record_failure("HTTP 503 from http://mm.example/erp/jobdispatch/start")
    refused = "network error (ConnectError: [Errno 111] Connection refused) talking to http://127.0.0.1:1"
    breaker.record_failure(refused)
    clock.now += 0.3
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert (
        str(caught.value) == f"calls paused for another 59.7s after 2 consecutive failures; last: {refused}"
    )
    assert caught.value.last == refused
    clock.now += 60
    breaker.before_call()  # the probe fails without a cause: the last one known is kept
    breaker.record_failure()
    with pytest.raises(CircuitOpen, match="Connection refused"):
        breaker.before_call()
    clock.now += 60
    breaker.before_call()
    breaker.record_success()  # a success forgets it
    breaker.record_failure()
    breaker.record_failure()
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert caught.value.last is None and "last:" not in str(caught.value)


def test_rate_limiter_allows_a_burst_then_spaces_calls() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert limiter.acquire(timeout=0)
    assert clock.slept == []
    assert limiter.acquire(timeout=1)
    assert clock.slept == [pytest.approx(0.1)]
    assert limiter.acquire(timeout=1)
    assert clock.slept[-1] == pytest.approx(0.1)


def test_rate_limiter_gives_up_without_reserving_when_the_wait_exceeds_the_timeout() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=1, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(timeout=0)
    assert not limiter.acquire(timeout=0.5)
    assert not limiter.acquire(timeout=0.5)  # the refusal reserved nothing
    assert limiter.acquire(timeout=1.0)
    assert clock.slept == [pytest.approx(1.0)]


def test_rate_limiter_default_burst_is_one_second_of_calls() -> None:
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    assert all(limiter.acquire(timeout=0) for _ in range(50))
    assert not limiter.acquire(timeout=0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("3", 3.0), ("0.25", 0.25), ("-4", 0.0), ("soon", None), ("nan", None)],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = parse_retry_after(format_datetime(when, usegmt=True))
    assert seconds is not None
    assert 28 <= seconds <= 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
