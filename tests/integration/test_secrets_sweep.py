"""The secrets sweep: no secret reaches any output, whatever the channel, the failure or the command.

Every secret channel (state / source / write-back database password as a key, a password file, URL
userinfo, a URL query parameter, the MM API key, an API key file, userinfo in ``mm.base_url``) and
every failure mode (ERP down, state database down, MM unreachable, wrong API key, unparsable URL, bad
config, and all healthy) go through the real commands as subprocesses: ``config check``,
``sources check``, ``plan``, ``sync``, ``writeback``, ``resync --dry-run``, ``status``, ``audit`` and
``serve`` for a few cycles. Not the full product (it would take minutes): the healthy mode runs
every command, each failure mode the commands it concerns, and the log format alternates so every
mode and every command meets both - JSON on pipes, and the default ``auto`` format on a
pseudo-terminal (where it renders the console format). Collected: stdout, stderr, the terminal,
every row of every table of the state databases, ``/metrics`` and ``/readyz``. None may hold a
secret, in clear, URL-encoded, or its distinctive core.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy import MetaData, create_engine
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

from erpsync.adapters.erp.sinks.staging import install_staging
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from tests.conftest import create_database, drop_database
from tests.fixtures_mm import FAST_RETRIES
from tests.sync_helpers import ERP_TZ, Shop, local

SPECIALS = "@:/#%?&="
SERVE_CYCLES = 3  # scheduled sync runs (any outcome) before serve is stopped
SERVE_DEADLINE_SECONDS = 25
SERVE_IDLE_SECONDS = 6
COMMANDS: list[tuple[str, ...]] = [
    ("config", "check"),
    ("sources", "check"),
    ("plan",),
    ("sync",),
    ("writeback",),
    ("resync", "--all", "--dry-run"),
    ("status",),
    ("audit",),
]
SIM_KEY_CHANNEL = "mm api key"


def _secret(channel: str) -> str:
    """A distinctive secret holding every URL-special character; its core is searched for too."""
    return f"Zx{SPECIALS}{_core(channel)}{SPECIALS}q"


def _core(channel: str) -> str:
    return "Qk7" + "".join(c for c in channel.title() if c.isalnum()) + "W9"


def _forms(secret: str) -> set[str]:
    core = secret.removeprefix(f"Zx{SPECIALS}").removesuffix(f"{SPECIALS}q")
    return {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret), core}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _closed_port() -> int:
    return _free_port()  # nothing listens there once the probe socket is closed


@dataclass
class Scenario:
    """One failure mode: a config file carrying some secrets, its commands and what they printed."""

    mode: str
    index: int
    config: dict[str, dict[str, Any]]
    secrets: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    serve: tuple[str, ...] = ()
    # None: every command; else the ones the failure concerns (the format of each alternates with
    # its position, so that across modes every command runs in both formats)
    commands: list[tuple[str, ...]] | None = None
    outputs: list[tuple[str, str, int, str]] = field(default_factory=list)  # (command, format, rc, text)
    metrics: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            (directory / name).write_text(content + "\n", encoding="utf-8")
        lines: list[str] = []
        for section, values in self.config.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
        path = directory / "erpsync.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def text(self, command: str) -> str:
        return "\n".join(out for cmd, _, _, out in self.outputs if cmd == command)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _with_password(url: str, secret: str) -> str:
    return make_url(url).set(password=secret).render_as_string(hide_password=False)


def _with_query_password(url: str, secret: str) -> str:
    return f"{url}?password={quote(secret, safe='')}"


# --- running the real commands -------------------------------------------------------------------


def _env(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
    env["COLUMNS"] = "160"
    env["HOME"] = str(directory)
    return env


class _Serving:
    """While `serve` runs: scrape /metrics until a few scheduled cycles ran (or a deadline), then stop."""

    def __init__(self, port: int, scenario: Scenario) -> None:
        self.port = port
        self.scenario = scenario
        self.deadline = time.monotonic() + SERVE_DEADLINE_SECONDS
        self.last_page = ""
        self.last_ready = ""
        self.serving_since: float | None = None

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return str(response.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as exc:  # /readyz answers 503 while not ready
            return str(exc.read().decode("utf-8", errors="replace"))
        except OSError:
            return None

    def should_stop(self) -> bool:
        self.last_page = self._get("/metrics") or self.last_page
        self.last_ready = self._get("/readyz") or self.last_ready
        runs = sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.last_page.splitlines()
            if line.startswith("erpsync_job_runs_total{") and 'loop="sync"' in line
        )
        if self.last_page and self.serving_since is None:
            self.serving_since = time.monotonic()
        # a few scheduled syncs; or, when none can run (start-up recovery failing), a few seconds
        # of service after the endpoint came up
        serving = 0.0 if self.serving_since is None else time.monotonic() - self.serving_since
        return runs >= SERVE_CYCLES or serving >= SERVE_IDLE_SECONDS or time.monotonic() >= self.deadline

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        self.scenario.metrics += [self.last_page, self.last_ready]
        proc.send_signal(signal.SIGTERM)


def _run_piped(argv: list[str], directory: Path, serving: _Serving | None) -> tuple[int, str]:
    log = directory / "output.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=directory, env=_env(directory), stdout=out, stderr=subprocess.STDOUT
        )
        if serving is not None:
            while proc.poll() is None and not serving.should_stop():
                time.sleep(0.3)
            serving.stop(proc)
        rc = proc.wait(60)
    return rc, log.read_text(encoding="utf-8", errors="replace")


def _run_on_pty(argv: list[str], directory: Path, serving: _Serving | None) -> tuple[int, str]:
    """The command with stdin, stdout and stderr on a pseudo-terminal, as an admin runs it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, cwd=directory, env=_env(directory), stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 90
    next_check = time.monotonic() + 0.3
    try:
        while time.monotonic() < deadline:
            if serving is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.3
                if serving.should_stop():
                    serving.stop(proc)
                    serving = None
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(30), b"".join(chunks).decode("utf-8", errors="replace")


def _run_scenario(scenario: Scenario, root: Path) -> None:
    directory = root / scenario.mode
    config = scenario.write(directory)
    for position, command in enumerate(COMMANDS):
        if scenario.commands is not None and command not in scenario.commands:
            continue
        fmt = "json" if (scenario.index + position) % 2 == 0 else "pty"
        _run_one(scenario, directory, config, command, fmt)
    for fmt in scenario.serve:
        _run_one(scenario, directory, config, ("serve",), fmt)


def _run_one(scenario: Scenario, directory: Path, config: Path, command: tuple[str, ...], fmt: str) -> None:
    port = _free_port()
    scenario.config.setdefault("service", {})["health_port"] = port
    # JSON on pipes; on the terminal the default "auto" format, which renders the console format
    scenario.config.setdefault("logging", {})["format"] = "json" if fmt == "json" else "auto"
    scenario.write(directory)
    serving = _Serving(port, scenario) if command == ("serve",) else None
    argv = [sys.executable, "-m", "erpsync", "--config", str(config), *command]
    runner = _run_piped if fmt == "json" else _run_on_pty
    began = time.monotonic()
    rc, text = runner(argv, directory, serving)
    scenario.outputs.append((" ".join(command), fmt, rc, text))
    name = "-".join(part.strip("-") for part in command)
    (directory / f"{len(scenario.outputs):02d}-{name}-{fmt}.out").write_text(text, encoding="utf-8")
    scenario.seconds.append(time.monotonic() - began)


def _state_rows(url: str) -> Iterator[str]:
    """Every row of every table of a state database, as text."""
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(sql_select(table)):
                    yield f"{table.name}: {tuple(row)}"
    finally:
        engine.dispose()


# --- the matrix ------------------------------------------------------------------------------------


def _scenarios(erp_url: str, state_urls: dict[str, str], sim: MMSimulator) -> list[Scenario]:
    down = f"127.0.0.1:{_closed_port()}"
    mm_fast = {**FAST_RETRIES, "retry_deadline_seconds": 2, "max_attempts": 2}

    def base(mode: str, index: int, state_url: str) -> Scenario:
        return Scenario(
            mode=mode,
            index=index,
            secrets={},
            config={
                "state": {"url": state_url},
                "mm": {"base_url": sim.base_url, **mm_fast},
                "source": {"kind": "infor-visual", "url": erp_url, "timezone": ERP_TZ},
                "sync": {"interval_seconds": 1, "in_doubt_after_seconds": 1},
                "writeback": {"interval_seconds": 1, "sink": "staging"},
                "service": {"lease_ttl_seconds": 3, "lease_renew_seconds": 0.5, "lease_retry_seconds": 0.5},
            },
        )

    def channels_a(s: Scenario) -> None:
        """state password key, source URL userinfo, write-back URL query parameter, MM API key."""
        s.secrets.update(
            state_password=_secret("state password"),
            source_userinfo=_secret("source userinfo"),
            writeback_query=_secret("writeback query"),
            mm_api_key=_secret(SIM_KEY_CHANNEL),
        )
        s.config["state"]["password"] = s.secrets["state_password"]
        s.config["source"]["url"] = _with_password(s.config["source"]["url"], s.secrets["source_userinfo"])
        s.config["writeback"]["database"] = {
            "url": _with_query_password(erp_url, s.secrets["writeback_query"])
        }
        s.config["mm"]["api_key"] = s.secrets["mm_api_key"]

    def channels_b(s: Scenario) -> None:
        """state URL userinfo, source password file, write-back password key, MM API key file."""
        s.secrets.update(
            state_userinfo=_secret("state userinfo"),
            source_password_file=_secret("source password file"),
            writeback_password=_secret("writeback password"),
            mm_api_key_file=_secret("mm api key file"),
        )
        s.config["state"]["url"] = _with_password(s.config["state"]["url"], s.secrets["state_userinfo"])
        s.files["source.pw"] = s.secrets["source_password_file"]
        s.config["source"]["password_file"] = "source.pw"
        s.config["writeback"]["database"] = {"url": erp_url, "password": s.secrets["writeback_password"]}
        s.files["mm.key"] = s.secrets["mm_api_key_file"]
        s.config["mm"]["api_key_file"] = "mm.key"

    def channels_c(s: Scenario) -> None:
        """state URL query parameter, source password key, write-back password file, MM API key."""
        s.secrets.update(
            state_query=_secret("state query"),
            source_password=_secret("source password"),
            writeback_password_file=_secret("writeback password file"),
            mm_api_key=_secret("mm api key c"),
        )
        s.config["state"]["url"] = _with_query_password(s.config["state"]["url"], s.secrets["state_query"])
        s.config["source"]["password"] = s.secrets["source_password"]
        s.files["writeback.pw"] = s.secrets["writeback_password_file"]
        s.config["writeback"]["database"] = {"url": erp_url, "password_file": "writeback.pw"}
        s.config["mm"]["api_key"] = s.secrets["mm_api_key"]

    scenarios = []
    healthy = base("healthy", 0, state_urls["healthy"])
    channels_a(healthy)
    # channel A's API key is the one the simulator accepts: the happy path
    healthy.serve = ("pty",)
    scenarios.append(healthy)

    erp_down = base("erp_down", 1, state_urls["erp_down"])
    channels_b(erp_down)
    erp_down.config["source"]["url"] = f"postgresql+psycopg://erp@{down}/erp"
    erp_down.serve = ("pty", "json")  # the leak IT found: scheduled syncs failing, on a terminal
    erp_down.commands = _pick(1, 2, 3, 5, 7)  # the ones that read the ERP, and the audit trail
    scenarios.append(erp_down)

    state_down = base("state_down", 2, f"postgresql+psycopg://postgres@{down}/state")
    channels_c(state_down)
    state_down.serve = ("json",)
    state_down.commands = _pick(0, 3, 4, 6, 7)
    scenarios.append(state_down)

    mm_down = base("mm_unreachable", 3, state_urls["mm_unreachable"])
    channels_a(mm_down)
    mm_down.config["mm"]["base_url"] = f"http://{down}"
    mm_down.serve = ("pty",)
    mm_down.commands = _pick(2, 3, 4, 5)  # the ones that call MM
    scenarios.append(mm_down)

    wrong_key = base("wrong_key", 4, state_urls["wrong_key"])
    channels_b(wrong_key)
    wrong_key.serve = ("json",)
    wrong_key.commands = _pick(2, 3, 4, 5)
    scenarios.append(wrong_key)

    unparsable = base("unparsable_url", 5, state_urls["healthy"])
    channels_c(unparsable)
    unparsable.secrets["source_unparsable"] = _secret("source unparsable")
    unparsable.secrets["state_unparsable"] = _secret("state unparsable")
    # a port typo; one URL percent-encoded as it should be, the other pasted raw
    encoded = quote(unparsable.secrets["source_unparsable"], safe="")
    unparsable.config["source"]["url"] = f"postgresql+psycopg://erp:{encoded}@127.0.0.1:54x2/erp"
    unparsable.config["state"]["url"] = (
        f"postgresql+psycopg://erp:{unparsable.secrets['state_unparsable']}@127.0.0.1:54x2/state"
    )
    unparsable.commands = _pick(0, 1, 2, 3)  # a refused configuration fails alike in every command
    scenarios.append(unparsable)

    bad_config = base("bad_config", 6, state_urls["healthy"])
    channels_a(bad_config)
    bad_config.config["sync"]["interval_seconds"] = "soon"
    bad_config.config["source"]["timezone"] = "Mars/Olympus_Mons"
    bad_config.config["writeback"]["database"]["colour"] = "blue"
    bad_config.commands = _pick(4, 5, 6, 7)
    scenarios.append(bad_config)

    proxy = base("mm_base_url_userinfo", 7, state_urls["healthy"])
    channels_b(proxy)
    proxy.secrets["mm_base_url_userinfo"] = _secret("mm base url userinfo")
    proxy.config["mm"]["base_url"] = sim.base_url.replace(
        "http://", f"http://proxyuser:{quote(proxy.secrets['mm_base_url_userinfo'], safe='')}@"
    )
    proxy.commands = _pick(0, 3, 6)
    proxy.serve = ("pty",)
    scenarios.append(proxy)
    return scenarios


def _pick(*positions: int) -> list[tuple[str, ...]]:
    return [COMMANDS[position] for position in positions]


@pytest.mark.timeout(900)  # ~45 subprocesses: minutes when the machine is shared with other suites
def test_no_secret_reaches_any_output(tmp_path: Path) -> None:
    erp_url, erp_token = create_database("postgresql", tmp_path)
    state_names = ("healthy", "erp_down", "mm_unreachable", "wrong_key")
    states = {name: create_database("postgresql", tmp_path) for name in state_names}
    for url, _ in states.values():
        engine = create_db_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
    shop = Shop(erp_url, machines=3)
    install_staging(shop.engine, "ERPSYNC_RUN_COUNTS")  # the healthy write-back has somewhere to write
    try:
        for machine, op in shop.ops.items():
            if machine != shop.machines[-1]:
                shop.fx.clock_in(op, local(6))
        with MMSimulator(api_key=_secret(SIM_KEY_CHANNEL), seed=13) as sim:
            scenarios = _scenarios(erp_url, {k: url for k, (url, _) in states.items()}, sim)
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda s: _run_scenario(s, tmp_path), scenarios))
            elapsed = time.monotonic() - started
        all_secrets = {f"{s.mode}:{name}": secret for s in scenarios for name, secret in s.secrets.items()}
        leaks: list[str] = []
        surfaces = 0

        def check(where: str, text: str) -> None:
            nonlocal surfaces
            surfaces += 1
            for name, secret in all_secrets.items():
                for form in _forms(secret):
                    if form in text:
                        leaks.append(f"{name} ({form!r}) in {where}")

        for scenario in scenarios:
            for command, fmt, rc, text in scenario.outputs:
                check(f"{scenario.mode} / {command} / {fmt} (exit {rc})", text)
            for n, page in enumerate(scenario.metrics):
                check(f"{scenario.mode} / /metrics or /readyz #{n}", page)
        for name, (url, _) in states.items():
            check(f"state database of {name}", "\n".join(_state_rows(url)))
        for scenario in scenarios:
            runs = zip(scenario.outputs, scenario.seconds, strict=True)
            print(scenario.mode, [(cmd, fmt, rc, round(t, 1)) for (cmd, fmt, rc, _), t in runs])
        assert leaks == [], "\n".join(leaks)
        _the_sweep_saw_what_it_claims(scenarios)
        runs = sum(len(s.outputs) for s in scenarios)
        print(f"secrets sweep: {runs} runs, {surfaces} surfaces, {elapsed:.1f} s")
    finally:
        shop.dispose()
        for _, token in states.values():
            drop_database("postgresql", token)
        drop_database("postgresql", erp_token)


def _the_sweep_saw_what_it_claims(scenarios: list[Scenario]) -> None:
    """Each failure really happened (a sweep of runs that all failed early would prove nothing)."""
    by_mode = {s.mode: s for s in scenarios}
    formats = {(cmd, fmt) for s in scenarios for cmd, fmt, _, _ in s.outputs}
    for command in [" ".join(c) for c in COMMANDS] + ["serve"]:
        assert {fmt for cmd, fmt in formats if cmd == command} == {"json", "pty"}, command

    def rc(mode: str, command: str) -> int:
        return next(code for cmd, _, code, _ in by_mode[mode].outputs if cmd == command)

    healthy = by_mode["healthy"]
    assert rc("healthy", "writeback") == 0, healthy.text("writeback")
    assert rc("healthy", "config check") == 0, healthy.text("config check")
    assert "**********" in healthy.text("config check")
    assert rc("healthy", "sync") == 0, healthy.text("sync")
    assert "started 2" in healthy.text("sync"), healthy.text("sync")
    erp_down = by_mode["erp_down"]
    assert rc("erp_down", "sources check") == 1
    assert "database error" in erp_down.text("sources check")
    serve_log = erp_down.text("serve")
    assert serve_log.count("job failed") >= 2, serve_log
    assert "raised an exception" not in serve_log  # APScheduler's duplicate is silenced
    assert "Traceback" not in serve_log  # INFO: the error in one line, no frames, no locals
    assert rc("state_down", "status") == 1
    assert "database error" in by_mode["state_down"].text("status")
    assert rc("mm_unreachable", "sync") != 0 or "retried" in by_mode["mm_unreachable"].text("sync")
    wrong_key = by_mode["wrong_key"].text("sync") + by_mode["wrong_key"].text("serve")
    assert "401" in wrong_key or "credentials" in wrong_key, wrong_key
    for mode, key in (
        ("unparsable_url", "source.url"),
        ("bad_config", "sync.interval_seconds"),
        ("mm_base_url_userinfo", "mm.base_url"),
    ):
        for command, _, code, text in by_mode[mode].outputs:
            assert code == 2, (mode, command, text)
            assert key in text, (mode, command, text)
    assert any("erpsync_job_runs_total" in page for page in erp_down.metrics)
