"""Log levels: an event below the level is dropped before any processor runs; others are unchanged."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from erpsync.observability.correlation import correlation
from erpsync.observability.scrub import MASK, register_secret
from erpsync.runtime.logging import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level, saved_structlog = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.configure(**saved_structlog)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_the_level_check_comes_before_every_other_processor() -> None:
    configure_logging("WARNING", "json", stream=io.StringIO())
    assert structlog.get_config()["processors"][0] is structlog.stdlib.filter_by_level


@pytest.mark.usefixtures("restore_logging")
def test_events_below_the_level_are_dropped_and_the_rest_keep_context_and_scrubbing() -> None:
    register_secret("s3cret-value")
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = structlog.get_logger("erpsync.test")
    with correlation("cli", "c0ffee"):
        log.debug("hidden", detail="x")
        log.info("shown", detail="key s3cret-value")
        logging.getLogger("erpsync.test.stdlib").debug("hidden too")
        logging.getLogger("erpsync.test.stdlib").warning("stdlib shown")
    found = lines(stream)
    assert [line["event"] for line in found] == ["shown", "stdlib shown"]
    assert found[0]["correlation_id"] == "c0ffee" and found[0]["level"] == "info"
    assert found[0]["detail"] == f"key {MASK}"

    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    log.debug("now shown", status=200)
    assert [(line["event"], line["level"]) for line in lines(stream)] == [("now shown", "debug")]
