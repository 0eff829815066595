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
PROBE = """
import json, runpy, sys
sys.argv = ["erpsync", *ARGS]
try:
    runpy.run_module("erpsync", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))))
"""


def loaded(*args: str, env: dict[str, str] | None = None) -> list[str]:
    code = PROBE.replace("ARGS", repr(list(args))).replace("HEAVY", repr(HEAVY))
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
    """The database and the configuration, not the MM client, the scheduler or the migrations."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
    env["ERPSYNC_STATE__URL"] = f"sqlite:///{tmp_path / 'state.db'}"
    for command in ("status", "audit"):
        used = loaded(command, env=env)
        assert {"sqlalchemy", "pydantic_settings"} <= set(used), used  # it did reach the database
        assert not {"httpx", "apscheduler", "alembic", "stamina"} & set(used), used
