"""Issue #15 case 8 (last point): an open circuit breaker's message keeps the underlying error.

MM on a refused port: the first action's attempts fail and open the breaker, the next actions are
refused by it. Their audit rows and journal entries used to say only "calls paused for another
59.7s"; now they also say what failed last and where (connection refused, and the URL). On every
state backend, through a real sync cycle.
"""

from __future__ import annotations

import socket
from pathlib import Path

from sqlalchemy import select

from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, SyncAction
from erpsync.config import ServiceSettings, Settings, SourceSettings, StateSettings
from tests.fixtures_mm import fast_mm_settings
from tests.sync_helpers import ERP_TZ, Shop, local, sync_cycle


def refused_url() -> str:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_paused_calls_say_the_last_failure_and_its_url(
    database_url: str, state_store: StateStore, tmp_path: Path
) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'erp.db'}", machines=3)
    for op in shop.ops.values():
        shop.fx.clock_in(op, local(8))
    url = refused_url()
    settings = Settings(
        state=StateSettings(url=database_url),
        mm=fast_mm_settings(
            url, "k-breaker-test", max_attempts=2, max_concurrency=1, breaker_failure_threshold=2
        ),
        source=SourceSettings(
            kind="infor-visual", url=shop.engine.url.render_as_string(False), timezone=ERP_TZ
        ),
        service=ServiceSettings(lease_ttl_seconds=5, lease_renew_seconds=1, lease_retry_seconds=0.5),
    )

    summary = sync_cycle(settings, state_store)

    assert summary.started == 0 and summary.retried + summary.not_sent == 3
    with state_store.session() as session:
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "start_run")))
        actions = list(session.scalars(select(SyncAction)))
    paused = [r for r in rows if "calls paused" in (r.error_message or "")]
    assert paused, [r.error_message for r in rows]
    for row in paused:
        message = row.error_message or ""
        assert (row.outcome, row.error_class) == ("retrying", "MMCircuitOpenError")
        assert "after 2 consecutive failures" in message
        assert "last: network error (ConnectError" in message and "Connection refused" in message
        assert f"talking to {url}" in message
    refused_first = [r for r in rows if r not in paused]
    assert refused_first and all("Connection refused" in (r.error_message or "") for r in refused_first)
    paused_actions = [a for a in actions if "calls paused" in (a.error_message or "")]
    assert paused_actions and all(
        f"Connection refused) talking to {url}" in (a.error_message or "") for a in paused_actions
    )
    shop.dispose()
