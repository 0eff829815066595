"""The foundation commands as a user runs them: db upgrade/current, config check, status, audit."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.cli.app import app
from erpsync.observability.correlation import correlation

SECRET = "mm-key-NEVER-PRINT-9876"
runner = CliRunner()


def erpsync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "erpsync", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_db_upgrade_and_current_on_every_backend(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERPSYNC_STATE__URL", database_url)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "-> 0008" in result.output
    result = runner.invoke(app, ["db", "current", "--check"])
    assert result.exit_code == 0, result.output
    assert "revision 0008 (head 0008)" in result.output


def test_db_current_check_fails_on_empty_database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERPSYNC_STATE__URL", sqlite_url)
    result = runner.invoke(app, ["db", "current", "--check"])
    assert result.exit_code == 1
    assert "run `erpsync db upgrade`" in result.output


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[mm]\nmax_concurrency = "many"\n', "mm.max_concurrency"),
        ("[source]\nkind = 'infor-visual-csv'\n", "source"),
        ("[nonsense]\na = 1\n", "nonsense"),
    ],
)
def test_config_check_bad_config_exits_2_with_one_line(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    proc = erpsync("--config", str(path), "config", "check")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {key}")
    assert "Traceback" not in proc.stderr + proc.stdout


def test_config_check_missing_required_key_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "erpsync.toml"
    path.write_text('[source]\nkind = "infor-visual"\nurl = "sqlite:///erp.db"\n', encoding="utf-8")
    proc = erpsync("--config", str(path), "config", "check")
    assert proc.returncode == 2
    assert "error: mm.api_key: required" in proc.stderr


def test_config_check_redacts_secrets_everywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "erpsync.toml"
    path.write_text(
        f'[mm]\napi_key = "{SECRET}"\n[source]\nurl = "postgresql+psycopg://erp:pw-XYZ-123@db/vmfg"\n'
        '[logging]\nlevel = "debug"\n',
        encoding="utf-8",
    )
    proc = erpsync("--config", str(path), "config", "check")
    assert proc.returncode == 0, proc.stderr
    assert "configuration is valid" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "pw-XYZ-123" not in proc.stdout + proc.stderr
    assert '"**********"' in proc.stdout
    proc = erpsync("--config", str(path), "config", "check", "--json")
    data = json.loads(proc.stdout)
    assert data["mm"]["api_key"] == "**********"
    assert SECRET not in proc.stdout


def test_secret_never_reaches_a_log_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from erpsync.observability.scrub import register_secret
    from erpsync.runtime.logging import configure_logging

    register_secret(SECRET)
    configure_logging("DEBUG", "json")
    log = logging.getLogger("erpsync.test")
    log.info("calling MM with Authorization: Bearer %s", SECRET)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        log.exception("failed")
    import structlog

    structlog.get_logger().info("start", api_key=SECRET, url=f"https://x/?k={SECRET}")
    err = capsys.readouterr().err
    assert err.count("**********") >= 3
    assert SECRET not in err


def test_status_and_audit_read_the_state(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERPSYNC_STATE__URL", sqlite_url)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    store = StateStore(create_db_engine(sqlite_url))
    with correlation("cli"), store.session() as session:
        record_audit(
            session, action="start_run", outcome="succeeded", erp_job="W/100/1", erp_machine="HAAS-1"
        )
        record_audit(
            session,
            action="stop_run",
            outcome="failed",
            erp_job="W/200/1",
            erp_machine="MAZAK",
            error="MM returned 503",
        )
    store.dispose()
    result = runner.invoke(app, ["audit", "--machine", "MAZAK", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["erp_job"] for r in rows] == ["W/200/1"]
    assert rows[0]["error_message"] == "MM returned 503"
    assert rows[0]["triggered_by"] == "cli"
    result = runner.invoke(app, ["audit", "--outcome", "succeeded", "--since", "1h"])
    assert result.exit_code == 0
    assert "W/100/1" in result.output and "W/200/1" not in result.output
    result = runner.invoke(app, ["audit", "--since", "yesterday"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["open_quarantine"] == 0


def test_unreachable_database_is_a_clear_error_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"ERPSYNC_STATE__URL": "postgresql+psycopg://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin"}
    proc = erpsync("db", "upgrade", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: database error:")
    assert "Traceback" not in proc.stderr
