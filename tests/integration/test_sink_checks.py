"""`CountSink.check`: what `writeback --dry-run` reports, against real ERP databases, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from erpsync.adapters.erp.sinks.csv_outbox import CsvOutboxSink
from erpsync.adapters.erp.sinks.none import NoneSink
from erpsync.adapters.erp.sinks.sql import SqlSink
from erpsync.adapters.erp.sinks.staging import StagingSink, install_staging
from erpsync.adapters.erp.sinks.visual_labor_ticket import VisualLaborTicketSink
from erpsync.adapters.erp.visual_schema import create_visual_schema
from erpsync.adapters.state.db import create_db_engine
from erpsync.domain.errors import ConfigError, RetryableError

TABLE = "ERPSYNC_RUN_COUNTS"


def test_database_sinks_check_their_table_without_creating_it(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        staging = StagingSink(engine, TABLE)
        with pytest.raises(ConfigError, match=f"staging table {TABLE} does not exist.*install-staging"):
            staging.check()
        assert not inspect(engine).has_table(TABLE)
        install_staging(engine, TABLE)
        assert staging.check() == f"staging table {TABLE} is in the write-back database"

        tickets = VisualLaborTicketSink(engine)
        with pytest.raises(ConfigError, match="LABOR_TICKET not found"):
            tickets.check()
        create_visual_schema(engine)
        assert "LABOR_TICKET" in tickets.check()
        assert "answers" in SqlSink(engine, "UPDATE T SET Q = :good_parts WHERE ID = :run_id").check()
    finally:
        engine.dispose()


def test_an_unreachable_erp_is_reported_as_unreachable() -> None:
    engine = create_db_engine("postgresql+psycopg://postgres@127.0.0.1:9/nowhere", 2)
    try:
        with pytest.raises(RetryableError, match="unavailable"):
            StagingSink(engine, TABLE).check()
        with pytest.raises(RetryableError, match="unavailable"):
            SqlSink(engine, "UPDATE T SET Q = :good_parts WHERE ID = :run_id").check()
    finally:
        engine.dispose()


def test_file_sinks_check_the_outbox(tmp_path: Path) -> None:
    assert "nothing is written" in NoneSink().check()
    assert "does not exist yet" in CsvOutboxSink(tmp_path / "outbox").check()
    assert not (tmp_path / "outbox").exists()
    (tmp_path / "outbox").mkdir()
    assert "is writable" in CsvOutboxSink(tmp_path / "outbox").check()
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot create it"):
        CsvOutboxSink(tmp_path / "a-file" / "outbox").check()
