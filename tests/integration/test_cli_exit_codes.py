"""Exit codes tell the truth (issue #15, case 8): each command in each failure mode, as a person runs it.

The real CLI in a subprocess (`python -m erpsync`), the simulator over loopback HTTP, a VISUAL ERP
and erpsync's state on SQLite (the login cases on MariaDB and PostgreSQL). One case is a world
(`Scenario`: what is wrong), a command and the code it must exit with; the README's exit-code table
is checked against these cases, so every command row and code it documents is exercised.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from erpsync.adapters.erp.sinks.staging import install_staging
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import SyncAction
from erpsync.config import WritebackSettings, load_settings
from tests.integration.test_writeback_plausible_counts import RunProxy
from tests.mm_proxy import JSON, MisbehavingProxy, Rule
from tests.sync_helpers import Shop, local, sync_cycle, write_config

README = Path(__file__).resolve().parents[2] / "README.md"
# short MM deadlines: an unreachable MM costs a fraction of a second per call
QUICK_MM = {"retry_deadline_seconds": 1, "max_attempts": 2, "connect_timeout_seconds": 0.5}
WRONG_KEY = "a-wrong-key-5150"
BAD_PASSWORD = "not-the-pw-8086"


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    """A shop where the runs of HAAS-1 are bound and started in MM (with part counts) and HAAS-2
    has just clocked in: a sync has one start to make, a resync two runs to read, a write-back one
    run to read and write."""

    tmp: Path
    sim: MMSimulator
    erp_url: str
    state_url: str
    good: Path

    def config(self, name: str, *, sections: dict[str, dict[str, Any]] | None = None, **mm: Any) -> Path:
        return write_config(
            self.tmp / f"{name}.toml",
            self.erp_url,
            self.state_url,
            self.sim,
            sections=sections,
            **{**QUICK_MM, **mm},
        )

    def edited(self, name: str, old: str, new: str, base: Path | None = None) -> Path:
        path = self.tmp / f"{name}.toml"
        source = (base or self.good).read_text(encoding="utf-8")
        assert old in source, old
        path.write_text(source.replace(old, new), encoding="utf-8")
        return path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    shop = Shop(erp_url, machines=2)
    shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
    install_staging(shop.engine, WritebackSettings().staging_table)
    state = StateStore(create_db_engine(state_url))
    migrate.upgrade(state.engine)
    with MMSimulator(seed=8) as sim:
        w = World(tmp_path, sim, erp_url, state_url, tmp_path / "good.toml")
        w.good = w.config("good")
        sync_cycle(load_settings(w.good), state)  # HAAS-1's run: bound, started in MM
        assert set(sim.runs()) == {"erp:LT1"}
        sim.set_counts("erp:LT1", total=12, scrap=1)
        shop.fx.clock_in(shop.ops["HAAS-2"], local(9))
        yield w
    state.dispose()
    shop.dispose()


# -- the scenarios: what is wrong in the world, as the configuration a command runs with ----------


def all_fine(w: World) -> Path:
    return w.good


def mm_refused(w: World) -> Path:
    """Nothing listens at mm.base_url: every MM call is refused."""
    return w.edited("refused", w.sim.base_url, f"http://127.0.0.1:{free_port()}")


def mm_https_on_http(w: World) -> Path:
    """mm.base_url says https, the server speaks http: no answer can be read."""
    return w.edited("https", w.sim.base_url, w.sim.base_url.replace("http://", "https://"))


def mm_refused_give_up(w: World) -> Path:
    """MM refused and sync.max_action_attempts = 1: the start is given up in this very cycle."""
    refused = mm_refused(w)
    return w.edited("give-up", "[sync]\n", "[sync]\nmax_action_attempts = 1\n", base=refused)


def mm_wrong_key(w: World) -> Path:
    return w.edited("wrong-key", w.sim.api_key, WRONG_KEY)


def implausible_counts(w: World) -> Path:
    """MM answers more good parts than parts for HAAS-1's run."""
    w.sim.set_counts("erp:LT1", total=10, good=15)
    return w.good


def config_not_toml(w: World) -> Path:
    return w.edited("not-toml", "[mm]\n", "[mm\n")


def api_key_missing(w: World) -> Path:
    return w.edited("no-key", f'api_key = "{w.sim.api_key}"\n', "")


def erp_unreadable(w: World) -> Path:
    """source.url is a SQLite file in a directory that does not exist: it cannot be opened."""
    return w.edited("erp-gone", w.erp_url, f"sqlite:///{w.tmp / 'no-such-dir' / 'erp.db'}")


def erp_not_a_database(w: World) -> Path:
    """source.url is a file that is not a database (a damaged or wrong file)."""
    junk = w.tmp / "junk.db"
    junk.write_bytes(b"this is not a SQLite database, " * 64)
    return w.edited("erp-junk", w.erp_url, f"sqlite:///{junk}")


def erp_table_missing(w: World) -> Path:
    """The ERP database has no LABOR_TICKET table: the configuration points at the wrong place."""
    engine = create_db_engine(w.erp_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE LABOR_TICKET"))
    engine.dispose()
    return w.good


def state_login_refused(w: World) -> Path:
    """state.url names a MariaDB user with a password the server refuses."""
    url = f"mysql+pymysql://root:{BAD_PASSWORD}@127.0.0.1:3306/test"
    return w.edited("state-login", w.state_url, url)


def source_login_refused(w: World) -> Path:
    """source.url names a PostgreSQL role that does not exist."""
    return w.edited("source-login", w.erp_url, "postgresql+psycopg://no_such_role_x@127.0.0.1:5432/test")


def state_unreachable(w: World) -> Path:
    """Nothing listens at state.url's port."""
    return w.edited("state-gone", w.state_url, f"postgresql+psycopg://root@127.0.0.1:{free_port()}/x")


Scenario = Callable[[World], Path]

COMMANDS = {
    "sync": ("sync",),
    "resync": ("resync", "--all"),
    "resync --dry-run": ("resync", "--all", "--dry-run"),
    "writeback": ("writeback",),
    "writeback --dry-run": ("writeback", "--dry-run"),
    "plan": ("plan",),
    "sources check": ("sources", "check"),
}


@dataclass(frozen=True)
class Case:
    scenario: Scenario
    command: str
    code: int
    stderr: tuple[str, ...] = ()  # each must be in stderr ({url}: MM's configured base URL)
    stdout: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.scenario.__name__}-{self.command.replace(' ', '')}-{self.code}"


REFUSED_URL = ("Connection refused", "talking to {url}")
CASES = [
    *(Case(all_fine, command, 0) for command in COMMANDS),
    Case(mm_refused, "sync", 1, ("1 action not done: 1 left retrying", *REFUSED_URL)),
    Case(mm_refused, "resync", 1, ("could not read 2 runs from MachineMetrics", *REFUSED_URL)),
    Case(mm_refused, "resync --dry-run", 1, ("could not read 2 runs from MachineMetrics", *REFUSED_URL)),
    Case(mm_refused, "writeback", 1, ("could not read 1 run from MachineMetrics", *REFUSED_URL)),
    Case(mm_refused, "writeback --dry-run", 1, ("could not read 1 run from MachineMetrics", *REFUSED_URL)),
    Case(mm_refused, "plan", 0),  # plan never asks MM
    Case(mm_refused, "sources check", 0),
    Case(mm_https_on_http, "sync", 1, ("1 action not done", "talking to {url}")),
    Case(mm_https_on_http, "resync --dry-run", 1, ("could not read 2 runs", "talking to {url}")),
    Case(mm_refused_give_up, "sync", 1, ("1 action not done: 1 given up", *REFUSED_URL)),
    *(
        Case(mm_wrong_key, command, 2, ("HTTP 401", "check mm.api_key"))
        for command in ("sync", "resync", "resync --dry-run", "writeback", "writeback --dry-run")
    ),
    Case(
        implausible_counts,
        "writeback",
        1,
        ("1 run answered implausible part counts, quarantined and not written: erp:LT1",),
        ("1 with implausible counts", "goodParts (15) is more than totalParts (10)"),
    ),
    Case(implausible_counts, "writeback --dry-run", 1, ("implausible part counts",), ("1 with implausible",)),
    *(Case(config_not_toml, command, 2, ("not valid TOML",)) for command in COMMANDS),
    *(
        Case(api_key_missing, command, 2, ("mm.api_key: required",))
        for command in ("sync", "resync", "resync --dry-run", "writeback")
    ),
    *(
        Case(erp_unreadable, command, 1, ("source.url", "unable to open database file"))
        for command in ("sync", "resync", "resync --dry-run", "plan", "sources check")
    ),
    Case(erp_unreadable, "writeback", 1, ("unable to open database file",)),
    *(
        Case(erp_not_a_database, command, 1, ("source.url", "not a database"))
        for command in ("sync", "plan", "sources check")
    ),
    *(
        Case(erp_table_missing, command, 2, ("LABOR_TICKET",))
        for command in ("sync", "resync", "plan", "sources check")
    ),
    *(
        Case(state_login_refused, command, 2, ("state.url", "Access denied"))
        for command in ("sync", "resync", "resync --dry-run", "writeback", "plan")
    ),
    *(
        Case(source_login_refused, command, 2, ("source.url", 'role "no_such_role_x" does not exist'))
        for command in ("sources check", "plan")
    ),
    *(
        Case(state_unreachable, command, 1, ("state.url", "Connection refused"))
        for command in ("sync", "writeback", "plan")
    ),
]


def erpsync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exit_code(world: World, case: Case) -> None:
    config = case.scenario(world)
    mm_url = load_base_url(config)
    before = world.sim.runs()
    done = erpsync(config, *COMMANDS[case.command])
    said = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == case.code, said
    assert "Traceback" not in done.stderr, said
    for part in case.stderr:
        assert part.format(url=mm_url) in done.stderr, said
    for part in case.stdout:
        assert part in done.stdout, said
    assert "MachineMetrics matches" not in done.stdout or case.code == 0, said
    assert WRONG_KEY not in done.stdout + done.stderr and BAD_PASSWORD not in done.stdout + done.stderr
    if case.code != 0 and case.command not in ("sync", "resync"):
        assert world.sim.runs() == before, "a failed read-only or write-back command changed MM"


def load_base_url(config: Path) -> str:
    found = re.search(r'base_url = "([^"]+)"', config.read_text(encoding="utf-8"))
    return found.group(1) if found else ""


# -- what the codes say about the world afterwards ------------------------------------------------


def test_sync_exits_1_until_the_journal_is_settled(world: World) -> None:
    """MM unreachable: 1. MM back while the start waits out its backoff: still 1 (the journal holds
    it unsent). Once it is due, the cycle sends it: 0, and MM has the run."""
    refused = erpsync(mm_refused(world), "sync")
    assert refused.returncode == 1, refused.stderr
    assert "retried 1" in refused.stdout
    assert set(world.sim.runs()) == {"erp:LT1"}  # LT2's start is journaled, not sent
    waiting = erpsync(world.good, "sync")
    assert waiting.returncode == 1, waiting.stdout + waiting.stderr
    assert "retried 0" in waiting.stdout
    assert "1 more action unsettled in the journal" in waiting.stderr
    retries_due_now(world)
    back = erpsync(world.good, "sync")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "recovered 1" in back.stdout
    assert [line for line in back.stderr.splitlines() if line.startswith("error:")] == []
    assert set(world.sim.runs()) == {"erp:LT1", "erp:LT2"}


def retries_due_now(world: World) -> None:
    """Backed-off retries become due at once (the test does not wait out the backoff)."""
    store = StateStore(create_db_engine(world.state_url))
    with store.session() as session:
        session.execute(
            update(SyncAction).where(SyncAction.status == "failed_retryable").values(next_attempt_at=None)
        )
    store.dispose()


def test_plan_does_not_claim_to_know_mm(world: World) -> None:
    """plan compares the ERP with erpsync's records: with MM's runs gone it still finds nothing to
    do for HAAS-1 and says so without claiming MM matches; a resync reads MM and re-starts it."""
    sync = erpsync(world.good, "sync")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    world.sim.reset()
    plan = erpsync(world.good, "plan")
    assert plan.returncode == 0, plan.stderr
    assert "MachineMetrics matches" not in plan.stdout
    assert "erpsync's records" in plan.stdout
    dry = erpsync(world.good, "resync", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "erp:LT1" in dry.stdout and "erp:LT2" in dry.stdout


def test_resync_reads_what_it_can_and_says_how_many_it_could_not(world: World) -> None:
    """MM lost both runs; a gateway fails every read of LT1's: LT2 is re-started, LT1 left alone."""
    erpsync(world.good, "sync")
    world.sim.reset()
    with RunProxy(world.sim.base_url) as proxy:
        proxy.arm_run("erp:LT1", Rule("get", status=503, body=b'{"code": "Unavailable"}', content_type=JSON))
        config = world.edited("proxied", world.sim.base_url, proxy.url)
        done = erpsync(config, "resync", "--all")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not read 1 run from MachineMetrics, left alone (erp:LT1)" in done.stderr
    assert "HTTP 503" in done.stderr
    assert "MachineMetrics matches" not in done.stdout
    assert "2 runs selected, MM read for 1" in done.stdout
    # LT2, read as lost, is recorded stopped (missing_in_mm): the next sync starts its next
    # generation, so its counts so far stay with the ticket; LT1, unread, is left alone
    assert world.sim.runs() == {}
    synced = erpsync(world.good, "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert set(world.sim.runs()) == {"erp:LT2.g2"}


def test_a_web_page_at_mm_base_url_is_no_answer_sync_and_resync_exit_1(world: World) -> None:
    """A web app (or a captive portal) answers every call with an HTML 200: nothing is taken as
    MM's "OK", sync and resync exit 1 naming mm.base_url, MM is untouched; fixed, sync exits 0."""
    before = world.sim.runs()
    with MisbehavingProxy(world.sim.base_url) as proxy:
        proxy.arm(Rule())  # every operation: an HTML page with 200, never forwarded
        config = world.edited("web_app", world.sim.base_url, proxy.url)
        synced = erpsync(config, "sync")
        resynced = erpsync(config, "resync", "--all", "--dry-run")
    assert synced.returncode == 1, synced.stdout + synced.stderr
    assert "1 action not done: 1 left retrying" in synced.stderr and "mm.base_url" in synced.stderr
    assert resynced.returncode == 1, resynced.stdout + resynced.stderr
    assert "could not read 2 runs from MachineMetrics" in resynced.stderr
    assert "MachineMetrics matches" not in resynced.stdout
    assert world.sim.runs() == before  # LT2's start never reached MM
    retries_due_now(world)
    fixed = erpsync(world.good, "sync")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert set(world.sim.runs()) == {"erp:LT1", "erp:LT2"}


# -- the README's table -----------------------------------------------------------------------------


def readme_table() -> dict[str, dict[int, str]]:
    """README's "Exit codes" table: `command` -> {code: what it means} ("-" cells left out; the
    "other commands" row names no command)."""
    section = README.read_text(encoding="utf-8").split("### Exit codes", 1)[1].split("\n#", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["command", "0", "1", "2"], header
    table: dict[str, dict[int, str]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if re.fullmatch(r"`[^`]+`", cells[0]):
            codes = {code: cells[1 + code] for code in (0, 1, 2)}
            table[cells[0].strip("`")] = {code: said for code, said in codes.items() if said not in ("-", "")}
    return table


def test_readme_exit_code_table_is_what_the_commands_do() -> None:
    table = readme_table()
    exercised = {(case.command, case.code) for case in CASES}
    documented = {(command, code) for command, codes in table.items() for code in codes}
    assert set(COMMANDS) <= set(table), "a command tested here is missing from the README table"
    assert {c for c, _ in documented} <= set(COMMANDS), "a README row names a command not tested here"
    assert documented <= exercised, f"documented but never exercised: {sorted(documented - exercised)}"
    assert exercised <= documented, f"exercised but not documented: {sorted(exercised - documented)}"
