"""The demo folder and the demo's configuration, kept in one place so the two always agree.

The demo writes only inside its folder (default ``./erpsync-demo/``, git-ignored): the demo ERP,
erpsync's state database, a log file and ``erpsync.toml``. That file holds exactly the settings the
demo ran with, except the simulator's API key (the simulator is gone once the demo ends), so the
read-only commands printed by the summary work afterwards.

Running the demo again empties the folder first. To never delete anything else, the folder carries
a marker file: a non-empty folder without it is refused, and only the demo's own files are removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from erpsync.config import Settings
from erpsync.demo.erp import PLANT_TZ
from erpsync.domain.errors import ConfigError

MARKER = ".erpsync-demo"
ERP_DB, STATE_DB, CONFIG_FILE, LOG_FILE = "erp.db", "state.db", "erpsync.toml", "erpsync-demo.log"
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")

SYNC_SECONDS = 2.0
WRITEBACK_SECONDS = 3.0
SOURCE_NAME = "visual"
SINK = "visual-labor-ticket"


def sqlite_url(path: Path) -> str:
    """An absolute SQLite URL, so the config file works from any working directory."""
    return f"sqlite:///{path.resolve().as_posix()}"


class DemoFolder:
    """Where one demo keeps everything it makes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.erp_db = root / ERP_DB
        self.state_db = root / STATE_DB
        self.config_file = root / CONFIG_FILE
        self.log_file = root / LOG_FILE

    def prepare(self) -> None:
        """Create the folder, or remove a previous demo's files from it; refuse any other folder."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ConfigError(f"{root} exists and is not a folder; pass --dir with a new or empty folder")
        if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
            raise ConfigError(
                f"{root} is not empty and was not made by `erpsync demo`; pass --dir with a new or "
                "empty folder (the demo empties its folder when it runs again)"
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / MARKER).write_text(
                "Made by `erpsync demo`, which empties this folder each time it runs.\n", encoding="utf-8"
            )
            for name in (ERP_DB, STATE_DB, CONFIG_FILE, LOG_FILE):
                for suffix in SQLITE_COMPANIONS:
                    (root / f"{name}{suffix}").unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot prepare the demo folder {root}: {exc.strerror}; pass --dir with a folder you can "
                "write to, e.g. --dir /tmp/erpsync-demo"
            ) from None

    def write_config(self, config: dict[str, dict[str, Any]]) -> None:
        """Write the demo's configuration (no API key) as ``erpsync.toml`` in the folder."""
        self.config_file.write_text(CONFIG_HEADER + to_toml(config), encoding="utf-8")


CONFIG_HEADER = """\
# Written by `erpsync demo`: the settings the demo ran with. Running the demo again replaces it.
# The simulated MachineMetrics (mm.base_url) stopped with the demo and its API key is not kept, so
# only commands that read work with this file: audit, status, machines, quarantine list, plan.
# serve, sync, writeback and resync would need a MachineMetrics to talk to.

"""


def demo_config(folder: DemoFolder, mm_base_url: str) -> dict[str, dict[str, Any]]:
    """The demo's settings as TOML-shaped data: short intervals, quiet logs, the demo's databases."""
    return {
        "state": {"url": sqlite_url(folder.state_db)},
        "mm": {
            "base_url": mm_base_url,
            "connect_timeout_seconds": 2,
            "read_timeout_seconds": 5,
            "retry_deadline_seconds": 5,
            "max_attempts": 3,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.5,
            "breaker_reset_seconds": 2,
        },
        "source": {
            "kind": "infor-visual",
            "name": SOURCE_NAME,
            "url": sqlite_url(folder.erp_db),
            "timezone": PLANT_TZ,
        },
        "sync": {"interval_seconds": SYNC_SECONDS, "in_doubt_after_seconds": 2},
        "writeback": {"sink": SINK, "interval_seconds": WRITEBACK_SECONDS},
        "service": {
            "instance_name": "erpsync-demo",
            "health_port": 0,
            "lease_ttl_seconds": 6,
            "lease_renew_seconds": 1,
            "lease_retry_seconds": 0.5,
            "job_timeout_seconds": 20,
            "max_cycle_age_seconds": 30,
            "stop_grace_seconds": 3,
        },
        "logging": {"level": "WARNING"},
    }


class _DemoSettings(Settings):
    """Settings from the given values only: the demo ignores ERPSYNC_* variables and config files."""

    read_environment = False


def demo_settings(config: dict[str, dict[str, Any]], api_key: str) -> Settings:
    """Validated settings for the demo's service: `config` plus the simulator's API key."""
    values: dict[str, Any] = {**config, "mm": {**config["mm"], "api_key": api_key}}
    return _DemoSettings(**values)


def to_toml(config: dict[str, dict[str, Any]]) -> str:
    """One-level TOML (tables of scalars): all the demo's configuration needs."""
    blocks = []
    for section, values in config.items():
        lines = [f"[{section}]", *(f"{key} = {_toml_value(value)}" for key, value in values.items())]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"cannot write {type(value).__name__} as a TOML scalar")
