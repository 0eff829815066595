"""Messages an IT admin acts on: which database failed, which variable is wrong, which table is missing.

Every database error names the configuration key of the database it came from (erpsync talks to
three), keeps the driver's words readable, and never shows the password.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from erpsync.cli.app import app

runner = CliRunner()
PASSWORD = "pw-Sekret-4711"
# a port nothing listens on: every connection is refused at once
CLOSED = {
    "postgresql": f"postgresql+psycopg://erp:{PASSWORD}@127.0.0.1:1/erp",
    "mariadb": f"mysql+pymysql://erp:{PASSWORD}@127.0.0.1:1/erp",
    "mssql": f"mssql+pymssql://erp:{PASSWORD}@127.0.0.1:1/erp",
}


def run(tmp_path: Path, toml: str, *args: str) -> tuple[int, str]:
    config = tmp_path / "erpsync.toml"
    config.write_text(toml, encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.stderr


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert PASSWORD not in stderr
    return lines[0]


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_state_database_down_names_state_url(tmp_path: Path, server: str) -> None:
    code, err = run(tmp_path, f'[state]\nurl = "{CLOSED[server]}"\nconnect_timeout_seconds = 2\n', "status")
    assert code == 1
    line = error_line(err)
    assert line.startswith("error: database error: state.url: "), line
    assert "refused" in line.lower()


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_source_database_down_names_source_url(tmp_path: Path, server: str) -> None:
    toml = f'[source]\nkind = "infor-visual"\nurl = "{CLOSED[server]}"\nconnect_timeout_seconds = 2\n'
    code, err = run(tmp_path, toml, "sources", "check")
    assert code == 1
    line = error_line(err)
    assert line.startswith("error: database error: source.url: "), line
    assert "refused" in line.lower()


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_writeback_database_down_names_its_key(tmp_path: Path, server: str, sqlite_url: str) -> None:
    toml = (
        f'[source]\nkind = "infor-visual"\nurl = "{sqlite_url}"\n'
        f'[writeback.database]\nurl = "{CLOSED[server]}"\nconnect_timeout_seconds = 2\n'
    )
    code, err = run(tmp_path, toml, "erp", "install-staging")
    assert code == 1
    line = error_line(err)
    assert line.startswith("error: database error: writeback.database.url: "), line


def test_writeback_on_the_source_url_says_so(tmp_path: Path) -> None:
    toml = f'[source]\nkind = "infor-visual"\nurl = "{CLOSED["postgresql"]}"\nconnect_timeout_seconds = 2\n'
    code, err = run(tmp_path, toml, "erp", "install-staging")
    assert code == 1
    assert error_line(err).startswith("error: database error: source.url (write-back): ")


def test_sql_server_error_is_decoded_not_a_bytes_repr(tmp_path: Path) -> None:
    """pymssql reports `(20009, b'DB-Lib error message...\\n...')`: shown as words, once each."""
    code, err = run(tmp_path, f'[state]\nurl = "{CLOSED["mssql"]}"\nconnect_timeout_seconds = 2\n', "status")
    assert code == 1
    line = error_line(err)
    assert line.startswith("error: database error: state.url: DB-Lib error message 20009"), line
    assert "b'" not in line and "\\n" not in line
    assert "Unable to connect" in line and line.count("Unable to connect") == 1
    assert line.endswith("(error 20009)")


def test_env_var_typo_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERPSYNC_MM__BASEURL", "https://api.machinemetrics.com")
    code, err = run(tmp_path, '[mm]\napi_key = "k"\n', "config", "check")
    assert code == 2
    line = error_line(err)
    assert "mm.baseurl: unknown key from environment variable ERPSYNC_MM__BASEURL" in line
    assert "erpsync.toml" not in line


def test_env_var_bad_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERPSYNC_MM__MAX_CONCURRENCY", "many")
    code, err = run(tmp_path, "[mm]\nmax_concurrency = 4\n", "config", "check")
    assert code == 2
    expected = "mm.max_concurrency: bad value 'many' (from environment variable ERPSYNC_MM__MAX_CONCURRENCY)"
    assert expected in err


def test_env_var_unknown_section_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings ignores ERPSYNC_STAT__URL (no section `stat`); erpsync does not."""
    monkeypatch.setenv("ERPSYNC_STAT__URL", "sqlite:///elsewhere.db")
    code, err = run(tmp_path, "", "config", "check", "--no-service")
    assert code == 2
    assert "environment variable ERPSYNC_STAT__URL: unknown section 'stat'" in error_line(err)


def test_typo_in_the_file_still_names_the_file(tmp_path: Path) -> None:
    code, err = run(tmp_path, '[mm]\nbaseurl = "x"\n', "config", "check")
    assert code == 2
    assert "mm.baseurl: unknown key in " in err and "erpsync.toml" in err


def test_visual_table_missing_names_the_schema_and_the_fix(tmp_path: Path, database_url: str) -> None:
    """An empty ERP database on each backend: the hint says where erpsync looked and what to set."""
    toml = f'[source]\nkind = "infor-visual"\nurl = "{database_url}"\n'
    code, err = run(tmp_path, toml, "sources", "check")
    assert code == 2
    line = error_line(err)
    assert line.startswith("error: source.url: "), line
    assert "LABOR_TICKET" in line
    assert "the connection's default schema (source.visual.schema_name is not set)" in line
    assert "Set source.visual.schema_name" in line


def test_visual_lower_case_tables_on_postgresql_get_the_quoting_hint(tmp_path: Path, pg_url: str) -> None:
    """A VISUAL copy restored with lower-case names: PostgreSQL says `relation "LABOR_TICKET"`..."""
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA vmfg"))
        conn.execute(text("CREATE TABLE vmfg.labor_ticket (transaction_id integer)"))
    engine.dispose()
    toml = f'[source]\nkind = "infor-visual"\nurl = "{pg_url}"\n[source.visual]\nschema_name = "vmfg"\n'
    code, err = run(tmp_path, toml, "sources", "check")
    assert code == 2
    line = error_line(err)
    assert 'relation "vmfg.LABOR_TICKET" does not exist' in line, line
    assert "schema 'vmfg' (source.visual.schema_name)" in line
    assert "lower-case tables (labor_ticket) is not found" in line
