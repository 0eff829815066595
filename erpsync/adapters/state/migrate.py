"""Run erpsync's Alembic migrations from code (the `erpsync db` commands and `serve --migrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

if TYPE_CHECKING:  # alembic is imported only by the commands that migrate (0.6 s of start-up)
    from alembic.config import Config

REPO_ROOT = Path(__file__).resolve().parents[3]
VERSION_TABLE = "erpsync_alembic_version"


def _script_location() -> Path:
    """migrations/ beside the package (source checkout) or shipped inside it (wheel install)."""
    for candidate in (REPO_ROOT / "migrations", Path(__file__).resolve().parents[2] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("erpsync's migrations/ folder was not found next to the package")


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - lazy (start-up time)

    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    config.attributes["engine"] = engine
    return config


def _run(engine: Engine, action: str, revision: str) -> None:
    from alembic import command  # noqa: PLC0415 - lazy (start-up time)

    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - lazy (start-up time)

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - lazy (start-up time)

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def is_at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)
