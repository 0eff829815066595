"""A `generic-sql` query cannot write to the ERP, whatever it says, on SQLite, PostgreSQL and MariaDB.

Two independent guards, each proven alone:
- `config check` (and every command, since all load the config first) refuses anything but exactly
  one read-only SELECT, parsed with sqlglot: exit 2 naming `source.generic.query`;
- the source's read-only session: the same hostile queries, slipped past the config check, are
  refused by the database itself (no second statement can be sent, a write is refused), surface as
  a ConfigError naming the key, and the ERP rows are untouched afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from erpsync.adapters.erp.generic_source import GenericSqlSource
from erpsync.adapters.erp.readonly_sql import read_only_select_problem
from erpsync.adapters.erp.sql_engine import create_source_engine
from erpsync.cli.app import app
from erpsync.config import GenericMappingSettings, SourceSettings
from erpsync.domain.errors import ConfigError

runner = CliRunner()
COLUMNS = {"job": "job", "operation": "operation", "machine": "machine", "start_at": "start_at"}
ROWS = [("W-100", 10, "HAAS-1"), ("W-101", 20, "HAAS-2"), ("W-102", 30, "MAZAK")]
SELECT = "SELECT job, operation, machine, start_at FROM job_ops"
BENIGN = SELECT

STACKED_COMMIT_DELETE = (
    f"{SELECT}) x; COMMIT; DELETE FROM job_ops; SELECT * FROM ({SELECT}"  # closes erpsync's own "("
)
STACKED_READ_WRITE = (
    f"{SELECT}) x; COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; "
    f"SET SESSION TRANSACTION READ WRITE; PRAGMA query_only = OFF; DELETE FROM job_ops; "
    f"SELECT * FROM ({SELECT}"
)
COMMON_HOSTILE = {
    "stacked COMMIT then DELETE": STACKED_COMMIT_DELETE,
    "stacked session read-write then DELETE": STACKED_READ_WRITE,
    "a bare COMMIT": "COMMIT",
    "two statements": f"{SELECT}; DELETE FROM job_ops",
    "writable CTE": (
        "WITH d AS (DELETE FROM job_ops RETURNING job, operation, machine, start_at) SELECT * FROM d"
    ),
    "SELECT ... INTO a table": "SELECT job, operation, machine, start_at INTO stolen FROM job_ops",
    "FOR UPDATE": f"{SELECT} FOR UPDATE",
}
HOSTILE = {
    "postgresql": {
        **COMMON_HOSTILE,
        "nextval": "SELECT CAST(nextval('erp_seq') AS VARCHAR(10)) AS job, 10 AS operation, "
        "'HAAS-1' AS machine, NULL AS start_at",
        "a function that writes": "SELECT erp_write() AS job, 10 AS operation, 'HAAS-1' AS machine, "
        "NULL AS start_at",
    },
    "mariadb": {
        **COMMON_HOSTILE,
        "nextval": "SELECT nextval(erp_seq) AS job, 10 AS operation, 'HAAS-1' AS machine, NULL AS start_at",
        "SELECT ... INTO a variable": f"{SELECT} INTO @a, @b, @c, @d",
        "a function that writes": "SELECT erp_write() AS job, 10 AS operation, 'HAAS-1' AS machine, "
        "NULL AS start_at",
    },
    # SQLite has no sequences and no SQL-defined functions: nothing else can write from a SELECT
    "sqlite": dict(COMMON_HOSTILE),
}


def _create_erp(url: str, backend: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE job_ops (job VARCHAR(20) PRIMARY KEY, operation INTEGER, "
                "machine VARCHAR(20), start_at TIMESTAMP NULL)"
            )
        )
        for job, op, machine in ROWS:
            conn.execute(
                text("INSERT INTO job_ops (job, operation, machine, start_at) VALUES (:j, :o, :m, NULL)"),
                {"j": job, "o": op, "m": machine},
            )
        if backend == "postgresql":
            conn.execute(text("CREATE SEQUENCE erp_seq"))
            conn.execute(
                text(
                    "CREATE FUNCTION erp_write() RETURNS VARCHAR AS $$ BEGIN "
                    "DELETE FROM job_ops; INSERT INTO job_ops VALUES ('PWNED', 1, 'X', NULL); "
                    "RETURN 'PWNED'; END $$ LANGUAGE plpgsql"
                )
            )
        if backend == "mariadb":
            conn.execute(text("CREATE SEQUENCE erp_seq"))
            conn.execute(
                text(
                    "CREATE FUNCTION erp_write() RETURNS VARCHAR(10) MODIFIES SQL DATA BEGIN "
                    "DELETE FROM job_ops; INSERT INTO job_ops VALUES ('PWNED', 1, 'X', NULL); "
                    "RETURN 'PWNED'; END"
                )
            )
    engine.dispose()


def _erp_state(url: str, backend: str) -> tuple[list[tuple[str, int, str]], object]:
    """The ERP rows, and the sequence's position: both must be exactly as seeded afterwards."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [
            tuple(r) for r in conn.execute(text("SELECT job, operation, machine FROM job_ops ORDER BY job"))
        ]
        sequence: object = None
        if backend == "postgresql":
            sequence = tuple(conn.execute(text("SELECT last_value, is_called FROM erp_seq")).one())
        elif backend == "mariadb":
            sequence = tuple(conn.execute(text("SELECT next_not_cached_value FROM erp_seq")).one())
        tables = {
            "postgresql": "SELECT count(*) FROM information_schema.tables WHERE table_name = 'stolen'",
            "mariadb": "SELECT count(*) FROM information_schema.tables WHERE table_name = 'stolen' "
            "AND table_schema = DATABASE()",
            "sqlite": "SELECT count(*) FROM sqlite_master WHERE name = 'stolen'",
        }
        assert conn.execute(text(tables[backend])).scalar() == 0
    engine.dispose()
    return rows, sequence  # type: ignore[return-value]


def _settings(url: str, query: str) -> SourceSettings:
    return SourceSettings(
        url=url,
        name="erp",
        kind="generic-sql",
        generic=GenericMappingSettings(query=query, columns=COLUMNS),
    )


@pytest.fixture
def erp(database_url: str, backend: str) -> str:
    _create_erp(database_url, backend)
    return database_url


def test_the_benign_query_reads(erp: str) -> None:
    source = GenericSqlSource(_settings(erp, BENIGN + " ;"))
    try:
        operations = list(source.read_operations())
    finally:
        source.close()
    assert sorted(op.job_name for op in operations) == [job for job, _, _ in ROWS]  # type: ignore[union-attr]


def test_the_read_only_session_refuses_every_hostile_query(erp: str, backend: str) -> None:
    """The execution layer alone: the config check is bypassed, the database still refuses."""
    before = _erp_state(erp, backend)
    for name, query in HOSTILE[backend].items():
        settings = _settings(erp, BENIGN)
        settings.generic.query = query  # past the config check, as a bug elsewhere could do
        source = GenericSqlSource(settings)
        try:
            with pytest.raises(ConfigError, match=r"^source\.generic\.query: ") as refused:
                list(source.read_runs())
                list(source.read_operations())
        finally:
            source.close()
        assert "refused" in str(refused.value), (name, refused.value)
        assert _erp_state(erp, backend) == before, f"{name!r} changed the ERP on {backend}"


def test_a_raw_source_connection_cannot_send_two_statements_or_write(erp: str, backend: str) -> None:
    """The engine itself, with no erpsync SQL around the statement."""
    before = _erp_state(erp, backend)
    engine = create_source_engine(_settings(erp, BENIGN))
    try:
        for statement in (
            "SELECT 1; DELETE FROM job_ops",
            "DELETE FROM job_ops",
            "COMMIT",  # then a write in a new transaction: still read-only
        ):
            try:
                with engine.connect() as conn:
                    conn.execute(text(statement))
                    conn.execute(text("DELETE FROM job_ops"))
                    conn.commit()
            except DBAPIError:
                pass
            else:
                pytest.fail(f"{statement!r} then DELETE was accepted on {backend}")
    finally:
        engine.dispose()
    assert _erp_state(erp, backend) == before


@pytest.mark.parametrize("command", [["config", "check"], ["sources", "check"], ["plan"]])
def test_every_command_refuses_a_hostile_query_with_exit_2(
    erp: str, backend: str, command: list[str], tmp_path: Path
) -> None:
    before = _erp_state(erp, backend)
    config = tmp_path / "erpsync.toml"
    for name, query in HOSTILE[backend].items():
        if command == ["config", "check"] and name == "a function that writes":
            continue  # what a user function does is unknowable without running it: the session refuses
        config.write_text(
            f"[state]\nurl = 'sqlite:///{tmp_path / 'state.db'}'\n"
            "[mm]\napi_key = 'k-123456'\n"
            f"[source]\nurl = '{erp}'\nkind = 'generic-sql'\n"
            "[source.generic]\n"
            f"query = {_toml_string(query)}\n"
            "columns = { job = 'job', operation = 'operation', machine = 'machine' }\n",
            encoding="utf-8",
        )
        result = runner.invoke(app, ["--config", str(config), *command])
        assert result.exit_code == 2, (name, result.output)
        assert "source.generic.query" in result.output, (name, result.output)
        assert "Traceback" not in result.output
    assert _erp_state(erp, backend) == before


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("backend_name", ["postgresql", "mysql", "sqlite", "mssql"])
def test_the_parser_accepts_reads_and_refuses_the_rest(backend_name: str) -> None:
    for query in (
        SELECT,
        f"{SELECT};",
        f"WITH recent AS ({SELECT} WHERE start_at IS NOT NULL) SELECT * FROM recent",
        f"{SELECT} UNION ALL SELECT job, operation, machine, start_at FROM archived_ops",
        f"{SELECT} -- the open operations",
        "SELECT j.job, upper(j.machine) AS machine, coalesce(j.operation, 0) AS operation FROM job_ops j",
    ):
        assert read_only_select_problem(query, backend_name) is None, query
    for query in (
        STACKED_COMMIT_DELETE,
        STACKED_READ_WRITE,
        "COMMIT",
        f"{SELECT}; DELETE FROM job_ops",
        "WITH d AS (DELETE FROM job_ops RETURNING *) SELECT * FROM d",
        "SELECT job INTO stolen FROM job_ops",
        "SELECT nextval('erp_seq') AS job",
        "SELECT setval('erp_seq', 1) AS job",
        "UPDATE job_ops SET machine = 'X'",
        "DROP TABLE job_ops",
        "",
    ):
        problem = read_only_select_problem(query, backend_name)
        assert problem, f"{query!r} accepted for {backend_name}"
