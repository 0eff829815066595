"""SIGTERM in the middle of a sync cycle: exit 0 within 10 s, the journal consistent, nothing lost."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, SyncAction
from tests.integration.test_service_lifecycle import Serve, wait_for
from tests.sync_helpers import Shop, assert_converged, converge, local, write_config


def test_sigterm_mid_cycle_exits_0_within_10s_and_journal_stays_consistent(tmp_path: Path) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    shop = Shop(erp_url, machines=10)
    store = StateStore(create_db_engine(state_url))
    migrate.upgrade(store.engine)
    with MMSimulator(seed=21) as sim:
        config = write_config(
            tmp_path / "erpsync.toml",
            erp_url,
            state_url,
            sim,
            sections={"sync": {"interval_seconds": 1}},
            max_concurrency=2,
        )
        sim.set_faults({"kind": "latency", "latency_ms": 400})  # 10 starts take ~2 s at concurrency 2
        tickets = {m: shop.fx.clock_in(op, local(6)) for m, op in shop.ops.items()}
        serve = Serve(config, "sigterm", tmp_path)
        try:
            wait_for(lambda: len(sim.runs()) >= 1, 60, "the first start to reach MM")
            began = time.monotonic()
            serve.proc.send_signal(signal.SIGTERM)
            assert serve.proc.wait(10) == 0
            assert time.monotonic() - began < 10
        finally:
            serve.kill()
        assert len(sim.runs()) < len(tickets), "the cycle had finished before SIGTERM: nothing tested"

        with store.session() as session:
            statuses = Counter(session.scalars(select(SyncAction.status)))
            assert set(statuses) <= {"succeeded", "pending"}, statuses
            settled = set(session.scalars(select(SyncAction.id).where(SyncAction.status == "succeeded")))
            audited = dict(
                session.execute(
                    select(AuditEntry.action_id, func.count())
                    .where(AuditEntry.action_id.is_not(None))
                    .group_by(AuditEntry.action_id)
                ).all()
            )
        assert set(audited) == settled, "every settled action has its audit row, no other has one"
        assert all(n == 1 for n in audited.values())

        converge(config)
        assert_converged(sim, store, {f"erp:LT{t}": m for m, t in tickets.items()}, set())
    shop.dispose()
    store.dispose()
