"""Job imports: the job file reaches MM's import endpoint only when its content changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry
from erpsync.bootstrap import open_sync
from erpsync.config import CsvSettings, ImportSettings, Settings, SourceSettings
from erpsync.domain.errors import ConfigError
from erpsync.observability.correlation import correlation
from erpsync.runtime.cli_lease import held_lease
from erpsync.service.imports import ImportResult, run_imports
from tests.sync_helpers import Shop, settings_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "csv"


@pytest.fixture
def state(sqlite_url: str) -> Iterator[StateStore]:
    store = StateStore(create_db_engine(sqlite_url))
    migrate.upgrade(store.engine)
    yield store
    store.dispose()


def imports(settings: Settings, store: StateStore, *, force: bool = False) -> ImportResult:
    with MMClient(settings.mm) as client, correlation("cli"), held_lease(settings, store) as fence:
        service = open_sync(settings, store, fence, client)
        try:
            return run_imports(service, force=force)
        finally:
            service.source.close()


def mm_calls(sim: MMSimulator) -> list[dict[str, object]]:
    return [c for c in sim.calls() if c["operation"] == "import"]


def test_built_job_file_is_uploaded_once_per_content(
    state: StateStore, sqlite_url: str, tmp_path: Path
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=3)
    with MMSimulator(seed=2) as sim:
        settings = settings_for(erp_url, sqlite_url, sim)
        settings.sync.imports = ImportSettings(enabled=True, auto_archive=True)
        first = imports(settings, state)
        assert first.uploaded and first.import_type == "mm" and first.rows == 3
        jobs = sim.jobs()["mm"]
        assert sorted((j["name"], wc) for j in jobs for wc in j["workcenters"]) == [
            ("1808401/1", "HAAS-1"),
            ("1808402/1", "HAAS-2"),
            ("1808403/1", "HAAS-3"),
        ]
        cycle_times = {wc["expectedcycletime"] for j in jobs for wc in j["workcenters"].values()}
        assert cycle_times == {180_000}  # 0.05 HRS/PC in ms

        again = imports(settings, state)
        assert again.unchanged and not again.uploaded
        assert len(mm_calls(sim)) == 1  # unchanged content is not sent again

        wo = shop.fx.add_work_order("1808499", "1", part_id="P-100", desired_qty=10)
        shop.fx.add_operation(wo, 10, "HAAS-1", setup_hrs=1, run=2, run_type="MIN/PC", calc_end_qty=10)
        changed = imports(settings, state)
        assert changed.uploaded and changed.rows == 4
        forced = imports(settings, state, force=True)
        assert forced.uploaded
        assert len(mm_calls(sim)) == 3

        with state.session() as session:
            rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "import_jobs")).all()
            assert [r.outcome for r in rows] == ["succeeded"] * 3
            assert all(r.triggered_by == "cli" for r in rows)
    shop.dispose()


def test_infor_export_passes_through_as_its_own_type(
    state: StateStore, sqlite_url: str, tmp_path: Path
) -> None:
    export = next(iter(sorted(FIXTURES.glob("*.csv"))))
    settings = Settings(
        state={"url": sqlite_url},  # type: ignore[arg-type]
        source=SourceSettings(kind="infor-visual-csv", csv=CsvSettings(path=export, settle_seconds=0)),
    )
    with MMSimulator(seed=9) as sim:
        settings.mm = settings_for("sqlite://", sqlite_url, sim).mm
        settings.sync.imports = ImportSettings(enabled=True, mode="passthrough")
        result = imports(settings, state)
        assert result.uploaded and result.import_type == "inforVisual"
        assert mm_calls(sim)[0]["status"] == 200
        assert imports(settings, state).unchanged


def test_passthrough_needs_a_csv_file(state: StateStore, sqlite_url: str, tmp_path: Path) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    Shop(erp_url, machines=1).dispose()
    with MMSimulator(seed=1) as sim:
        settings = settings_for(erp_url, sqlite_url, sim)
        settings.sync.imports = ImportSettings(enabled=True, mode="passthrough")
        with pytest.raises(ConfigError, match="passthrough"):
            imports(settings, state)
        assert mm_calls(sim) == []
