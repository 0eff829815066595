"""The misbehaving proxy (tests/mm_proxy.py) itself: faithful by default, each rule as documented."""

from __future__ import annotations

import time

import httpx
import pytest

from erpsync.adapters.mm.simulator import MMSimulator
from tests.mm_proxy import HTML_PAGE, MisbehavingProxy, Rule, operation_of

START = {"erpJobOperationRunId": "erp:P1", "erpMachineId": "M1", "jobName": "J1"}


@pytest.fixture
def proxied(mm_simulator: MMSimulator):  # type: ignore[no-untyped-def]
    with MisbehavingProxy(mm_simulator.base_url) as proxy:
        headers = {"Authorization": f"Bearer {mm_simulator.api_key}"}
        with httpx.Client(base_url=proxy.url, headers=headers, timeout=10) as client:
            yield mm_simulator, proxy, client


def test_operations_are_told_by_method_and_path() -> None:
    assert operation_of("POST", "/erp/jobdispatch/start") == "start"
    assert operation_of("POST", "/erp/jobdispatch/stop") == "stop"
    assert operation_of("POST", "/erp/jobs/import?type=mm") == "import"
    assert operation_of("GET", "/erp/jobdispatch/erp%3AP1") == "get"


def test_unarmed_it_forwards_everything(proxied) -> None:  # type: ignore[no-untyped-def]
    sim, proxy, client = proxied
    assert client.post("/erp/jobdispatch/start", json=START).status_code == 200
    answer = client.get("/erp/jobdispatch/erp%3AP1")
    assert answer.status_code == 200 and answer.json()["endAt"] is None
    assert "erp:P1" in sim.runs()
    assert [c.forwarded for c in proxy.calls] == [True, True]


def test_instead_answers_without_mm_seeing_the_request(proxied) -> None:  # type: ignore[no-untyped-def]
    sim, proxy, client = proxied
    proxy.arm(Rule("start", times=1))
    answer = client.post("/erp/jobdispatch/start", json=START)
    assert (answer.status_code, answer.content) == (200, HTML_PAGE)
    assert answer.headers["content-type"].startswith("text/html")
    assert "erp:P1" not in sim.runs()
    assert client.post("/erp/jobdispatch/start", json=START).status_code == 200  # times=1: spent
    assert "erp:P1" in sim.runs()


def test_after_lets_mm_apply_then_replaces_the_answer(proxied) -> None:  # type: ignore[no-untyped-def]
    sim, proxy, client = proxied
    proxy.arm(Rule("start", when="after", status=502, body=b"Bad Gateway", content_type="text/plain"))
    assert client.post("/erp/jobdispatch/start", json=START).status_code == 502
    assert "erp:P1" in sim.runs()


def test_trickle_sends_one_byte_at_a_time(proxied) -> None:  # type: ignore[no-untyped-def]
    _, proxy, client = proxied
    proxy.arm(Rule("get", status=200, body=b"null", content_type="application/json", trickle_seconds=0.01))
    began = time.monotonic()
    answer = client.get("/erp/jobdispatch/x")
    assert answer.status_code == 200 and answer.content == b"null"
    assert time.monotonic() - began > 0.5  # ~80 bytes of head and body, 10 ms each
