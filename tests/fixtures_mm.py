"""MachineMetrics fixtures: a started simulator per test, and settings/client wired to it.

Registered for the whole suite through ``pytest_plugins`` in tests/conftest.py. Retry waits are
tiny (milliseconds) so fault tests never sleep for real seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.config import MMSettings

FAST_RETRIES: dict[str, Any] = {
    "connect_timeout_seconds": 2,
    "read_timeout_seconds": 5,
    "retry_deadline_seconds": 10,
    "max_attempts": 5,
    "backoff_initial_seconds": 0.002,
    "backoff_max_seconds": 0.02,
    "rate_limit_per_second": 10_000,
    "max_concurrency": 32,
    "breaker_failure_threshold": 50,
    "breaker_reset_seconds": 0.5,
}


def fast_mm_settings(base_url: str, api_key: str, **overrides: Any) -> MMSettings:
    """MMSettings for tests: the given server and key, millisecond backoff, ``overrides`` on top."""
    return MMSettings(base_url=base_url, api_key=SecretStr(api_key), **{**FAST_RETRIES, **overrides})


@pytest.fixture
def mm_simulator() -> Iterator[MMSimulator]:
    """A started simulator on a free loopback port (any machine id accepted, seeded); stopped after."""
    with MMSimulator(seed=1234) as sim:
        yield sim


@pytest.fixture
def mm_settings(mm_simulator: MMSimulator) -> MMSettings:
    return fast_mm_settings(mm_simulator.base_url, mm_simulator.api_key)


@pytest.fixture
def mm_client(mm_settings: MMSettings) -> Iterator[MMClient]:
    with MMClient(mm_settings) as client:
        yield client
