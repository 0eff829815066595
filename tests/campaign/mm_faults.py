"""The MM-fault generator: every answer MachineMetrics (or what stands in front of it) can give, per
scenario trial (a `FaultHook` of tests/campaign/scenario_trials.py, in SCENARIO_FAULTS).

Each trial draws one family (seeded by the world's rng; `FAMILIES` and their weights):

- **call faults**, armed before the trial's ERP batch (so its starts, stops and switches meet
  them) and disarmed after its process fault, through the simulator's own faults
  (`sim.set_faults`) and the world's MisbehavingProxy (tests/mm_proxy.py `Rule`):
  - `sim_short`: today's mix (503, 429, drops, answers past the read timeout, applied-then-failed,
    dropped-after-applying) at p = 0.3 for a **short** window of 1-2 s (one attempt per action:
    sync's backoff is 5 s), so the retries after it succeed;
  - `sim_long`: one of them at p = 1 on some operations for a **long** window, during which failed
    actions are made due again until each reached `sync.max_action_attempts` (3): the give-up path
    runs, reading MM first (docs/architecture.md "Give up only after reading");
  - `html`: a 200 with an HTML page instead of MM's answer to start, stop, get or all (short or long);
  - `shape`: a 200 MM never gives (a get that is no job run, a body that is not JSON, JSON labelled
    as text, a redirect);
  - `ghost`: MM applies the start, the answer is an HTML 200 (short or long: a ghost start);
  - `stop_404` / `stop_409`: to a stop, instead of MM (it never saw it) or after MM applied it;
    a 404 as MM says it (JSON) or as a gateway does (HTML); short or long;
  - `switch_404` / `switch_409`: the same to the setup -> production switch (a production start of
    a run MM has open in setup), short;
  - `trickle`: an answer a byte every 0.05-0.2 s, HTML instead of MM or MM's own after it applied
    the call, against `mm.retry_deadline_seconds` = 3;
- **state faults**, on a settled world before the batch, converged at once (so erpsync's answer is
  checked before the ERP moves on): `lose_run` / `end_run` (MM loses a random open run, a person
  ends it by hand there: drift, healed by `sync.heal_drift`), `implausible` (MM answers 10^30 parts
  or more good parts than parts on a random counted run; the next trial makes them plausible again).

What erpsync must make of them is judged by the oracle (tests/campaign/oracle.py `drift`, `kill`,
`excuse`) and the invariants (tests/campaign/invariants.py `MMExpectations`). Only what the docs
allow is excused, and only in a trial that armed call faults (`excuse_given_up`): an action given
up or refused is a person's job when it is quarantined, and then only as docs/architecture.md says
(a start MM confirms it lacks: no run, its ticket blocked; one MM may have: maybe absent; a switch
MM refused: left in setup; a stop MM refused: may stay open).

A window is armed only once erpsync is calling MM, and stays armed a while after the trial's
process fault (a restarted `serve` takes seconds to call MM again): a window nobody meets tests
nothing. Counted per trial: the family and what was drawn (`world.mm_fault`), faults injected
(`mm:<family>`: failed calls, or 1 for a state fault) and MM calls while call faults were armed
(`mm_calls_armed`); the trial counts all its MM calls (report: overall and armed rates).
`fault_batch` runs a fixed batch under given faults the same way (tests/campaign/test_corpus.py).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from erpsync.adapters.state.tables import AuditEntry, RunBinding, SyncAction
from tests.campaign.faults import MM_FAULTS, TIMEOUT_FAULT
from tests.campaign.invariants import DRIFT_ACTIONS
from tests.campaign.oracle import TOLERANCE, Oracle, anchor_of, mm_time
from tests.campaign.scenarios import local_now
from tests.mm_proxy import HTML, JSON, Operation, Rule

if TYPE_CHECKING:
    from tests.campaign.scenario_world import ScenarioWorld

Disarm = Callable[[], dict[str, int]]

FAMILIES: dict[str, float] = {
    "none": 1,
    "sim_short": 2,
    "sim_long": 1.5,
    "html": 1.5,
    "shape": 1,
    "ghost": 1,
    "stop_404": 1,
    "stop_409": 1,
    "switch_404": 0.7,
    "switch_409": 0.7,
    "trickle": 1,
    "lose_run": 1,
    "end_run": 1,
    "implausible": 1,
}
SHORT = (1.0, 2.0)  # seconds a short window stays armed (from before the batch)
LONG_MIN, LONG_MAX = 1.5, 10.0  # a long window: until no action is left to retry, within these
DRIFT_SEEN_SECONDS = 10.0  # write-back reads every running run each 0.3 s cycle
AWAIT_CALLS = 5.0  # before arming: erpsync is calling MM (write-back reads each running run)
AFTER_PROCESS_FAULT = 0.7  # a short window stays armed at least this long after the process fault

LONG_SIM: dict[str, dict[str, Any]] = {  # one at p = 1 for a long window
    "error503:all": {"kind": "error", "status": 503},
    "error503:start,stop": {"kind": "error", "status": 503, "operations": ["start", "stop"]},
    "apply_then_fail:start": {"kind": "apply_then_fail", "operations": ["start"]},
    "apply_then_fail:all": {"kind": "apply_then_fail"},
    "drop_after_apply:stop": {"kind": "drop_after_apply", "operations": ["stop"]},
    "drop:all": {"kind": "drop"},
    "rate_limit:all": {"kind": "rate_limit", "retry_after": 0.05},
}
NOT_FOUND = json.dumps({"code": "NotFound", "message": "Job run not found", "errors": []}).encode()
CONFLICT = json.dumps({"code": "Conflict", "message": "Job run already exists", "errors": []}).encode()
HTML_404 = b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"
SHAPES: dict[str, dict[str, Any]] = {  # 200s MachineMetrics never gives (tests/mm_proxy.py Rule fields)
    "get:list": {"operation": "get", "body": b"[]", "content_type": JSON},
    "get:wrapped": {"operation": "get", "body": b'{"data": {"startAt": null}}', "content_type": JSON},
    "get:wrong_types": {
        "operation": "get",
        "body": b'{"startAt": 12, "endAt": null, "metrics": "none"}',
        "content_type": JSON,
    },
    "start:broken_json": {"operation": "start", "body": b'{"ok": tru', "content_type": JSON},
    "stop:text": {"operation": "stop", "body": b"OK", "content_type": "text/plain"},
    "start:json_as_text": {"operation": "start", "body": b"{}", "content_type": "text/plain"},
    "all:redirect": {
        "operation": None,
        "status": 302,
        "body": b"",
        "content_type": None,
        "headers": (("Location", "http://127.0.0.1:9/login"),),
    },
}


def _counts(run: dict[str, Any]) -> tuple[int, int, int, int]:
    m = run["metrics"]
    return (m["totalParts"], m["goodParts"], m["scrapParts"], m["nonconformParts"])


class MMFaults:
    """The generator, one instance for every world (it keeps nothing of its own between trials:
    the world holds what was done to it, `ScenarioWorld.expect`)."""

    def __call__(self, world: ScenarioWorld, rng: random.Random) -> Disarm:
        restore_plausible(world, rng)
        family = rng.choices(list(FAMILIES), weights=list(FAMILIES.values()))[0]
        if family in ("lose_run", "end_run"):
            return _state_fault(world, family, drift(world, rng, lost=family == "lose_run"))
        if family == "implausible":
            return _state_fault(world, family, implausible(world, rng))
        if family == "none":
            return lambda: {}
        return arm_calls(world, rng, family)


def _state_fault(world: ScenarioWorld, family: str, what: str | None) -> Disarm:
    world.mm_fault = f"{family}:{what}" if what else f"{family}:no run to take"
    return lambda: {f"mm:{family}": 1} if what else {}


# -- call faults -------------------------------------------------------------------------------------
def _switch(world: ScenarioWorld, hits: list[str]) -> Callable[[Operation, bytes], bool]:
    """The setup -> production switch: a production start of a run MM has open in setup."""

    def predicate(operation: Operation, body: bytes) -> bool:
        if operation != "start":
            return False
        try:
            data = json.loads(body)
        except ValueError:
            return False
        if not isinstance(data, dict) or data.get("startInSetup") is not False:
            return False
        rid = data.get("erpJobOperationRunId")
        if not isinstance(rid, str):
            return False
        run = world.sim.runs().get(rid)
        if run is None or run["end_at"] is not None or run["phase"] != "setup":
            return False
        hits.append(rid)
        return True

    return predicate


def _proxy_rules(
    world: ScenarioWorld, rng: random.Random, family: str, hits: list[str]
) -> tuple[str, list[Rule], bool]:
    """(what, the proxy rules, long window?) for a proxy family."""
    ops: list[Operation | None] = ["start", "stop", "get", None]
    whens: list[Literal["instead", "after"]] = ["instead", "after"]
    if family == "html":
        op = rng.choice(ops)
        long = rng.random() < 0.4
        return f"{op or 'all'}:instead", [Rule(operation=op)], long
    if family == "shape":
        name = rng.choice(sorted(SHAPES))
        return name, [Rule(**SHAPES[name])], False
    if family == "ghost":
        return "start:after", [Rule(operation="start", when="after")], rng.random() < 0.5
    if family in ("stop_404", "stop_409", "switch_404", "switch_409"):
        target, code = family.split("_")
        when = rng.choice(whens)
        status = int(code)
        html = status == 404 and rng.random() < 0.4  # a gateway's page: not MM's answer, retried
        body, kind = (HTML_404, HTML) if html else (NOT_FOUND if status == 404 else CONFLICT, JSON)
        rule = Rule(operation="stop" if target == "stop" else "start", when=when, status=status)
        rule.body, rule.content_type = body, kind
        if target == "switch":
            rule.predicate = _switch(world, hits)
        long = target == "stop" and status == 404 and rng.random() < 0.5
        return f"{when}:{'html' if html else 'json'}", [rule], long
    if family == "trickle":
        op = rng.choice(ops)
        when = rng.choice(whens)
        rule = Rule(
            operation=op,
            when=when,
            trickle_seconds=rng.uniform(0.05, 0.2),
            trickle_body_only=rng.random() < 0.3,
            passthrough=when == "after",
        )
        return f"{op or 'all'}:{when}", [rule], False
    raise ValueError(f"unknown MM fault family {family!r}")


def _talking(world: ScenarioWorld) -> None:
    """Wait (AWAIT_CALLS at most) until erpsync calls MM: a `serve` restarted by the last trial's kill takes
    seconds to start and take the lease, and a window armed meanwhile would meet no call."""
    seen, deadline = len(world.proxy.calls), time.monotonic() + AWAIT_CALLS
    while len(world.proxy.calls) == seen and time.monotonic() < deadline:
        time.sleep(0.05)


def arm_calls(world: ScenarioWorld, rng: random.Random, family: str) -> Disarm:
    """Arm one family of call faults; the disarm keeps a long window armed until erpsync gave up."""
    _talking(world)
    began = time.monotonic()
    calls_before = len(world.proxy.calls)
    hits: list[str] = []  # runs whose switch a switch rule answered
    rules: list[Rule] = []
    if family == "sim_short":
        what, long = "mix p=0.3", False
        world.sim.set_faults(
            *MM_FAULTS, TIMEOUT_FAULT, {"kind": "latency", "latency_ms": 20}, seed=rng.randrange(1 << 30)
        )
    elif family == "sim_long":
        what, long = rng.choice(sorted(LONG_SIM)), True
        world.sim.set_faults(LONG_SIM[what], {"kind": "latency", "latency_ms": 20})
    else:
        what, rules, long = _proxy_rules(world, rng, family, hits)
        world.proxy.arm(*rules)
    world.mm_fault = f"{family}:{what}:{'long' if long else 'short'}"
    world.mm_armed = True
    window = rng.uniform(*SHORT)

    def disarm() -> dict[str, int]:
        # erpsync meets the faults for a while after the process fault too (a kill's restart or a
        # cut state connection holds its cycles back meanwhile)
        _talking(world)
        if long:
            exhaust(world, time.monotonic())
        else:
            time.sleep(max(AFTER_PROCESS_FAULT, began + window - time.monotonic()))
        fired = sum(
            f["fired"]
            for f in world.sim.faults.snapshot()
            if f["kind"] != "latency" or f["latency_ms"] > 1000  # past the read timeout: a timeout
        )
        fired += sum(r.fired for r in rules)
        armed = len(world.proxy.calls) - calls_before
        world.base_faults()
        if family == "switch_409":
            world.expect.switch_refused.update(hits)
        return {f"mm:{family}": fired, "mm_calls_armed": armed}

    return disarm


def _unsettled(world: ScenarioWorld) -> int:
    with world.store.session() as session:
        return len(
            session.scalars(
                select(SyncAction.id).where(SyncAction.status.in_(("pending", "failed_retryable")))
            ).all()
        )


def exhaust(world: ScenarioWorld, began: float) -> None:
    """A long window from `began`: failed actions are due again at once (no 5-40 s backoff) until
    none is left to retry (each succeeded, or gave up after `sync.max_action_attempts`), at least
    LONG_MIN and at most LONG_MAX seconds."""
    quiet = 0
    while time.monotonic() - began < LONG_MAX:
        world.retries_due_now()
        time.sleep(0.3)
        if time.monotonic() - began >= LONG_MIN and _unsettled(world) == 0:
            quiet += 1
            if quiet >= 2:
                return
        else:
            quiet = 0


def excuse_given_up(world: ScenarioWorld) -> None:
    """In a trial that armed MM call faults: tell the oracle which actions erpsync gave up or MM
    refused (quarantined or failed for good), as the docs say it answers them. Each is recorded in
    `expect.excused_actions` (the invariants then require its quarantine entry)."""
    expect = world.expect
    with world.store.session() as session:
        rows = session.execute(
            select(
                SyncAction.id,
                SyncAction.kind,
                SyncAction.mm_run_id,
                SyncAction.status,
                SyncAction.error_message,
            ).where(SyncAction.status.in_(("quarantined", "failed_permanent")))
        ).all()
        fresh = [r for r in rows if r.id not in expect.excused_actions and r.mm_run_id]
        bindings = dict(
            session.execute(
                select(RunBinding.mm_run_id, RunBinding.status).where(
                    RunBinding.mm_run_id.in_([r.mm_run_id for r in fresh])
                )
            ).all()
        )
    for row in fresh:
        rid, binding = row.mm_run_id, bindings.get(row.mm_run_id)
        why = f"action {row.id} {row.kind} {row.status} ({world.mm_fault}): {row.error_message or ''}"[:300]
        expect.excused_actions[row.id] = (rid, why)
        if row.kind == "stop_run":
            expect.stop_refused.add(rid)
            world.excused(rid, "stop refused", why)
        elif row.kind == "start_run" and binding == "failed":
            world.excused(rid, "start refused", why)
        elif row.kind == "start_run" and binding == "unconfirmed":
            expect.unconfirmed.add(rid)
            world.excused(rid, "start unconfirmed", why)
        elif row.kind == "start_run":
            world.excused(rid, "switch refused", why)


# how an action given up or refused leaves its run (docs/architecture.md "Give up only after reading")
EXCUSALS: dict[str, str | frozenset[str]] = {
    "stop refused": "dead",  # the stop is quarantined: the run may stay open, its anchor blocked
    "start refused": "dead",  # MM refused it or confirmed it lacks it: nothing in MM, anchor blocked
    "start unconfirmed": frozenset({"presence", "phase"}),  # MM may have it; still stopped later
    "switch refused": frozenset({"phase"}),  # left in setup for a person
}


def excuse_run(oracle: Oracle, rid: str, how: str, why: str) -> None:
    """Tell one oracle how erpsync left the run (`EXCUSALS[how]`); a run it does not know is left
    to its compare (MM holds a run the rule does not explain)."""
    what = EXCUSALS[how]
    if isinstance(what, frozenset):
        oracle.excuse(rid, what, why)
    else:
        oracle.kill(rid, why)


# -- state faults ------------------------------------------------------------------------------------
def _open_runs(world: ScenarioWorld) -> list[str]:
    """Runs the oracle and MM both have open, started (a clock-in from a terminal running ahead
    starts a run in the future: FINDINGS.md O1), nothing excused, not implausible, anchor in the ERP."""
    runs = world.sim.runs()
    now = datetime.now(UTC)
    return sorted(
        r.run_id
        for r in world.oracle.expected_open()
        if r.run_id in runs
        and r.start < now
        and runs[r.run_id]["end_at"] is None
        and not r.excused
        and not r.vanished
        and r.run_id not in world.expect.implausible
    )


def _drift_row(world: ScenarioWorld, rid: str) -> Any:
    deadline = time.monotonic() + DRIFT_SEEN_SECONDS
    while time.monotonic() < deadline:
        with world.store.session() as session:
            row = session.execute(
                select(AuditEntry.action, AuditEntry.after_json)
                .where(AuditEntry.mm_run_id == rid, AuditEntry.action.in_(DRIFT_ACTIONS))
                .limit(1)
            ).first()
        if row is not None:
            return row
        time.sleep(0.2)
    return None


def drift(world: ScenarioWorld, rng: random.Random, *, lost: bool) -> str | None:
    """MM loses a random open run, or a person ends it by hand in MM; erpsync must notice with the
    reads it makes anyway and heal it by `sync.heal_drift`. Converged at once; returns what was done."""
    candidates = _open_runs(world)
    if not candidates:
        return None
    rid = rng.choice(candidates)
    run = world.sim.runs()[rid]
    at = datetime.now(UTC)
    if lost:
        world.sim.lose_run(rid)
        world.expect.lost[rid] = _counts(run) if run["manual_counts"] else None
        end = at
    else:
        end = world.sim.end_run(rid)
    heal = world.params.heal_drift
    action = "missing_in_mm" if lost else "ended_in_mm"
    world.expect.drifts[rid] = (action, "stopped" if heal == "restart" else "failed")
    what = f"{rid} {'lost' if lost else 'ended by hand'} at {end:%H:%M:%S}"
    row = _drift_row(world, rid)
    if row is None:
        world.hook_violations.append(
            f"drift: erpsync did not notice {what} within {DRIFT_SEEN_SECONDS:.0f} s"
        )
        return what
    recorded = mm_time(json.loads(row.after_json or "{}").get("mm_end_at"))
    if lost and (recorded is None or not at - TOLERANCE <= recorded <= datetime.now(UTC) + TOLERANCE):
        world.hook_violations.append(
            f"drift: {rid} lost at {at.isoformat()}, erpsync recorded its end {recorded}"
        )
    elif not lost and recorded != end:
        world.hook_violations.append(
            f"drift: {rid} ended in MM at {end.isoformat()}, erpsync recorded {recorded}"
        )
    end = recorded if lost and recorded is not None else end
    for oracle in world.oracles():
        oracle.drift(rid, end=end, lost=lost, heal=heal)
    world.reapply()
    found, _ = world.converge()
    world.hook_violations += found
    return what


def implausible(world: ScenarioWorld, rng: random.Random) -> str | None:
    """MM answers counts no ERP should get for a random counted open run: 10^30 parts, or more
    good parts than parts made. The run's counts stay so until the next trial (`restore_plausible`)."""
    runs = world.sim.runs()
    candidates = [rid for rid in _open_runs(world) if runs[rid]["manual_counts"]]
    if not candidates:
        return None
    rid = rng.choice(candidates)
    before = _counts(runs[rid])
    total, good, scrap, nonconform = before
    if rng.random() < 0.5:
        total = 10**30 + rng.randint(0, 999)
        good = total - scrap - nonconform
        what = "10^30 parts"
    else:
        total += rng.randint(1, 9)
        good, scrap, nonconform = total + rng.randint(1, 50), 0, 0
        what = "good > total"
    world.sim.set_counts(rid, total=total, good=good, scrap=scrap, nonconform=nonconform)
    world.expect.plausible[rid] = before
    world.expect.implausible[rid] = {
        "totalParts": total,
        "goodParts": good,
        "scrapParts": scrap,
        "nonconformParts": nonconform,
    }
    return f"{rid} {what}"


def restore_plausible(world: ScenarioWorld, rng: random.Random) -> None:
    """MM answers plausible counts again for the runs made implausible last trial: erpsync writes
    them and resolves the quarantine entry."""
    runs = world.sim.runs()
    for rid, (total, _, scrap, nonconform) in sorted(world.expect.plausible.items()):
        ticket = world.shop.tickets.get(anchor_of(rid) or -1)
        if rid in runs:
            world.sim.set_counts(rid, total=total + rng.randint(1, 5), scrap=scrap, nonconform=nonconform)
            if ticket is not None and not ticket.deleted:  # a deleted ticket's counts go nowhere
                world.expect.restored.add(rid)
        del world.expect.plausible[rid]
        del world.expect.implausible[rid]


# -- fixed batches (tests/campaign/test_corpus.py) ---------------------------------------------------
Step = Callable[[Any, datetime], object]  # (ERP connection, ERP-local now) -> anything


def fault_batch(
    world: ScenarioWorld,
    what: str,
    *steps: Step,
    rules: tuple[Rule, ...] = (),
    sim_faults: tuple[dict[str, Any], ...] = (),
    long: bool = False,
    window: float = 1.5,
    refused_switches: list[str] | None = None,
) -> list[str]:
    """A fixed ERP batch under MM call faults, as a campaign trial runs it: the faults armed, the
    steps in one ERP transaction (the oracle follows), MM counts parts; the faults kept armed
    `window` seconds (`long`: until erpsync gave up), disarmed, retries made due; then the
    violations left after converging (empty: every invariant holds)."""
    _talking(world)
    began = time.monotonic()
    world.mm_fault, world.mm_armed = what, True
    if sim_faults:
        world.sim.set_faults(*sim_faults, {"kind": "latency", "latency_ms": 20})
    world.proxy.arm(*rules)
    now = local_now()
    with world.shop.engine.begin() as conn:
        for step in steps:
            step(conn, now)
    world.apply(world.shop.tickets, now, datetime.now(UTC))
    world.count_parts()
    if long:
        exhaust(world, began)
    else:
        time.sleep(max(0.0, began + window - time.monotonic()))
    world.base_faults()
    world.expect.switch_refused.update(refused_switches or [])
    world.retries_due_now()
    found, _ = world.converge()
    world.mm_armed = False
    return found


def switch_rule(
    world: ScenarioWorld, status: int, when: Literal["instead", "after"], hits: list[str]
) -> Rule:
    """MM's own 404 or 409 (JSON) to the setup -> production switch of a run MM has in setup."""
    body = NOT_FOUND if status == 404 else CONFLICT
    return Rule(
        operation="start",
        when=when,
        status=status,
        body=body,
        content_type=JSON,
        predicate=_switch(world, hits),
    )
