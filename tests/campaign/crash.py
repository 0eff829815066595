"""Crash trials: `erpsync` SIGKILLed at a random moment while it syncs and writes back, restarted,
left to converge, then every invariant checked.

One world per worker (VISUAL ERP and state in SQLite files, a simulator with 120 ms latency per
call and 2 connections, so calls are in flight when the kill lands). A trial: 1-3 operators clock
out/in, MM counts parts on every open run; then the victim, chosen at random:
- `serve` (the running service, 60%): killed 0.05-0.8 s after the change, mid-sync or mid-write-back;
- `sync` or `writeback` one-shot (20% each): the service is stopped first, the command started and
  killed 0-0.5 s after its first MM call (mid-work), or in 1 of 5 trials 0.2-1 s after it started
  (during start-up: a crash before any work). One write-back in 4 instead dies at the named crash
  point between its ERP commit and its state commit, a window too narrow for a random kill.
MM keeps counting parts while erpsync is down. Then `erpsync serve` restarts (start-up recovery
reads MM first) and the trial waits until every invariant holds, up to a deadline; a world with a
violation is kept as evidence and replaced by a fresh one.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from erpsync.observability.crashpoints import CRASH_EXIT_CODE
from tests.campaign.invariants import erp_ahead, pending_actions, repeated_starts
from tests.campaign.procs import Erpsync
from tests.campaign.world import CampaignWorld

CRASH_POINT = "writeback.after_erp_commit"
LATENCY_MS = 120  # every MM call: keeps calls in flight long enough for kills to land mid-work
VICTIMS = ("serve", "sync", "writeback")
VICTIM_WEIGHTS = (0.6, 0.2, 0.2)


@dataclass
class Trial:
    worker: int
    index: int
    victim: str
    delay: float
    killed: bool
    calls_before_kill: int
    left_in_doubt: int
    erp_ahead: int
    converge_seconds: float
    seconds: float
    changes: list[str]
    violations: list[str] = field(default_factory=list)


def _first_call(world: CampaignWorld, victim: Any, calls_before: int, limit: float = 8.0) -> float:
    """Seconds until the victim's first MM call (or until it exits, or `limit`)."""
    began = time.monotonic()
    while time.monotonic() - began < limit and victim.poll() is None:
        if len(world.sim.calls()) > calls_before:
            break
        time.sleep(0.02)
    return time.monotonic() - began


def one_trial(world: CampaignWorld, rng: random.Random, worker: int, index: int) -> Trial:
    began = time.monotonic()
    victim_kind = rng.choices(VICTIMS, weights=VICTIM_WEIGHTS)[0]
    if victim_kind != "serve" and world.serve is not None:
        Erpsync.stop(world.serve)
        world.serve = None
    changes = world.floor.operate(rng, rng.randint(1, 3))
    world.floor.count_parts(world.sim, rng)
    calls_before = len(world.sim.calls())
    launched = time.monotonic()
    if victim_kind == "serve":
        assert world.serve is not None
        victim, delay = world.serve, rng.uniform(0.05, 0.8)
        time.sleep(delay)
    elif victim_kind == "writeback" and rng.random() < 0.25:
        # the narrowest window: ERP committed, erpsync's state not yet (ends like a SIGKILL, 137)
        victim_kind, delay = f"writeback, crash point {CRASH_POINT}", 0.0
        victim = world.erpsync.start("writeback", crash_at=CRASH_POINT)
        victim.wait(timeout=120)
    else:
        victim = world.erpsync.start(victim_kind)
        if rng.random() < 0.2:  # during start-up, before any work
            delay = rng.uniform(0.2, 1.0)
            time.sleep(delay)
        else:  # once it talks to MM: mid-work
            delay = _first_call(world, victim, calls_before) + rng.uniform(0.0, 0.5)
            time.sleep(max(0.0, delay - (time.monotonic() - launched)))
    killed = Erpsync.kill(victim) or victim.returncode == CRASH_EXIT_CODE
    calls = len(world.sim.calls()) - calls_before
    in_doubt = pending_actions(world.store)
    ahead = erp_ahead(world.store, world.shop.engine)
    world.floor.count_parts(world.sim, rng)  # MM keeps counting while erpsync is down
    world.serve = world.erpsync.start("serve")
    found, waited = world.converge()
    return Trial(
        worker=worker,
        index=index,
        victim=victim_kind,
        delay=round(delay, 3),
        killed=killed,
        calls_before_kill=calls,
        left_in_doubt=in_doubt,
        erp_ahead=ahead,
        converge_seconds=round(waited, 2),
        seconds=round(time.monotonic() - began, 2),
        changes=changes,
        violations=found,
    )


def crash_worker(
    worker: int, trials: int, seed: int, folder: Path, keep_logs: Path | None = None
) -> dict[str, Any]:
    """Run `trials` crash trials in fresh worlds under `folder`; returns every trial's record."""
    rng = random.Random(seed)
    records: list[Trial] = []
    generation = 0
    world = CampaignWorld(folder / f"w{worker}-{generation}", seed, latency_ms=LATENCY_MS)
    setup, _ = world.converge()
    repeats = 0
    try:
        for index in range(trials):
            trial = one_trial(world, rng, worker, index)
            records.append(trial)
            if trial.violations:  # keep the evidence, start a clean world
                repeats += repeated_starts(world.sim.calls())
                world.close()
                if keep_logs is not None:
                    shutil.copytree(world.folder, keep_logs / world.folder.name, dirs_exist_ok=True)
                generation += 1
                world = CampaignWorld(
                    folder / f"w{worker}-{generation}", seed + generation, latency_ms=LATENCY_MS
                )
                world.converge()
        repeats += repeated_starts(world.sim.calls())
    except BaseException:
        world.abort()  # no erpsync process outlives the campaign
        raise
    final = world.close()
    if final:
        records.append(
            Trial(
                worker, trials, "final check, service stopped", 0, False, 0, 0, 0, 0, 0, [], violations=final
            )
        )
    return {"trials": [asdict(t) for t in records], "setup_violations": setup, "repeated_starts": repeats}
