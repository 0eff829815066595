"""`erpsync --help` starts fast: the command line loads no database, HTTP or scheduler library.

The heavy libraries are imported inside the commands that use them (erpsync/cli/common.py); this
keeps a later top-level import from undoing that. bench/cli_startup.py measures the time itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("sqlalchemy", "httpx", "apscheduler", "pydantic_settings", "structlog", "alembic", "stamina")
# parts of a library (or of erpsync) that a read-only command can do without
HEAVY_PARTS = (
    "sqlalchemy.orm",  # status and audit read with SQLAlchemy Core (erpsync/adapters/state/reads.py)
    "sqlalchemy.dialects.mysql",  # every MySQL driver's dialect, loaded by a MySQL URL only
    "erpsync.adapters.state.tables",  # the ORM classes
    "erpsync.adapters.state.store",  # the ORM session factory
    "erpsync.adapters.state.audit",  # the audit writer
)
PROBE = """
import json, runpy, sys
sys.argv = ["erpsync", *ARGS]
try:
    runpy.run_module("erpsync", run_name="__main__")
except SystemExit:
    pass
parts = {m for m in sys.modules if m in HEAVY_PARTS}
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY) | parts)))
"""


def loaded(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """The HEAVY libraries and HEAVY_PARTS that `erpsync *args` imported, sorted."""
    code = (
        PROBE.replace("ARGS", repr(list(args)))
        .replace("HEAVY_PARTS", repr(HEAVY_PARTS))
        .replace("HEAVY", repr(HEAVY))
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    result: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_help_loads_no_heavy_library() -> None:
    assert loaded("--help") == []
    assert loaded("audit", "--help") == []
    assert loaded("serve", "--help") == []


def test_status_and_audit_load_only_what_they_need(tmp_path: Path) -> None:
    """The database and the configuration: not the MM client, scheduler, migrations, ORM or structlog."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
    env["ERPSYNC_STATE__URL"] = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade = [sys.executable, "-m", "erpsync", "db", "upgrade"]
    subprocess.run(upgrade, capture_output=True, timeout=120, check=True, env=env)
    for command in (["status"], ["status", "--json"], ["audit"], ["audit", "--json"]):
        used = loaded(*command, env=env)
        assert {"sqlalchemy", "pydantic_settings"} <= set(used), used  # it did reach the database
        assert not {"httpx", "apscheduler", "alembic", "stamina"} & set(used), used
        assert not set(HEAVY_PARTS) & set(used), used
        assert "structlog" not in used, used  # logging is set up at the first record (none here)


def test_the_probe_sees_the_orm(tmp_path: Path) -> None:
    """A command that writes (here `db upgrade`) loads the ORM and structlog: the probe above can fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
    env["ERPSYNC_STATE__URL"] = f"sqlite:///{tmp_path / 'state.db'}"
    used = loaded("db", "upgrade", env=env)
    assert {"sqlalchemy.orm", "erpsync.adapters.state.tables", "structlog"} <= set(used), used
