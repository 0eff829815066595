"""One campaign world: a VISUAL shop, erpsync's state, a simulator and a running `erpsync serve`."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import SyncAction
from tests.campaign.invariants import violations
from tests.campaign.procs import Erpsync, campaign_config
from tests.campaign.shopfloor import ShopFloor
from tests.sync_helpers import Shop

CONVERGE_SECONDS = 20.0  # a trial converges in 2-4 s; a stuck one is a violation
_MIGRATE = threading.Lock()  # alembic keeps global state: one migration at a time per process


def migrated_store(url: str) -> StateStore:
    """A state store on `url`, migrated to head."""
    store = StateStore(create_db_engine(url))
    with _MIGRATE:
        migrate.upgrade(store.engine)
    return store


def make_retries_due(store: StateStore) -> None:
    """Backed-off retries become due at once (a campaign does not wait minutes of backoff)."""
    with store.session() as session:
        session.execute(
            update(SyncAction).where(SyncAction.status == "failed_retryable").values(next_attempt_at=None)
        )


class CampaignWorld:
    """Everything one trial series needs, in one folder; `serve` is started at once.

    `erp_url` (default: a SQLite file in the folder) is where the shop floor writes; erpsync
    connects to `source_url` instead when given (the fault campaign's cutting proxy).
    """

    def __init__(
        self,
        folder: Path,
        seed: int,
        *,
        machines: int = 6,
        latency_ms: float = 0,
        erp_url: str | None = None,
        source_url: str | None = None,
        **mm: Any,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.sim = MMSimulator(seed=seed, time_scale=0.001).start()
        self.latency_ms = latency_ms
        self.base_faults()
        erp_url = erp_url or f"sqlite:///{folder / 'erp.db'}"
        state_url = f"sqlite:///{folder / 'state.db'}"
        self.shop = Shop(erp_url, machines=machines)
        self.store = migrated_store(state_url)
        mm.setdefault("max_concurrency", 2)
        config = campaign_config(folder, erp_url, state_url, self.sim, source_url=source_url, **mm)
        self.erpsync = Erpsync(config, folder / "erpsync.log")
        self.floor = ShopFloor(self.shop)
        self.serve: Any = self.erpsync.start("serve")

    def base_faults(self) -> None:
        """The world's normal MM: only latency (if any)."""
        self.sim.set_faults(
            *([{"kind": "latency", "latency_ms": self.latency_ms}] if self.latency_ms else [])
        )

    def check(self) -> list[str]:
        return violations(self.floor, self.sim, self.store, self.shop.engine)

    def converge(self, timeout: float = CONVERGE_SECONDS) -> tuple[list[str], float]:
        """Wait until every invariant holds; the violations left at the deadline otherwise."""
        began = time.monotonic()
        while True:
            found = self.check()
            waited = time.monotonic() - began
            if not found or waited > timeout:
                return found, waited
            if self.serve is not None and self.serve.poll() is not None:
                self.serve = self.erpsync.start("serve")  # it exited (e.g. lost its lease): restart
            time.sleep(0.25)

    def retries_due_now(self) -> None:
        make_retries_due(self.store)

    def abort(self) -> None:
        """Something went wrong in the campaign itself: stop everything, check nothing."""
        if self.serve is not None:
            Erpsync.kill(self.serve)
            self.serve = None
        self.erpsync.close()
        self.sim.stop()
        self.store.dispose()
        self.shop.dispose()

    def close(self) -> list[str]:
        """Stop the service gracefully and check once more with nothing running."""
        if self.serve is not None:
            Erpsync.stop(self.serve)
            self.serve = None
        found = self.check()
        self.erpsync.close()
        self.sim.stop()
        self.store.dispose()
        self.shop.dispose()
        return found
