"""Configuration: TOML + environment + secret files, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from erpsync.config import load_settings
from erpsync.domain.errors import ConfigError

SECRET = "mm-key-DO-NOT-LEAK-1234"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "erpsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_run_an_embedded_sqlite_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERPSYNC_CONFIG", raising=False)
    settings = load_settings(None)
    assert settings.state.url == "sqlite:///erpsync.db"
    assert settings.source is None
    assert settings.mm.paths.start == "/erp/jobdispatch/start"


def test_toml_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[mm]\nbase_url = "https://api-demo.machinemetrics.com/"\nmax_concurrency = 4\n')
    monkeypatch.setenv("ERPSYNC_MM__MAX_CONCURRENCY", "12")
    monkeypatch.setenv("ERPSYNC_SYNC__IMPORTS__AUTO_ARCHIVE", "true")
    settings = load_settings(path)
    assert settings.mm.base_url == "https://api-demo.machinemetrics.com"
    assert settings.mm.max_concurrency == 12
    assert settings.sync.imports.auto_archive is True


def test_config_file_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[sync]\ninterval_seconds = 5\n")
    monkeypatch.setenv("ERPSYNC_CONFIG", str(path))
    assert load_settings(None).sync.interval_seconds == 5


def test_secrets_from_files_never_show(tmp_path: Path) -> None:
    key_file = tmp_path / "mm_api_key"
    key_file.write_text(SECRET + "\n", encoding="utf-8")
    pw_file = tmp_path / "db_password"
    pw_file.write_text("s3cret-pw\n", encoding="utf-8")
    path = write(
        tmp_path,
        f'[mm]\napi_key_file = "{key_file}"\n[state]\nurl = "postgresql+psycopg://erp@db/erpsync"\n'
        f'password_file = "{pw_file}"\n',
    )
    settings = load_settings(path)
    assert settings.mm.api_key is not None
    assert settings.mm.api_key.get_secret_value() == SECRET
    assert settings.state.sqlalchemy_url().password == "s3cret-pw"
    shown = str(settings.redacted()) + repr(settings) + str(settings)
    assert SECRET not in shown
    assert "s3cret-pw" not in shown


def test_password_in_url_is_redacted(tmp_path: Path) -> None:
    path = write(tmp_path, '[state]\nurl = "postgresql+psycopg://erp:hunter22@db/erpsync"\n')
    settings = load_settings(path)
    assert "hunter22" not in str(settings.redacted())
    assert settings.state.redacted_url() == "postgresql+psycopg://erp:**********@db/erpsync"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[mm]\nmax_concurrency = "lots"\n', "mm.max_concurrency: bad value 'lots'"),
        ("[frobnicate]\nx = 1\n", "frobnicate: unknown key"),
        ("[mm]\nbase_url = 'ftp://x'\n", "mm.base_url: bad value 'ftp://x': expected an http(s) URL"),
        ("[source]\ntimezone = 'Mars/Olympus'\n", "source.timezone: bad value 'Mars/Olympus': not an IANA"),
        ("[source]\nkind = 'infor-ln-csv'\n", "source: source kind 'infor-ln-csv' needs source.csv.path"),
        ("[writeback]\nsink = 'sql'\n", "writeback: writeback.sink = 'sql' needs writeback.statement"),
        ("[state]\nurl = 'not a url'\n", "state.url: bad value 'not a url': not a SQLAlchemy URL"),
    ],
)
def test_bad_config_names_key_value_and_expectation(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, toml))
    assert expected in str(err.value)


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[mm]\napi_key = 12345678\n"))
    assert "mm.api_key" in str(err.value)
    assert "12345678" not in str(err.value)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[mm\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_service_requirements_are_reported() -> None:
    problems = load_settings(None).missing_for_service()
    assert any(p.startswith("mm.api_key: required") for p in problems)
    assert any(p.startswith("source: required") for p in problems)
