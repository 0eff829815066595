"""erpsync as real subprocesses for the campaign: a config per world, serve / sync / writeback.

The config is tests/sync_helpers.write_config plus a `[writeback]` section (VISUAL labor-ticket
sink on the same ERP); campaign timings (sub-second loops, a 1.5 s lease) come from environment
overrides, which erpsync reads before the file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.observability.crashpoints import CRASH_ENV_VAR
from tests.sync_helpers import write_config

CAMPAIGN_ENV = {
    "ERPSYNC_SYNC__INTERVAL_SECONDS": "0.3",
    "ERPSYNC_WRITEBACK__INTERVAL_SECONDS": "0.3",
    "ERPSYNC_SERVICE__HEALTH_PORT": "0",
    "ERPSYNC_SERVICE__LEASE_TTL_SECONDS": "1.5",
    "ERPSYNC_SERVICE__LEASE_RENEW_SECONDS": "0.4",
    "ERPSYNC_SERVICE__LEASE_RETRY_SECONDS": "0.2",
    "ERPSYNC_SERVICE__STOP_GRACE_SECONDS": "3",
    "ERPSYNC_LOGGING__LEVEL": "WARNING",
}


def campaign_config(
    folder: Path, erp_url: str, state_url: str, sim: MMSimulator, *, source_url: str | None = None, **mm: Any
) -> Path:
    """write_config's file, plus write-back into the VISUAL labor tickets of the ERP.

    `source_url` (default `erp_url`) is what erpsync connects to: the fault campaign puts a
    connection-cutting proxy there while the test's own fixture talks to the ERP directly.
    """
    url = source_url or erp_url
    path = write_config(folder / "erpsync.toml", url, state_url, sim, **mm)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(
            f'[writeback]\nsink = "visual-labor-ticket"\n[writeback.database]\nurl = {json.dumps(url)}\n'
        )
    return path


class Erpsync:
    """Starts erpsync commands on one config; output goes to a log file in the world's folder."""

    def __init__(self, config: Path, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}  # crash points too
        self.env.update(CAMPAIGN_ENV)
        self.env.update(extra_env or {})
        self._log: TextIO = log.open("a", encoding="utf-8")

    def start(self, command: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        """Start `erpsync <command>`; `crash_at` arms a named crash point (observability/crashpoints.py)."""
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} erpsync {command} {crash_at or ''}\n")
        self._log.flush()
        env = {**self.env, CRASH_ENV_VAR: crash_at} if crash_at else self.env
        return subprocess.Popen(
            [sys.executable, "-m", "erpsync", "--config", str(self.config), command],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def run(self, command: str, timeout: float = 120) -> int:
        proc = self.start(command)
        return proc.wait(timeout=timeout)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> bool:
        """SIGKILL; True when the process was still running (a real crash, not an exit)."""
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return alive

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM and wait: the service finishes its jobs and hands the lease back."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def close(self) -> None:
        self._log.close()
