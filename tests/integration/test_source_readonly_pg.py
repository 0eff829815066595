"""The VISUAL source reads PostgreSQL as a SELECT-only role, and its own sessions refuse writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from erpsync.adapters.erp.visual_schema import PART, create_visual_schema, metadata
from erpsync.adapters.erp.visual_source import VisualSource
from erpsync.config import SourceSettings, VisualPresetSettings
from erpsync.demo.visual_fixture import VisualFixture
from erpsync.domain.model import JobOperationRun, RunState

NOW = datetime(2024, 3, 12, 12, 0, tzinfo=UTC)


def _seed(url: str, schema: str | None = None) -> int:
    engine = create_engine(url)
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = engine.execution_options(schema_translate_map={None: schema})
    create_visual_schema(engine)
    fx = VisualFixture(engine)
    fx.add_resource("HAAS-VF2")
    wo = fx.add_work_order("1808412", part_id=None, desired_qty=10)
    op = fx.add_operation(wo, 10, "HAAS-VF2", run=1, run_type="MIN/PC")
    tid = fx.clock_in(op, datetime(2024, 3, 12, 6, 0))
    engine.dispose()
    return tid


def _settings(url: str, **visual: Any) -> SourceSettings:
    settings = SourceSettings(url=url, name="visual", kind="infor-visual", timezone="UTC")
    settings.visual = VisualPresetSettings(**visual)
    return settings


def test_reads_as_a_select_only_role(pg_url: str) -> None:
    tid = _seed(pg_url)
    role = f"erpsync_ro_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    database = make_url(pg_url).database
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            conn.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {role}"))
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
            conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        ro_url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        source = VisualSource(_settings(ro_url), clock=lambda: NOW)
        try:
            runs = [i for i in source.read_runs() if isinstance(i, JobOperationRun)]
            ops = list(source.read_operations())
            assert [r.run_key for r in runs] == [f"LT{tid}"]
            assert runs[0].state is RunState.PRODUCTION
            assert len(ops) == 1
            with pytest.raises(DBAPIError) as err, source.engine.begin() as conn:
                conn.execute(insert(PART).values(ID="X"))
            assert "read-only transaction" in str(err.value) or "permission denied" in str(err.value)
        finally:
            source.close()
        # The role itself cannot write even outside erpsync's read-only sessions.
        plain = create_engine(ro_url)
        with pytest.raises(DBAPIError, match="permission denied"), plain.begin() as conn:
            conn.execute(insert(PART).values(ID="X"))
        plain.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_source_sessions_are_read_only_even_for_a_superuser(pg_url: str) -> None:
    _seed(pg_url)
    source = VisualSource(_settings(pg_url), clock=lambda: NOW)
    try:
        with pytest.raises(DBAPIError, match="read-only transaction"), source.engine.begin() as conn:
            conn.execute(insert(PART).values(ID="X"))
        assert len(list(source.read_runs())) == 1
    finally:
        source.close()
    check = create_engine(pg_url)
    with check.connect() as conn:
        assert conn.execute(text('SELECT count(*) FROM "PART"')).scalar() == 0
    check.dispose()


def test_schema_name_reads_tables_in_another_schema(pg_url: str) -> None:
    tid = _seed(pg_url, schema="dbo")
    source = VisualSource(_settings(pg_url, schema_name="dbo"), clock=lambda: NOW)
    try:
        runs = [i.run_key for i in source.read_runs() if isinstance(i, JobOperationRun)]
    finally:
        source.close()
    assert runs == [f"LT{tid}"]
    assert metadata.tables["LABOR_TICKET"].schema is None  # the shared metadata is untouched


def test_streamed_reads_are_planned_for_the_whole_result(pg_url: str) -> None:
    """A server-side cursor would otherwise be planned for its first 10% of rows (a full PK walk)."""
    _seed(pg_url)
    source = VisualSource(_settings(pg_url), clock=lambda: NOW)
    try:
        with source.engine.connect() as conn:
            assert conn.execute(text("SHOW cursor_tuple_fraction")).scalar() == "1"
            assert conn.execute(text("SHOW transaction_read_only")).scalar() == "on"
    finally:
        source.close()
