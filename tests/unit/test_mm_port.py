"""`MMClient` and `FakeMachineMetrics` both are the service's `MachineMetrics` port.

The assignments are checked by mypy (``uv run mypy tests/unit/test_mm_port.py``); at run time the
test compares the signatures, so a drift between the port and an implementation fails here too.
"""

from __future__ import annotations

import inspect

import pytest
from pydantic import SecretStr

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.config import MMSettings
from erpsync.service.ports import MachineMetrics

OPERATIONS = ("start_job_run", "stop_job_run", "get_job_run", "import_jobs")


def test_mm_client_is_the_port() -> None:
    with MMClient(MMSettings(base_url="http://127.0.0.1:9", api_key=SecretStr("k"))) as client:
        port: MachineMetrics = client
        assert port is client


def test_the_fake_is_the_port() -> None:
    fake = FakeMachineMetrics()
    port: MachineMetrics = fake
    assert port is fake


@pytest.mark.parametrize("implementation", [MMClient, FakeMachineMetrics])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_signatures_match_the_port(implementation: type, operation: str) -> None:
    assert inspect.signature(getattr(implementation, operation)) == inspect.signature(
        getattr(MachineMetrics, operation)
    )
