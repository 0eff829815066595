"""Alembic environment for erpsync's state database only.

`include_name` keeps autogenerate to erpsync's own `erpsync_*` tables, so pointing the state
database at a schema that also holds ERP tables can never produce a migration that touches them.
"""

from __future__ import annotations

from pathlib import Path

from alembic import context
from sqlalchemy import Connection, Engine

from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.tables import Base
from erpsync.config import load_settings

VERSION_TABLE = "erpsync_alembic_version"
config = context.config
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "table":
        return bool(name) and str(name).startswith("erpsync_")
    return True


def _engine() -> Engine:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return create_db_engine(url)
    config_file = config.attributes.get("erpsync_config_file")
    settings = load_settings(Path(config_file) if config_file else None)
    return create_db_engine(settings.state.sqlalchemy_url(), settings.state.connect_timeout_seconds)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = _engine()
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("erpsync migrations run online only: use `erpsync db upgrade`")
run_migrations_online()
