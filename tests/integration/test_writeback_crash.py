"""Crash safety of write-back: a real `erpsync writeback` process killed at each dangerous step.

The order is MM read -> intent -> ERP commit -> state commit. Killed before the ERP commit, the ERP
keeps its old values; killed after it, the ERP is ahead of erpsync's state, and MM may count on
before the re-run (the ERP then holds neither what erpsync last recorded nor MM's new value, but
erpsync's own write in doubt). Either way a re-run must leave the ERP holding exactly MM's counts
(nothing lost, nothing doubled), erpsync's state agreeing, and no false conflict.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from erpsync.adapters.erp.sinks.staging import StagingSink, install_staging
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import MMSettings
from erpsync.observability.crashpoints import CRASH_ENV_VAR, CRASH_EXIT_CODE
from erpsync.service.writeback import WritebackPolicy, run_writeback
from tests.integration.writeback_support import (
    TABLE,
    audits,
    bind_run,
    last_written,
    quarantine,
    settings_for,
    staging_counts,
    start_run,
)
from tests.sync_helpers import wait_for_a_request

RUNS = ("r1", "r2", "r3", "r4")


@pytest.fixture
def erp(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    install_staging(engine, TABLE)
    yield engine
    engine.dispose()


def write_config(path: Path, *, state_url: str, erp_url: str, sim: MMSimulator, batch_size: int) -> Path:
    config = path / "erpsync.toml"
    config.write_text(
        f"""
[state]
url = {json.dumps(state_url)}

[mm]
base_url = {json.dumps(sim.base_url)}
api_key = {json.dumps(sim.api_key)}
rate_limit_per_second = 10000
max_concurrency = 4
backoff_initial_seconds = 0.01
backoff_max_seconds = 0.05

[writeback]
sink = "staging"
batch_size = {batch_size}

[writeback.database]
url = {json.dumps(erp_url)}

[service]
lease_ttl_seconds = 1
lease_renew_seconds = 0.3

[logging]
format = "json"
level = "WARNING"
""",
        encoding="utf-8",
    )
    return config


def erpsync(config: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
    env["ERPSYNC_CONFIG"] = str(config)
    if crash_at:
        env[CRASH_ENV_VAR] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "erpsync", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> int:
    out, err = process.communicate(timeout=120)
    if process.returncode not in (0, CRASH_EXIT_CODE, -signal.SIGKILL):
        pytest.fail(f"erpsync writeback exited {process.returncode}\n{out}\n{err}")
    return process.returncode


def rerun(config: Path) -> int:
    """Run `erpsync writeback` again once the killed process's leader lease (1 s TTL) expired."""
    time.sleep(1.2)
    for _ in range(20):
        process = erpsync(config, "writeback")
        out, err = process.communicate(timeout=120)
        if process.returncode == 1 and "another erpsync instance leads" in err:
            time.sleep(0.25)
            continue
        if process.returncode != 0:
            pytest.fail(f"erpsync writeback exited {process.returncode}\n{out}\n{err}")
        return process.returncode
    pytest.fail("the killed process's lease never expired")


def seed_and_write_once(
    store: StateStore, erp: Engine, sim: MMSimulator, client: MMClient, mm: MMSettings
) -> dict[str, tuple[int, int, int, int]]:
    """Four runs written once, then grown in MM: the cycle under test has something to change."""
    for n, run_id in enumerate(RUNS, start=1):
        start_run(client, run_id)
        sim.set_counts(run_id, total=10 * n)
        bind_run(store, run_id)
    run_writeback(
        SqlUnitOfWorkFactory(store),
        client,
        StagingSink(erp, TABLE),
        WritebackPolicy.from_settings(settings_for(str(erp.url), mm)),
    )
    expected = {}
    for n, run_id in enumerate(RUNS, start=1):
        sim.set_counts(run_id, total=10 * n + 5, scrap=1)
        expected[run_id] = (10 * n + 5, 10 * n + 4, 1, 0)
    return expected


def assert_converged(store: StateStore, erp: Engine, expected: dict[str, tuple[int, int, int, int]]) -> None:
    assert staging_counts(erp) == expected  # nothing lost, nothing doubled
    assert last_written(store) == expected  # erpsync's state agrees with the ERP
    assert audits(store, outcome="conflict") == [] and quarantine(store) == []


@pytest.mark.parametrize(
    ("backend", "crash_at", "mm_counts_on"),
    [
        ("sqlite", "writeback.before_erp_write", False),
        ("sqlite", "writeback.before_erp_commit", False),
        ("sqlite", "writeback.after_erp_commit", False),
        ("sqlite", "writeback.after_erp_commit", True),
        ("postgresql", "writeback.after_erp_commit", True),
        ("mariadb", "writeback.after_erp_commit", True),
    ],
    indirect=["backend"],
)
def test_killed_around_the_erp_commit_loses_nothing_and_doubles_nothing(
    erp: Engine,
    sqlite_url: str,
    sqlite_state_store: StateStore,
    tmp_path: Path,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
    crash_at: str,
    mm_counts_on: bool,
) -> None:
    store = sqlite_state_store
    expected = seed_and_write_once(store, erp, mm_simulator, mm_client, mm_settings)
    before = staging_counts(erp)
    config = write_config(
        tmp_path,
        state_url=sqlite_url,
        erp_url=erp.url.render_as_string(hide_password=False),
        sim=mm_simulator,
        batch_size=2,
    )

    assert finish(erpsync(config, "writeback", crash_at=crash_at)) == CRASH_EXIT_CODE
    after_crash = staging_counts(erp)
    changed = {run for run in RUNS if after_crash[run] != before[run]}
    erp_ahead = crash_at == "writeback.after_erp_commit"
    if not erp_ahead:
        assert changed == set()  # nothing reached the ERP, or the open transaction died with the process
    else:
        assert len(changed) == 2 and all(after_crash[run] == expected[run] for run in changed)
        assert all(last_written(store)[run] == before[run] for run in changed)  # state is behind the ERP
    if mm_counts_on:  # the machines kept running while erpsync was down
        for n, run_id in enumerate(RUNS, start=1):
            mm_simulator.set_counts(run_id, total=10 * n + 9, scrap=2)
            expected[run_id] = (10 * n + 9, 10 * n + 7, 2, 0)

    assert rerun(config) == 0
    assert_converged(store, erp, expected)
    outcomes = {a.mm_run_id: a.outcome for a in audits(store)[len(RUNS) :]}
    if not erp_ahead or mm_counts_on:
        assert outcomes == dict.fromkeys(RUNS, "written")
    else:
        assert sorted(outcomes.values()) == ["already_written", "already_written", "written", "written"]
        assert {run for run, outcome in outcomes.items() if outcome == "already_written"} == changed
    if erp_ahead and mm_counts_on:  # erpsync's own write in doubt was recognised as its own
        audited = {a.mm_run_id: a for a in audits(store)[len(RUNS) :]}
        for run in changed:
            assert audited[run].before_json is not None
            erp_before = json.loads(audited[run].before_json)
            columns = ("TOTAL_QTY", "GOOD_QTY", "SCRAP_QTY", "NONCONFORM_QTY")
            assert tuple(erp_before[c] for c in columns) == after_crash[run]


def test_killed_after_a_batch_state_commit_resumes_with_the_rest(
    sqlite_url: str,
    sqlite_state_store: StateStore,
    tmp_path: Path,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    erp = create_db_engine(f"sqlite:///{tmp_path / 'erp.db'}")
    install_staging(erp, TABLE)
    store = sqlite_state_store
    expected = seed_and_write_once(store, erp, mm_simulator, mm_client, mm_settings)
    config = write_config(
        tmp_path, state_url=sqlite_url, erp_url=str(erp.url), sim=mm_simulator, batch_size=2
    )
    assert finish(erpsync(config, "writeback", crash_at="writeback.after_state_commit")) == CRASH_EXIT_CODE
    assert sum(last_written(store)[run] == expected[run] for run in RUNS) == 2
    assert rerun(config) == 0
    assert_converged(store, erp, expected)
    assert [a.outcome for a in audits(store)[len(RUNS) :]] == ["written"] * 4
    erp.dispose()


def test_sigkill_at_a_random_moment_then_rerun_converges(
    sqlite_url: str,
    sqlite_state_store: StateStore,
    tmp_path: Path,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
) -> None:
    erp = create_db_engine(f"sqlite:///{tmp_path / 'erp.db'}")
    install_staging(erp, TABLE)
    store = sqlite_state_store
    expected = {}
    for n in range(40):
        run_id = f"run-{n:02d}"
        start_run(mm_client, run_id)
        mm_simulator.set_counts(run_id, total=n + 1)
        bind_run(store, run_id)
        expected[run_id] = (n + 1, n + 1, 0, 0)
    mm_simulator.set_faults(Fault("latency", operations=frozenset({"get"}), latency_ms=40))
    config = write_config(
        tmp_path, state_url=sqlite_url, erp_url=str(erp.url), sim=mm_simulator, batch_size=5
    )
    seen = mm_simulator.stats()["requests"]
    process = erpsync(config, "writeback")
    wait_for_a_request(mm_simulator, seen, process)
    time.sleep(random.uniform(0.0, 0.25))  # 40 reads at 40 ms, 4 at a time: >= 0.4 s of reading
    process.send_signal(signal.SIGKILL)
    assert finish(process) == -signal.SIGKILL, "the kill came after the cycle ended"
    assert rerun(config) == 0
    assert_converged(store, erp, expected)
    erp.dispose()
