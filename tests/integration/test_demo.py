"""`erpsync demo` as a new user runs it: a subprocess without a TTY, in a folder it creates, twice.

The second run on the same folder must start fresh (no crash, no rows of the first run), and every
command its summary prints must work afterwards, exactly as printed (only the way erpsync itself
is launched is replaced by this interpreter's ``python -m erpsync``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpsync.cli.app import app
from erpsync.config import load_settings
from erpsync.demo.workspace import MARKER, DemoFolder
from erpsync.domain.errors import ConfigError

SECONDS = 10  # the shortest demo: all operator steps still happen
COMMAND = "  $ "


@dataclass(frozen=True)
class Run:
    cwd: Path
    stdout: str
    stderr: str
    returncode: int
    wall: float

    @property
    def folder(self) -> Path:
        return self.cwd / "erpsync-demo"

    def commands(self) -> list[str]:
        return [line.removeprefix(COMMAND) for line in self.stdout.splitlines() if line.startswith(COMMAND)]


def _env() -> dict[str, str]:
    """This environment without erpsync settings (the demo must not need or use any)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_") and k != "COLUMNS"}
    return env | {"PYTHONUNBUFFERED": "1"}


def erpsync(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "erpsync", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def demo(cwd: Path) -> Run:
    began = time.monotonic()
    done = erpsync(cwd, "demo", "--seconds", str(SECONDS), "--dir", "erpsync-demo", timeout=SECONDS + 60)
    return Run(cwd, done.stdout, done.stderr, done.returncode, time.monotonic() - began)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    cwd = tmp_path_factory.mktemp("new-user")
    return demo(cwd), demo(cwd)


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the demo's output"
    return int(found.group(1))


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_both_runs_exit_0_in_time_with_plain_output(runs: tuple[Run, Run]) -> None:
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.wall < SECONDS + 30, f"the demo took {run.wall:.0f} s"
        assert "\x1b[" not in run.stdout, "no terminal: no live view, no escape codes"
        assert "shop floor:" in run.stdout and "erpsync: start_run succeeded" in run.stdout
        assert run.stderr.strip() == "", run.stderr  # logs go to the demo folder's log file


def test_summary_reports_runs_started_stopped_and_counts_written(runs: tuple[Run, Run]) -> None:
    out = runs[1].stdout
    started = number(r"runs started in MachineMetrics: (\d+)", out)
    stopped = number(r"runs started in MachineMetrics: \d+, stopped: (\d+)", out)
    writes = number(r"part counts written onto labor tickets: (\d+) writes", out)
    assert started >= 5  # two open at the start, setup, run, the next job; more when time allows
    assert stopped >= 2  # the setup ticket and a clock-out at least
    assert writes >= 1
    assert "quarantined: 1 run(s) on a machine MachineMetrics did not know" in out


def test_second_run_started_fresh_and_its_databases_hold_what_it_reported(runs: tuple[Run, Run]) -> None:
    run = runs[1]
    state, erp = run.folder / "state.db", run.folder / "erp.db"
    outcomes = dict(
        ((str(action), str(outcome)), int(str(n)))
        for action, outcome, n in query(
            state, "SELECT action, outcome, COUNT(*) FROM erpsync_audit GROUP BY 1, 2"
        )
    )
    # only this run's rows: the counts match its own summary, not the sum of both runs
    assert outcomes[("start_run", "succeeded")] == number(
        r"runs started in MachineMetrics: (\d+)", run.stdout
    )
    assert outcomes[("write_counts", "written")] == number(r"labor tickets: (\d+) writes", run.stdout)
    assert outcomes[("start_run", "quarantined")] == 1
    # counts landed on the operators' open labor tickets in the demo ERP (nobody types on open ones)
    written = query(erp, "SELECT COUNT(*) FROM LABOR_TICKET WHERE CLOCK_OUT IS NULL AND GOOD_QTY > 0")
    assert int(str(written[0][0])) >= 1
    assert sorted(p.name for p in run.folder.iterdir() if not p.name.endswith(("-wal", "-shm"))) == sorted(
        [MARKER, "erp.db", "erpsync-demo.log", "erpsync.toml", "state.db"]
    )


def test_the_printed_commands_work_afterwards(runs: tuple[Run, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    run = runs[1]
    commands = run.commands()
    sql = [c for c in commands if c.startswith("sqlite3 ")]
    cli = [shlex.split(c) for c in commands if " --config " in c]
    assert len(sql) >= 2 and len(cli) >= 2, commands
    for command in sql:
        argv = shlex.split(command)
        if shutil.which("sqlite3"):
            done = subprocess.run(argv, cwd=run.cwd, capture_output=True, text=True, timeout=30, check=False)
            assert done.returncode == 0 and done.stdout.strip(), (command, done.stderr)
        else:
            assert query(run.cwd / argv[-2], argv[-1]), command
    # erpsync's own commands in-process (the same code as the console script, minus start-up time)
    monkeypatch.chdir(run.cwd)
    for env in [k for k in os.environ if k.startswith("ERPSYNC_")]:
        monkeypatch.delenv(env)
    for argv in cli:
        result = CliRunner().invoke(app, argv[argv.index("erpsync") + 1 :])  # after `uv run` / `python -m`
        assert result.exit_code == 0, (argv, result.output)
        assert result.output.strip(), argv
    audit = next(argv for argv in cli if "audit" in argv)
    result = CliRunner().invoke(app, [*audit[audit.index("erpsync") + 1 :], "--json"])
    assert '"action": "start_run"' in result.output


def test_the_config_left_behind_reads_the_demo_databases_without_the_key(runs: tuple[Run, Run]) -> None:
    folder = runs[1].folder
    text = (folder / "erpsync.toml").read_text(encoding="utf-8")
    assert "api_key" not in text
    settings = load_settings(folder / "erpsync.toml")
    assert settings.state.url == f"sqlite:///{(folder / 'state.db').resolve().as_posix()}"
    assert settings.source is not None and settings.source.url.endswith("/erp.db")
    assert settings.writeback.sink == "visual-labor-ticket"
    assert settings.mm.api_key is None  # the simulator is gone: nothing could call MachineMetrics
    assert settings.mm.base_url.startswith("http://127.0.0.1:")


def test_the_demo_never_empties_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_text("someone else's", encoding="utf-8")
    with pytest.raises(ConfigError, match="not empty and was not made by `erpsync demo`"):
        DemoFolder(tmp_path).prepare()
    assert (tmp_path / "state.db").read_text(encoding="utf-8") == "someone else's"

    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not a folder"):
        DemoFolder(tmp_path / "file").prepare()
    with pytest.raises(
        ConfigError, match=r"cannot prepare the demo folder .*pass --dir with a folder you can"
    ):
        DemoFolder(tmp_path / "file" / "below").prepare()


def test_a_demo_folder_is_emptied_of_the_demos_files_only(tmp_path: Path) -> None:
    folder = DemoFolder(tmp_path / "d")
    folder.prepare()
    for name in ("state.db", "state.db-wal", "erp.db", "erpsync.toml", "notes.txt"):
        (folder.root / name).write_text("old", encoding="utf-8")
    folder.prepare()
    assert sorted(p.name for p in folder.root.iterdir()) == [MARKER, "notes.txt"]
