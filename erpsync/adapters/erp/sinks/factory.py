"""Build the sink the configuration names (`writeback.sink`)."""

from __future__ import annotations

from erpsync.adapters.erp.sinks._db import open_writeback_engine
from erpsync.adapters.erp.sinks.base import CountSink
from erpsync.adapters.erp.sinks.csv_outbox import CsvOutboxSink
from erpsync.adapters.erp.sinks.none import NoneSink
from erpsync.adapters.erp.sinks.sql import SqlSink
from erpsync.adapters.erp.sinks.staging import StagingSink
from erpsync.adapters.erp.sinks.visual_labor_ticket import VisualLaborTicketSink
from erpsync.config import Settings
from erpsync.domain.errors import ConfigError


def open_sink(settings: Settings) -> CountSink:
    """The configured sink. Database sinks get their own writable engine (connected lazily)."""
    wb = settings.writeback
    if wb.sink == "none":
        return NoneSink()
    if wb.sink == "csv":
        if wb.outbox_dir is None:
            raise ConfigError("writeback.sink = 'csv' needs writeback.outbox_dir")
        return CsvOutboxSink(wb.outbox_dir)
    if wb.sink == "sql" and not wb.statement:
        raise ConfigError("writeback.sink = 'sql' needs writeback.statement")
    engine = open_writeback_engine(settings)
    try:
        if wb.sink == "staging":
            return StagingSink(engine, wb.staging_table, batch_size=wb.batch_size)
        if wb.sink == "visual-labor-ticket":
            schema = settings.source.visual.schema_name if settings.source is not None else None
            return VisualLaborTicketSink(engine, schema=schema, batch_size=wb.batch_size)
        assert wb.statement is not None
        return SqlSink(engine, wb.statement, batch_size=wb.batch_size)
    except BaseException:
        engine.dispose()
        raise


__all__ = ["open_sink", "open_writeback_engine"]
