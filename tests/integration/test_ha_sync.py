"""Two `erpsync serve` processes doing real work: kill -9 and pause the leader mid-traffic.

The state database is PostgreSQL; the ERP is a VISUAL-schema SQLite file whose operators clock in
and out; MM is the simulator with latency, so the leader is killed with actions in flight. After
takeovers, every ERP run is in MM exactly once on the right machine, and a resumed ex-leader's
stale fencing token never acts again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import SyncAction
from erpsync.runtime.leader import LeaderLease
from tests.integration.test_service_lifecycle import RETRY, TTL, Serve, wait_for
from tests.sync_helpers import Shop, assert_converged, local, write_config


@pytest.fixture
def processes() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for process in started:
        process.kill()


def test_leader_killed_and_paused_mid_traffic_no_action_sent_twice(
    pg_url: str, tmp_path: Path, processes: list[Serve]
) -> None:
    store = StateStore(create_db_engine(pg_url))
    migrate.upgrade(store.engine)
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=6)
    watcher = LeaderLease(store.engine, holder="test-watcher", ttl_seconds=TTL)

    def leader_name() -> str:
        status = watcher.status()
        return (status.holder or "").split("#")[0] if status.held else ""

    def actions_with_token(token: int) -> int:
        with store.session() as session:
            return session.scalar(select(func.count()).where(SyncAction.fencing_token == token)) or 0

    with MMSimulator(seed=8) as sim:
        config = write_config(
            tmp_path / "erpsync.toml",
            erp_url,
            pg_url,
            sim,
            sections={
                "sync": {"interval_seconds": 0.5},
                "writeback": {"sink": "visual-labor-ticket", "interval_seconds": 1},
            },
            max_concurrency=2,
        )
        sim.set_faults({"kind": "latency", "latency_ms": 250})
        tickets = {m: shop.fx.clock_in(op, local(6)) for m, op in shop.ops.items()}

        alpha = Serve(config, "alpha", tmp_path)
        processes.append(alpha)
        wait_for(lambda: leader_name() == "alpha", 30, "alpha to lead")
        bravo = Serve(config, "bravo", tmp_path)
        processes.append(bravo)
        wait_for(lambda: bravo.role() == "standby", 30, "bravo on standby")
        wait_for(lambda: len(sim.runs()) >= 1, 30, "alpha to start sending")
        alpha.proc.kill()  # kill -9 with starts still in flight
        alpha.proc.wait(10)
        took = wait_for(lambda: leader_name() == "bravo", 15, "bravo to take over")
        assert took <= TTL + RETRY + 1.5

        open_runs = {f"erp:LT{t}": m for m, t in tickets.items()}
        wait_for(lambda: set(open_runs) <= set(sim.runs()), 40, "bravo to finish the starts")

        charlie = Serve(config, "charlie", tmp_path)
        processes.append(charlie)
        wait_for(lambda: charlie.role() == "standby", 30, "charlie on standby")
        os.kill(bravo.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: leader_name() == "charlie", 15, "charlie to take over a paused bravo")
            charlie_token = watcher.status().token
            bravo_actions = actions_with_token(charlie_token - 1)
            closed = {f"erp:LT{tickets[m]}" for m in ("HAAS-2", "HAAS-5")}
            for machine in ("HAAS-2", "HAAS-5"):  # operators clock out while bravo sleeps
                shop.fx.clock_out(tickets[machine], local(7))
                del open_runs[f"erp:LT{tickets[machine]}"]
            wait_for(
                lambda: all(sim.runs()[f"erp:LT{tickets[m]}"]["end_at"] for m in ("HAAS-2", "HAAS-5")),
                30,
                "charlie to stop the closed runs",
            )
        finally:
            os.kill(bravo.proc.pid, signal.SIGCONT)
        wait_for(lambda: "leader lease lost" in bravo.logs(), 15, "the resumed bravo to step down")
        time.sleep(2)  # give a misbehaving ex-leader every chance to act
        assert actions_with_token(charlie_token - 1) == bravo_actions, "a stale leader journaled actions"
        assert leader_name() == "charlie"
        sim.set_faults()
        time.sleep(2)
        assert_converged(sim, store, open_runs, closed)
        for process in (charlie, bravo):
            process.proc.send_signal(signal.SIGTERM)
            assert process.proc.wait(10) == 0
    shop.dispose()
    store.dispose()
