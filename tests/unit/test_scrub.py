"""The one scrubber, and the log pipeline that renders exceptions without locals and scrubs them."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import structlog

from erpsync.config import load_settings
from erpsync.domain.errors import ConfigError
from erpsync.observability.scrub import MASK, register_secret, register_url_secrets, scrub
from erpsync.runtime.logging import configure_logging, describe_exception

SECRET = "Zx@:/#%?&=unit-scrub-Q7"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, structlog.get_config(), sys.excepthook, threading.excepthook
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    structlog.configure(**saved[2])
    sys.excepthook, threading.excepthook = saved[3], saved[4]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://erp:hunter22@db:5432/erp", f"postgresql+psycopg://erp:{MASK}@db:5432/erp"),
        ("postgresql://erp:hunter22@db:54x2/erp", f"postgresql://erp:{MASK}@db:54x2/erp"),  # does not parse
        ("postgresql://erp:p@ss/w#rd@db/erp", f"postgresql://erp:{MASK}@db/erp"),  # unencoded specials
        (
            "mysql+pymysql://erp@db/erp?password=hunter22&charset=utf8",
            f"mysql+pymysql://erp@db/erp?password={MASK}&charset=utf8",
        ),
        ("https://x/api?api_key=abc123&page=2", f"https://x/api?api_key={MASK}&page=2"),
        ("host=db user=erp password=hunter22 dbname=erp", f"host=db user=erp password={MASK} dbname=erp"),
        ("sqlite:///var/lib/erpsync/state.db", "sqlite:///var/lib/erpsync/state.db"),
        ("# password = (not set)", None),  # printed config, not a DSN
        ("record_key=LT12 machine=HAAS-1 at https://api.machinemetrics.com/x", None),
    ],
)
def test_urls_and_parameters_are_masked_without_registration(text: str, expected: str | None) -> None:
    assert scrub(text) == (text if expected is None else expected)


def test_a_registered_secret_is_masked_in_clear_and_url_encoded() -> None:
    register_secret(SECRET)
    for form in (SECRET, quote(SECRET, safe=""), quote(SECRET)):
        assert scrub(f"before {form} after") == f"before {MASK} after"


def test_the_password_of_an_unparsable_url_is_registered() -> None:
    register_url_secrets("postgresql://erp:Unp4rsable-pw@db:54x2/erp")
    assert scrub("driver said: bad password Unp4rsable-pw") == f"driver said: bad password {MASK}"


def test_config_errors_never_echo_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "erpsync.toml"
    encoded = quote(SECRET, safe="")
    path.write_text(
        f'[state]\nurl = "postgresql+psycopg://erp:{encoded}@db:54x2/state"\n'
        f'[mm]\nbase_url = "https://proxy:{encoded}@api.machinemetrics.com"\napi_key = "{SECRET}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert "state.url: bad value" in message and "percent-encoded" in message
    assert "mm.base_url" in message and "HTTPS_PROXY" in message
    assert SECRET not in message and encoded not in message


def test_an_exception_is_one_line_and_frames_only_at_debug() -> None:
    def connect(password: str) -> None:
        raise ConnectionError("connection refused")

    try:
        try:
            connect(SECRET)
        except ConnectionError as exc:
            raise RuntimeError(f"sync failed for postgresql://erp:{SECRET}@db/erp") from exc
    except RuntimeError as exc:
        short, framed = describe_exception(exc), describe_exception(exc, frames=True)
    assert short.splitlines() == [
        f"RuntimeError: sync failed for postgresql://erp:{MASK}@db/erp",
        "caused by ConnectionError: connection refused",
    ]
    assert "Traceback" not in short
    assert "Traceback (erpsync frames" not in framed  # frames of this test file are not erpsync's
    assert SECRET not in framed


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_exception_shows_no_locals_and_no_secret(fmt: str) -> None:
    register_secret(SECRET)
    stream = io.StringIO()
    configure_logging("INFO", fmt, stream=stream)  # type: ignore[arg-type]

    def failing(password: str = SECRET) -> None:
        local_dsn = {"password": password}
        raise OSError(f"cannot connect with {local_dsn}")

    try:
        failing()
    except OSError:
        structlog.get_logger("erpsync.test").exception("job failed")
        logging.getLogger("apscheduler.executors.default").exception('Job "sync" raised an exception')
    out = stream.getvalue()
    assert SECRET not in out
    assert "local_dsn =" not in out and "locals" not in out.lower()
    assert out.count("job failed") == 1
    assert "raised an exception" not in out  # APScheduler's duplicate record is dropped
    if fmt == "json":
        (line,) = [json.loads(text) for text in out.splitlines() if text.strip()]
        assert line["exception"] == f"OSError: cannot connect with {{'password': '{MASK}'}}"
