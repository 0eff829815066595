"""Scenario trials: the real shop's day (tests/campaign/scenarios.py) against erpsync, with process
faults, checked against the oracle (tests/campaign/oracle.py) and MM's and the ERP's own truth.

A world (tests/campaign/scenario_world.py) opens a shift, converges, then runs its trials. A trial:
1. one batch of 1-4 named ERP steps in one transaction; the oracle applies the rule to it; or (2 in
   5 trials) 2-3 batches of 1-3 steps 0-0.4 s apart, faster than erpsync's 0.3 s cycle, so it
   reads some of the states in between or none: MM must then match one of the oracle's branches;
2. MM counts parts on every open run;
3. a process fault: none, a SIGKILL of `serve` 0.05-1 s into its work (then restarted), or, with the
   state in PostgreSQL or MariaDB, erpsync's state connection cut for 1-2 s (PostgreSQL: a client
   message inside a transaction is the last one with p = 0.3; MariaDB: any message, p = 0.08);
4. the world's fault hooks (`FaultHook`; the MM-fault generator, tests/campaign/mm_faults.py) are
   armed BEFORE step 1, so the batch's starts, stops and switches meet them, and disarmed after
   step 3 (a hook may first keep its faults armed until erpsync gave up, or check a change it made
   to MM at once);
5. backed-off retries made due, then wait until every invariant holds (25 s at most).
A violating trial ends its world: the world's folder is kept, the trial is written as JSON with
its seed, and `ERPSYNC_CAMPAIGN_REPLAY=<seed>` runs that world again.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SyncAction
from tests.campaign.procs import Erpsync
from tests.campaign.scenario_world import ScenarioWorld, WorldParams
from tests.campaign.scenarios import Ticket, local_now

# (world, rng) -> disarm, which returns what was injected (`mm:<kind>` and `mm_calls_armed` for MM
# faults, anything else for process faults); the MM-fault generator is one of these
FaultHook = Callable[[ScenarioWorld, random.Random], Callable[[], dict[str, int]]]
CUT_PROBABILITY = {"postgresql": 0.3, "mariadb": 0.08}
RAPID = (1, 1, 1, 2, 3)  # batches per trial; 2 or 3 follow each other faster than erpsync's cycle
REPLAY = "ERPSYNC_CAMPAIGN_REPLAY={seed} uv run pytest tests/campaign -m campaign -k shop_scenarios"


@dataclass
class ScenarioTrial:
    seed: int
    index: int
    backend: str
    vanished_runs: str
    heal_drift: str | None
    steps: list[str]
    kinds: list[str]
    fault: str
    injected: dict[str, int]
    converge_seconds: float
    seconds: float
    oracle: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    mm_fault: str = "none"  # the MM-fault generator's draw (family:details)
    mm_injected: dict[str, int] = field(default_factory=dict)  # MM faults injected, by kind
    mm_calls: int = 0  # MM calls erpsync made during the trial (through the proxy)
    mm_calls_armed: int = 0  # ... of them while MM call faults were armed


def _check_record(
    params: WorldParams,
    index: int,
    what: str,
    found: list[str],
    steps: list[str] | None = None,
    notes: list[str] | None = None,
) -> ScenarioTrial:
    """The record of a check that is not a trial (the opening shift, the final check)."""
    p = params
    return ScenarioTrial(
        p.seed, index, p.backend, p.vanished_runs, p.heal_drift, steps or [], [what], "none", {}, 0, 0,
        notes or [], found,
    )  # fmt: skip


def _kill(world: ScenarioWorld, rng: random.Random) -> dict[str, int]:
    time.sleep(rng.uniform(0.05, 1.0))
    alive = 0
    if world.serve is not None:
        alive = int(Erpsync.kill(world.serve))
    world.serve = world.erpsync.start("serve")
    return {"kills": 1, "killed_running": alive}


def _cut(world: ScenarioWorld, rng: random.Random) -> dict[str, int]:
    proxy = world.state.proxy
    assert proxy is not None
    before = proxy.stats.cuts
    proxy.arm(CUT_PROBABILITY[world.params.backend])
    time.sleep(rng.uniform(1.0, 2.0))
    proxy.disarm()
    return {"state_cuts": proxy.stats.cuts - before, "state_cut_windows": 1}


def process_fault(world: ScenarioWorld, rng: random.Random) -> tuple[str, dict[str, int]]:
    choices = ["none", "kill"] + (["state_cut"] if world.state.proxy is not None else [])
    fault = rng.choice(choices)
    if fault == "kill":
        return fault, _kill(world, rng)
    if fault == "state_cut":
        return fault, _cut(world, rng)
    time.sleep(rng.uniform(0.0, 0.5))
    return fault, {}


def one_trial(world: ScenarioWorld, index: int, hooks: list[FaultHook]) -> ScenarioTrial:
    rng = world.rng
    began = time.monotonic()
    calls_before = len(world.proxy.calls)
    world.mm_fault, world.mm_armed, world.hook_violations = "none", False, []
    disarms = [hook(world, rng) for hook in hooks]
    batches = 0 if world.hook_violations else rng.choice(RAPID)  # a hook's check failed: stop here
    states: list[tuple[dict[int, Ticket], datetime, datetime]] = []
    steps: list[str] = []
    kinds: set[str] = set()
    for n in range(batches):
        if n:
            time.sleep(rng.uniform(0.0, 0.4))  # erpsync cycles every 0.3 s: it may see this state, or not
            steps.append("-- then, without waiting --")
        batch = world.scenario.next_batch(rng.randint(1, 4 if batches == 1 else 3))
        steps += batch.names()
        kinds |= batch.kinds()
        states.append((copy.deepcopy(world.shop.tickets), batch.at, datetime.now(UTC)))
    if batches > 1:
        kinds.add("rapid_batches")
    world.follow(states)
    world.count_parts()
    fault, injected = process_fault(world, rng) if batches else ("none", {})
    mm: dict[str, int] = {}
    for disarm in disarms:
        for kind, n in disarm().items():
            into = mm if kind.startswith("mm") else injected
            into[kind] = into.get(kind, 0) + n
    world.retries_due_now()
    found, waited = world.converge() if batches else (world.hook_violations, 0.0)
    found = world.hook_violations + found if batches else found
    p = world.params
    return ScenarioTrial(
        seed=p.seed,
        index=index,
        backend=p.backend,
        vanished_runs=p.vanished_runs,
        heal_drift=p.heal_drift,
        steps=steps,
        kinds=sorted(kinds),
        fault=fault,
        injected=injected,
        converge_seconds=round(waited, 2),
        seconds=round(time.monotonic() - began, 2),
        oracle=list(world.closest.notes),
        violations=found,
        mm_fault=world.mm_fault,
        mm_injected={k: n for k, n in mm.items() if k != "mm_calls_armed"},
        mm_calls=len(world.proxy.calls) - calls_before,
        mm_calls_armed=mm.get("mm_calls_armed", 0),
    )


def scripted(world: ScenarioWorld, *steps: Callable[[Connection, datetime], object]) -> list[str]:
    """A fixed batch (FINDINGS.md regressions): the steps in one ERP transaction, the oracle, counts,
    then the violations left after converging (empty: every invariant holds)."""
    now = local_now()
    with world.shop.engine.begin() as conn:
        for step in steps:
            step(conn, now)
    world.apply(world.shop.tickets, now, datetime.now(UTC))
    world.count_parts()
    found, _ = world.converge()
    return found


def state_dump(world: ScenarioWorld) -> dict[str, list[dict[str, Any]]]:
    """erpsync's bindings, journal, audit and quarantine, for the record (a server state database
    is dropped with its world)."""
    tables = {
        "bindings": RunBinding,
        "actions": SyncAction,
        "audit": AuditEntry,
        "quarantine": QuarantineEntry,
    }
    dump: dict[str, list[dict[str, Any]]] = {}
    with world.store.session() as session:
        for name, table in tables.items():
            rows = session.scalars(select(table)).all()
            dump[name] = [{c.key: getattr(r, c.key) for c in table.__table__.columns} for r in rows]
    return dump


def _save(trial: ScenarioTrial, world: ScenarioWorld, saved: Path, history: list[ScenarioTrial]) -> None:
    saved.mkdir(parents=True, exist_ok=True)
    record = {
        "replay": REPLAY.format(seed=trial.seed),
        "world": world.describe(),
        "trial": asdict(trial),
        "earlier_trials": [
            {"index": t.index, "steps": t.steps, "fault": t.fault, "mm_fault": t.mm_fault} for t in history
        ],
        "oracle_runs": [r.describe() for r in world.closest.runs.values()],
        "mm_expectations": asdict(world.expect),  # what the MM-fault generator did to MM
        "mm_runs": world.sim.runs(),
        "state": state_dump(world),
    }
    (saved / f"{trial.seed}-{trial.index}.json").write_text(
        json.dumps(record, indent=1, default=str), "utf-8"
    )


def run_world(
    seed: int, trials: int, folder: Path, *, saved: Path, hooks: list[FaultHook] | None = None
) -> dict[str, Any]:
    """One world's trials; stops at the first violating trial (kept in `saved` and the folder)."""
    params = WorldParams.of(seed)
    began = time.monotonic()
    world = ScenarioWorld(folder / f"world-{seed}", params)
    records: list[ScenarioTrial] = []
    try:
        opening = world.scenario.opening()
        world.apply(world.shop.tickets, opening.at, datetime.now(UTC))
        found, waited = world.converge()
        setup = time.monotonic() - began
        if found:
            trial = _check_record(params, -1, "opening", found, opening.names(), list(world.oracle.notes))
            trial.converge_seconds, trial.seconds = round(waited, 2), round(setup, 2)
            records.append(trial)
            _save(trial, world, saved, [])
        else:
            for index in range(trials):
                trial = one_trial(world, index, hooks or [])
                records.append(trial)
                if trial.violations:
                    _save(trial, world, saved, records[:-1])
                    break
    except BaseException:
        world.abort()
        raise
    final = world.close()
    violated = any(t.violations for t in records) or bool(final)
    if not violated:
        shutil.rmtree(world.folder, ignore_errors=True)  # an ERP with 100,000 tickets: tens of MB
    if not any(t.violations for t in records) and final:
        records.append(_check_record(params, len(records), "final check", final))
    return {
        "world": asdict(params),
        "trials": [asdict(t) for t in records],
        "history_seconds": round(world.history_seconds, 2),
        "setup_seconds": round(setup, 2),
        "seconds": round(time.monotonic() - began, 2),
        "restarts": world.restarts,
        "proxy": asdict(world.state.proxy.stats) if world.state.proxy is not None else None,
        "mm_calls": len(world.proxy.calls),
        "kept": str(world.folder) if violated else None,
    }
