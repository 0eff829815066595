"""Every preset statement compiles for SQL Server, PostgreSQL, MySQL/MariaDB and SQLite.

There is no SQL Server on the dev machines, so the mssql dialect (pymssql driver) is exercised by
compiling; the same statements run for real on the other three in test_visual_source.py.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect

from erpsync.adapters.erp import visual_statements as vs
from erpsync.adapters.erp.statements import erp_statements
from erpsync.adapters.erp.visual_schema import VISUAL_TABLES
from erpsync.adapters.erp.visual_statements import preset_statements
from erpsync.config import Settings, SourceSettings, VisualPresetSettings, WritebackSettings

DIALECTS: dict[str, Dialect] = {
    "mssql": mssql.pymssql.dialect(),  # type: ignore[no-untyped-call]
    "postgresql": postgresql.psycopg.dialect(),  # type: ignore[no-untyped-call]
    "mysql": mysql.pymysql.dialect(),
    "sqlite": sqlite.pysqlite.dialect(),
}
SETTINGS = [VisualPresetSettings(), VisualPresetSettings(site_id="MAIN", schema_name="dbo")]
KNOWN_COLUMNS = {(t.name, c.name) for t in VISUAL_TABLES for c in t.columns}
SAMPLE = {
    "ids": [1, 2, 3],
    "after": 100,
    "closed_since": datetime(2024, 1, 1),
    "site_id": "MAIN",
    "wo_statuses": ["R", "F"],
    "op_excluded": ["C", "X"],
}


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "site"])
def test_every_statement_compiles(dialect_name: str, settings: VisualPresetSettings) -> None:
    dialect = DIALECTS[dialect_name]
    statements = preset_statements(settings)
    assert set(statements) == {"runs", "latest_id", "known_tickets", "new_tickets", "lookup", "operations"}
    for name, statement in statements.items():
        bound = statement.params(**SAMPLE)
        sql = str(bound.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}))
        assert "LABOR_TICKET" in sql or name == "operations"
        assert "OPERATION" in sql or name == "latest_id"
        assert "SELECT" in sql.upper()
        if settings.site_id and name not in ("lookup", "latest_id"):  # ticket ids are unique across sites
            assert "SITE_ID" in sql
        # no column wrapped in a function (an index on it would be unusable) where the database
        # ignores trailing blanks itself; SQLite (tests, demo) compares trimmed
        assert ("RTRIM(" in sql.upper()) == (dialect_name == "sqlite" and name == "operations")
        if dialect_name == "mssql":
            assert "[" in sql or '"' not in sql  # bracket/plain quoting, never PG-style


def test_statements_only_use_columns_of_the_visual_schema() -> None:
    """Case 15: public 'Visual' queries name columns that do not exist; ours must not."""
    for name, statement in preset_statements(VisualPresetSettings(site_id="X")).items():
        if name == "latest_id":
            continue
        for column in statement.selected_columns:
            for base in column.base_columns:
                table = getattr(base, "table", None)
                if table is not None and getattr(table, "name", None):
                    assert (table.name, base.name) in KNOWN_COLUMNS


def test_expanding_lookup_renders_bound_parameters() -> None:
    lookup = preset_statements(VisualPresetSettings())["lookup"]
    compiled = lookup.compile(dialect=DIALECTS["mssql"])
    assert "ids" in compiled.params
    assert "__[POSTCOMPILE_ids]" in str(compiled)


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "site"])
def test_rows_are_unpacked_by_the_positions_the_statements_select(settings: VisualPresetSettings) -> None:
    """The source reads rows by position for speed: the positions must name the right columns."""
    statements = preset_statements(settings)
    for name in ("runs", "known_tickets", "new_tickets", "lookup"):
        columns = list(statements[name].selected_columns.keys())
        assert columns[0] == "TRANSACTION_ID"
        assert columns[vs.TICKET_COLUMNS - 1] == "OP_SEQUENCE_NO"
        assert columns[vs.TICKET_COLUMNS - 3 : vs.TICKET_COLUMNS - 1] == ["CLOCK_IN", "CLOCK_OUT"]
        standards = columns[vs.TICKET_COLUMNS :]
        assert len(standards) == len(vs.OP_COLUMNS) == 12
        assert standards[vs.OP_RESOURCE] == "OP_RESOURCE_ID"
        assert (standards[vs.OP_SERVICE], standards[vs.OP_VENDOR]) == ("SERVICE_ID", "VENDOR_ID")
        assert standards[-1] == "PART_DESCRIPTION"
    columns = list(statements["operations"].selected_columns.keys())
    assert columns[vs.OPERATION_KEY_COLUMNS - 1] == "OP_SEQUENCE_NO"
    assert (
        columns[vs.OPERATION_KEY_COLUMNS :]
        == list(statements["runs"].selected_columns.keys())[vs.TICKET_COLUMNS :]
    )


URLS = {
    "mssql": "mssql+pymssql://u@h/VMFG",
    "postgresql": "postgresql+psycopg://u@h/vmfg",
    "mysql": "mysql+pymysql://u@h/vmfg",
    "sqlite": "sqlite:////tmp/vmfg.db",
}


@pytest.mark.parametrize("dialect_name", list(URLS))
@pytest.mark.parametrize("sink", ["visual-labor-ticket", "staging", "none"])
def test_erpsync_sources_sql_renders_every_statement(dialect_name: str, sink: str) -> None:
    """`erpsync sources sql` lists the preset's statements and the sink's, in the ERP's dialect."""
    settings = Settings(
        source=SourceSettings(url=URLS[dialect_name], kind="infor-visual"),
        writeback=WritebackSettings(sink=sink),  # type: ignore[arg-type]
    )
    found = {s.name: s for s in erp_statements(settings)}
    assert set(found) >= set(preset_statements(VisualPresetSettings()))
    assert {s.job for s in found.values()} >= {"sync", "import"}
    if sink == "visual-labor-ticket":
        assert "UPDATE" in found["update_ticket"].sql
        if dialect_name in ("postgresql", "mysql"):
            assert "FOR UPDATE" in found["lock_tickets"].sql
    for statement in found.values():
        assert "POSTCOMPILE" not in statement.sql and "SCHEMA__" not in statement.sql
