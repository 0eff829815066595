"""One scenario world: a VISUAL shop with years of history, erpsync's state on SQLite, PostgreSQL or
MariaDB, a simulator behind a misbehaving proxy (tests/mm_proxy.py, faithful until the MM-fault
generator arms it), the oracle, and a running `erpsync serve`.

Everything a world is follows from its seed (`WorldParams.of`), so a violating world is replayed
with `ERPSYNC_CAMPAIGN_REPLAY=<seed>`: the state database, `sync.vanished_runs`,
`sync.heal_drift`, the history size and every trial's steps. erpsync gives an action up after
`sync.max_action_attempts = 3` and a call after `mm.retry_deadline_seconds = 3`, so long MM fault
windows reach the give-up path and a trickling answer costs seconds, not minutes. The MM API key
is random per world and the state database URL carries a password (MariaDB: a user of its own
with that password; PostgreSQL trusts loopback, so the password is in the URL but never checked):
the campaign greps erpsync's output for both.

erpsync reaches a PostgreSQL or MariaDB state database through a cutting proxy
(tests/campaign/pgproxy.py), so a trial can cut the state connection mid-transaction; the
campaign's own checks connect directly.
"""

from __future__ import annotations

import copy
import random
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from erpsync.adapters.mm.simulator import MMSimulator
from tests.campaign.invariants import MMExpectations, scenario_violations, secrets_leaked
from tests.campaign.mm_faults import excuse_given_up, excuse_run
from tests.campaign.oracle import Oracle, branches
from tests.campaign.pgproxy import CuttingProxy, TcpCuttingProxy
from tests.campaign.procs import Erpsync, campaign_config
from tests.campaign.scenarios import Scenario, ScenarioShop, Ticket, local_now
from tests.campaign.world import make_retries_due, migrated_store
from tests.conftest import create_database, drop_database
from tests.mm_proxy import MisbehavingProxy

BACKENDS = ("sqlite", "postgresql", "mariadb")
POLICIES = ("flag", "stop")
HEAL_DRIFT = ("restart", "flag")
MAX_ACTION_ATTEMPTS = 3  # sync.max_action_attempts: a long MM fault window exhausts it
MM_TIMING: dict[str, Any] = {
    "read_timeout_seconds": 1,
    "retry_deadline_seconds": 3,
}  # a slow answer costs 3 s at most
CONVERGE_SECONDS = 25.0
State = tuple[dict[int, Ticket], datetime, datetime]  # the ERP's tickets, its time, the commit's


@dataclass(frozen=True)
class WorldParams:
    """What a world is; all of it from the seed."""

    seed: int
    backend: str
    vanished_runs: str
    heal_drift: str
    history_rows: int

    @classmethod
    def of(cls, seed: int) -> WorldParams:
        """Twelve consecutive seeds cover every state database x vanished_runs x heal_drift."""
        rng = random.Random(f"world/{seed}")
        return cls(
            seed=seed,
            backend=BACKENDS[seed % 3],
            vanished_runs=POLICIES[(seed // 3) % 2],
            heal_drift=HEAL_DRIFT[(seed // 6) % 2],
            history_rows=rng.randint(20_000, 100_000),
        )

    def sync_section(self) -> dict[str, Any]:
        return {
            "vanished_runs": self.vanished_runs,
            "heal_drift": self.heal_drift,
            "max_action_attempts": MAX_ACTION_ATTEMPTS,
        }


class StateDatabase:
    """A fresh state database for one world, with a password, and the proxy erpsync goes through."""

    def __init__(self, backend: str, folder: Path, seed: int) -> None:
        self.backend = backend
        self.password = f"pw{secrets.token_hex(12)}"
        url, token = create_database(backend, folder)
        self._token = token
        self._admin: Any = None  # the admin Engine of a server database
        self._name = ""
        if isinstance(token, tuple):
            self._admin, self._name = token
        self.proxy: CuttingProxy | None = None
        self._user: str | None = None
        if backend == "sqlite":
            self.url = self.erpsync_url = url
            return
        direct = make_url(url)
        if backend == "mariadb":
            self._user = f"cw{secrets.token_hex(6)}"
            with self._admin.connect() as conn:
                for host in ("%", "localhost", "127.0.0.1"):
                    conn.execute(text(f"CREATE USER '{self._user}'@'{host}' IDENTIFIED BY '{self.password}'"))
                    conn.execute(text(f"GRANT ALL ON {self._name}.* TO '{self._user}'@'{host}'"))
            direct = direct.set(username=self._user)
            self.proxy = TcpCuttingProxy(seed=seed)
        else:
            self.proxy = CuttingProxy(seed=seed)
        direct = direct.set(password=self.password)
        self.url = direct.render_as_string(hide_password=False)
        self.erpsync_url = self.proxy.url_for(self.url)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self._user is not None:
            with self._admin.connect() as conn:
                for host in ("%", "localhost", "127.0.0.1"):
                    conn.execute(text(f"DROP USER IF EXISTS '{self._user}'@'{host}'"))
        drop_database(self.backend, self._token)


class ScenarioWorld:
    """Everything a world's trials need, in one folder; `serve` is started at once."""

    def __init__(self, folder: Path, params: WorldParams) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.params = params
        self.rng = random.Random(params.seed)
        self.api_key = f"mmkey-{secrets.token_hex(16)}"
        self.sim = MMSimulator(api_key=self.api_key, seed=params.seed, time_scale=0.001).start()
        self.proxy = MisbehavingProxy(self.sim.base_url).start()  # erpsync's mm.base_url
        self.base_faults()
        self.erp_url = f"sqlite:///{folder / 'erp.db'}"
        self.shop = ScenarioShop(self.erp_url, self.rng)
        began = time.monotonic()
        self.shop.load_history(params.history_rows, self.rng)
        self.history_seconds = time.monotonic() - began
        self.state = StateDatabase(params.backend, folder, params.seed)
        self.store = migrated_store(self.state.url)
        config = campaign_config(
            folder,
            self.erp_url,
            self.state.erpsync_url,
            self.sim,
            max_concurrency=2,
            base_url=self.proxy.url,
            **MM_TIMING,
            sections={"sync": params.sync_section()},
        )
        self.log = folder / "erpsync.log"
        self.erpsync = Erpsync(config, self.log)
        self.scenario = Scenario(self.shop, self.rng)
        self.oracle = Oracle(vanished_policy=params.vanished_runs)
        self.candidates: list[Oracle] = []  # after rapid batches: MM must match one of these
        self.closest = self.oracle  # the candidate with the fewest differences at the last check
        self.serve: Any = self.erpsync.start("serve")
        self.restarts = 0
        self._counting: set[str] = set()  # runs MM had open at the last count
        # the MM-fault generator's (tests/campaign/mm_faults.py): what it did to MM, what it names
        self.expect = MMExpectations()
        self.mm_fault = "none"  # this trial's MM fault
        self.mm_armed = False  # this trial armed MM call faults: erpsync may give actions up
        self.hook_violations: list[str] = []  # found by a check a fault hook made mid-trial
        self.last_state: State | None = None
        self.trial_base: Oracle | None = None  # the oracle before this trial's ERP states
        self.trial_states: list[State] = []
        self.excusals: list[tuple[str, str, str]] = []  # this trial's: (run id, how, why)

    def base_faults(self) -> None:
        """The world's normal MM: 20 ms per call, the proxy faithful. A fault hook
        (scenario_trials.FaultHook, the MM-fault generator) arms its own faults on top and calls
        this to disarm."""
        self.sim.set_faults({"kind": "latency", "latency_ms": 20})
        self.proxy.clear()

    def oracles(self) -> list[Oracle]:
        """The oracle, or its variants after rapid batches: what MM faults are told to."""
        return self.candidates or [self.oracle]

    def apply(self, tickets: dict[int, Ticket], at: datetime, wall: datetime) -> None:
        """The oracle follows one ERP state (kept, so MM faults can re-apply it)."""
        self.follow([(copy.deepcopy(tickets), at, wall)])

    def follow(self, states: list[State]) -> None:
        """The oracle follows this trial's ERP states: one batch, or several erpsync may have read in
        any number of cycles (then MM must match one of the variants, `branches`). The oracle as it
        was before them is kept: an action erpsync gives up later in the trial changes what the
        rule said of these states (`excused`)."""
        self.trial_base, self.trial_states, self.excusals = copy.deepcopy(self.oracle), states, []
        self._follow(self.oracle, states)

    def _follow(self, oracle: Oracle, states: list[State]) -> None:
        if len(states) > 1:
            self.candidates = branches(oracle, states)
        elif states:
            oracle.apply(*states[0])
        if states:
            self.last_state = states[-1]

    def excused(self, rid: str, how: str, why: str) -> None:
        """erpsync gave the run up or MM refused it (`how`: tests/campaign/mm_faults.py `EXCUSALS`),
        in this trial: the oracle is rebuilt as if it had known before the trial's ERP states (a run
        given up is not live to the rule: its anchor is blocked, another run may start instead), and
        the run's excusal applied again to the runs those states started."""
        self.excusals.append((rid, how, why))
        if self.trial_base is None:
            for oracle in self.oracles():
                excuse_run(oracle, rid, how, why)
            self.reapply()
            return
        base = copy.deepcopy(self.trial_base)
        for known, kind, reason in self.excusals:
            excuse_run(base, known, kind, reason)
        self.candidates = []
        self.oracle = base
        self._follow(base, self.trial_states)
        for oracle in self.oracles():
            for known, kind, reason in self.excusals:
                excuse_run(oracle, known, kind, reason)
        self.reapply()

    def reapply(self) -> None:
        """The rule once more on the last ERP state, now, after an MM fault changed what it says
        (a run ended or given up: erpsync's next cycle reads the same ERP state later)."""
        if self.last_state is not None:
            tickets = self.last_state[0]
            for oracle in self.oracles():
                oracle.apply(tickets, local_now(), datetime.now(UTC))

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.params), "folder": str(self.folder)}

    # -- the checks ---------------------------------------------------------------------------------
    def check(self) -> list[str]:
        if self.mm_armed:
            excuse_given_up(self)
        runs = self.sim.runs()
        now = datetime.now(UTC)
        options = self.candidates or [self.oracle]
        differences = [oracle.compare(runs, now) for oracle in options]
        best = min(range(len(options)), key=lambda i: len(differences[i]))
        self.closest = options[best]
        found = differences[best] + scenario_violations(
            self.shop, self.params.vanished_runs, self.sim, runs, self.store, self.shop.engine, self.expect
        )
        if not found:
            self.oracle, self.candidates = options[best], []
            self.oracle.adopt(runs)
        return found

    def converge(self, timeout: float = CONVERGE_SECONDS) -> tuple[list[str], float]:
        """Wait until every invariant holds; the violations left at the deadline otherwise."""
        began = time.monotonic()
        while True:
            found = self.check()
            waited = time.monotonic() - began
            if not found or waited > timeout:
                if not found:
                    found = secrets_leaked([self.log], [self.api_key, self.state.password], self.store)
                return found, waited
            if self.serve is not None and self.serve.poll() is not None:
                self.serve = self.erpsync.start("serve")  # it exited (e.g. lost its lease): restart
                self.restarts += 1
            time.sleep(0.25)

    def retries_due_now(self) -> None:
        make_retries_due(self.store)

    def count_parts(self) -> int:
        """MM makes parts on every run it has open for erpsync: counts only grow (set exactly). Half
        of the runs that ended since the last count report late parts (MM's final counts move after
        the stop, within write-back's settle window)."""
        grown = 0
        runs = self.sim.runs()
        for rid, run in runs.items():
            late = rid in self._counting and run["end_at"] is not None and self.rng.random() < 0.5
            if (run["end_at"] is not None and not late) or rid in self.expect.implausible:
                continue
            m = run["metrics"]
            made = self.rng.randint(1, 25)
            bad = self.rng.randint(0, 2) if made > 5 else 0
            nonconform = 1 if self.rng.random() < 0.1 else 0
            total = m["totalParts"] + made
            self.sim.set_counts(
                rid, total=total, scrap=m["scrapParts"] + bad, nonconform=m["nonconformParts"] + nonconform
            )
            grown += 1
        self._counting = {rid for rid, run in runs.items() if run["end_at"] is None}
        return grown

    # -- ending -----------------------------------------------------------------------------------
    def _release(self) -> None:
        self.erpsync.close()
        self.proxy.close()
        self.sim.stop()
        self.store.dispose()
        self.shop.dispose()
        self.state.close()

    def abort(self) -> None:
        """Something went wrong in the campaign itself: stop everything, check nothing."""
        if self.serve is not None:
            Erpsync.kill(self.serve)
            self.serve = None
        self._release()

    def close(self) -> list[str]:
        """Stop the service gracefully and check once more with nothing running."""
        if self.serve is not None:
            Erpsync.stop(self.serve)
            self.serve = None
        found = self.check()
        found += secrets_leaked([self.log], [self.api_key, self.state.password], self.store)
        self._release()
        return found
