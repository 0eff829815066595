"""One CSV trial's world: a state database (SQLite, PostgreSQL or MariaDB), the MM simulator, a
config for an `infor-visual-csv` or `infor-ln-csv` source (inbox or path), and erpsync as real processes.

`drop` writes an export the way a scheduled job's copy lands (a temp name, then a rename, so
erpsync never reads our own half-written file: a truncated file is cut on purpose), and `sync`
runs one `erpsync sync` (or, with `serve`, waits for a cycle that started after the drop).
The MM API key is random and PostgreSQL's URL carries a password (trust auth ignores it): neither
may show in any output.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Cycle
from tests.campaign.procs import CAMPAIGN_ENV
from tests.campaign.world import migrated_store
from tests.conftest import create_database, drop_database
from tests.fixtures_mm import FAST_RETRIES

CYCLE_TIMEOUT = 60.0
PYCACHE = Path(tempfile.gettempdir()) / "erpsync-campaign-pycache"


@dataclass
class Outcome:
    """One step of erpsync: its exit code (None under `serve`), output and wall-clock window."""

    exit_code: int | None
    output: str
    began: datetime
    ended: datetime


def _toml(value: Any) -> str:
    return json.dumps(value)


class CsvWorld:
    """State database, simulator and config of one trial; `close` drops the database."""

    def __init__(
        self,
        folder: Path,
        backend: str,
        policy: str,
        mode: str,
        runner: str,
        extra_env: dict[str, str] | None = None,
        *,
        kind: str = "infor-visual-csv",
        csv_settings: dict[str, str] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.backend, self.mode, self.runner = folder, backend, mode, runner
        self.secrets = [f"mmk-{secrets.token_hex(12)}"]
        url, self._token = create_database(backend, folder)
        if backend == "postgresql":
            password = f"pgpw-{secrets.token_hex(8)}"
            url = make_url(url).set(password=password).render_as_string(hide_password=False)
            self.secrets.append(password)
        self.state_url = url
        self.store: StateStore = migrated_store(url)
        self.sim = MMSimulator(api_key=self.secrets[0], seed=7, time_scale=0.001).start()
        self.inbox = folder / "inbox"
        self.inbox.mkdir(exist_ok=True)
        self.path = self.inbox / "export.csv"
        where = f"path = {_toml(str(self.path))}" if mode == "path" else f"inbox = {_toml(str(self.inbox))}"
        lines = [
            "[state]", f"url = {_toml(url)}",
            "[mm]", f"base_url = {_toml(self.sim.base_url)}", f"api_key = {_toml(self.secrets[0])}",
            *[f"{k} = {_toml(v)}" for k, v in FAST_RETRIES.items()],
            "[source]", f"kind = {_toml(kind)}", 'name = "erp"', 'timezone = "America/Chicago"',
            "[source.csv]", where, "settle_seconds = 0",
            *[f"{k} = {_toml(v)}" for k, v in (csv_settings or {}).items()],
            "[sync]", f"vanished_runs = {_toml(policy)}",
            "[writeback]", 'sink = "none"',
            "[logging]", 'level = "WARNING"', 'format = "json"',
        ]  # fmt: skip
        self.config = folder / "erpsync.toml"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ERPSYNC_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        self.env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)  # compiled once, not per process (~1 s each)
        self.log = folder / "erpsync.log"
        self.serve: subprocess.Popen[bytes] | None = None
        self._mtime = time.time() - 5000  # files get increasing modification times, all in the past
        if runner == "serve":
            self.serve = subprocess.Popen(
                [sys.executable, "-m", "erpsync", "--config", str(self.config), "serve"],
                stdout=self.log.open("ab"),
                stderr=subprocess.STDOUT,
                env={**self.env, **CAMPAIGN_ENV, **(extra_env or {})},
            )

    def drop(self, name: str, data: bytes) -> None:
        """Write the file (a temp name, then a rename) with a modification time after the last one."""
        target = self.path if self.mode == "path" else self.inbox / name
        temp = target.with_name(f".{target.name}.part")
        temp.write_bytes(data)
        self._mtime += 10
        os.utime(temp, (self._mtime, self._mtime))
        os.replace(temp, target)

    def step(self, name: str, data: bytes) -> Outcome:
        """Drop the file, then one `erpsync sync`; under `serve`: the first cycle that starts after
        the drop, run to its end (any cycle in flight before the drop is waited for first, so what
        it touches is not taken for this file's doing)."""
        if self.serve is not None:
            self._cycle_after(datetime.now(UTC))
        self.drop(name, data)
        began = datetime.now(UTC)
        if self.serve is None:
            done = subprocess.run(
                [sys.executable, "-m", "erpsync", "--config", str(self.config), "sync"],
                capture_output=True, text=True, env=self.env, timeout=300, check=False,
            )  # fmt: skip
            with self.log.open("a", encoding="utf-8") as fh:
                fh.write(f"=== {name}: sync exit {done.returncode}\n{done.stdout}{done.stderr}")
            return Outcome(done.returncode, done.stdout + done.stderr, began, datetime.now(UTC))
        output = self._cycle_after(began)
        return Outcome(None, output, began, datetime.now(UTC))

    def _cycle_after(self, began: datetime) -> str:
        """Wait for a sync cycle that started after `began` to finish; what it ended with."""
        assert self.serve is not None
        deadline = time.monotonic() + CYCLE_TIMEOUT
        while time.monotonic() < deadline:
            with self.store.session() as session:
                finished = session.execute(
                    select(Cycle.id, Cycle.outcome).where(
                        Cycle.kind == "sync", Cycle.started_at > began, Cycle.finished_at.is_not(None)
                    )
                ).first()
            if finished is not None:
                return f"cycle outcome {finished[1]}"
            if self.serve.poll() is not None:
                return f"serve exited {self.serve.returncode}"
            time.sleep(0.1)
        return f"no sync cycle finished within {CYCLE_TIMEOUT:.0f} s"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def close(self) -> int | None:
        """Stop `serve` (its exit code), the simulator, and drop the state database."""
        code = None
        if self.serve is not None:
            self.serve.terminate()
            try:
                code = self.serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.serve.kill()
                code = self.serve.wait(timeout=10)
        self.sim.stop()
        self.store.dispose()
        drop_database(self.backend, self._token)
        return code
