"""The MM client's circuit breaker and rate limiter: small, thread-safe, with an injectable clock.

pybreaker and pyrate-limiter (the usual libraries for this) are not dependencies;
each job here is a few dozen lines, and owning them lets the breaker treat 429 as "neutral" and the
limiter wait no longer than the caller's deadline, both of which the libraries do not do directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]


class CircuitOpen(Exception):
    """Raised by `CircuitBreaker.before_call` while calls are paused; ``last`` is the last
    failure's cause, so the pause does not hide why (e.g. a refused connection, and to what URL)."""

    def __init__(self, retry_in: float, failures: int, last: str | None = None) -> None:
        super().__init__(
            f"calls paused for another {retry_in:.1f}s after {failures} consecutive failures"
            + (f"; last: {last}" if last else "")
        )
        self.retry_in = retry_in
        self.failures = failures
        self.last = last


class CircuitBreaker:
    """Pause calls after ``failure_threshold`` consecutive failures, for ``reset_seconds``.

    closed -> open after the threshold; open -> half-open once ``reset_seconds`` passed, letting one
    probe call through (others are refused while it runs); the probe's success closes the breaker,
    its failure opens it again for another ``reset_seconds``. A "neutral" outcome (e.g. 429: the
    server is up but asks us to slow down) neither counts nor resets, and frees the probe slot.
    The last failure's ``cause`` is kept for `CircuitOpen` until a success.
    ``on_change(open)`` is called on every transition between paused and not paused.
    """

    def __init__(
        self,
        failure_threshold: int,
        reset_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._failures = 0
        self._last: str | None = None
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state(self._clock())

    def _state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "open" if now - self._opened_at < self._reset else "half-open"

    def before_call(self) -> None:
        """Let a call through, or raise CircuitOpen. Every call let through must report an outcome."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return
            if state == "half-open" and not self._probing:
                self._probing = True
                return
            assert self._opened_at is not None
            retry_in = max(0.0, self._opened_at + self._reset - now)
            raise CircuitOpen(retry_in, self._failures, self._last)

    def record_success(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._failures = 0
            self._last = None
            self._opened_at = None
            self._probing = False
        if was_open and self._on_change:
            self._on_change(False)

    def record_failure(self, cause: str | None = None) -> None:
        """One more consecutive failure; ``cause`` says what it was, for the paused calls' message."""
        with self._lock:
            self._failures += 1
            self._last = cause or self._last
            opened = False
            if self._probing or (self._opened_at is None and self._failures >= self._threshold):
                opened = self._opened_at is None
                self._opened_at = self._clock()
            self._probing = False
        if opened and self._on_change:
            self._on_change(True)

    def record_neutral(self) -> None:
        with self._lock:
            self._probing = False


class RateLimiter:
    """At most ``rate`` calls per second on average, with bursts of up to ``burst`` calls.

    A GCRA token bucket: each call reserves the next free slot under the lock and sleeps outside it,
    so waiting callers never block one another and the order is first come, first served.
    """

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate
        self._tolerance = (max(1, burst if burst is not None else int(rate)) - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next call

    def acquire(self, timeout: float) -> bool:
        """Wait for a slot; False (nothing reserved) if it would take longer than ``timeout``."""
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            wait = max(0.0, tat - self._tolerance - now)
            if wait > timeout:
                return False
            self._tat = tat + self._interval
        if wait > 0:
            self._sleep(wait)
        return True
