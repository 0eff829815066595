"""The campaign's fixed corpus: one deterministic batch sequence per defect class of the MM-answers
issue (#15, cases 1-7) and the shop-floor issue (#19: crews, final counts after a late clock-out,
one bad cell), so a regression shows as a violation.

Each runs in a scenario world (a VISUAL shop, state on SQLite, the MM simulator behind the
MisbehavingProxy, a running `erpsync serve`; tests/campaign/scenario_world.py) and is judged by the
same oracle and invariants as the campaign's random trials: every step asserts that no invariant
is violated (`[]`), and a few assert that the fault really took the path it is about. Marked
`campaign`: not part of the default run (`uv run pytest -m campaign tests/campaign/test_corpus.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SyncAction
from erpsync.runtime.logging import configure_logging
from tests.campaign.mm_faults import NOT_FOUND, drift, fault_batch, switch_rule
from tests.campaign.scenario_trials import scripted
from tests.campaign.scenario_world import ScenarioWorld, WorldParams
from tests.campaign.scenarios import Op, Ticket
from tests.mm_proxy import HTML, JSON, Rule

pytestmark = [pytest.mark.campaign, pytest.mark.timeout(300)]

MakeWorld = Callable[..., ScenarioWorld]


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[MakeWorld]:
    configure_logging("WARNING", "json")
    worlds: list[ScenarioWorld] = []

    def make(heal: str = "restart", policy: str = "flag") -> ScenarioWorld:
        params = WorldParams(1717, "sqlite", policy, heal, history_rows=1000)
        worlds.append(ScenarioWorld(tmp_path / f"world{len(worlds)}", params))
        return worlds[-1]

    yield make
    for w in worlds:
        w.abort()


def _in(world: ScenarioWorld, op: Op, kind: str, ago: timedelta, into: list[Ticket]) -> Callable[..., None]:
    def step(conn: Connection, now: datetime) -> None:
        into.append(world.shop.clock_in(conn, op, now - ago, kind, world.rng))

    return step


def clock_in(world: ScenarioWorld, op: Op, kind: str = "R", ago: timedelta = timedelta(minutes=30)) -> Ticket:
    made: list[Ticket] = []
    assert scripted(world, _in(world, op, kind, ago, made)) == []
    return made[0]


def rid(ticket: Ticket, generation: int = 1) -> str:
    return f"erp:LT{ticket.id}" + (f".g{generation}" if generation > 1 else "")


def audit(world: ScenarioWorld, run: str, action: str) -> list[AuditEntry]:
    with world.store.session() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.mm_run_id == run, AuditEntry.action == action)
            )
        )


def binding_status(world: ScenarioWorld, run: str) -> str | None:
    with world.store.session() as session:
        return session.scalar(select(RunBinding.status).where(RunBinding.mm_run_id == run))


# -- issue #15, the MM answers ----------------------------------------------------------------------
def test_case1_an_html_200_to_a_start_is_no_start(make_world: MakeWorld) -> None:
    """A web page answering 200 to every start for a while: not a start; sent again once MM
    answers, and no `succeeded` start row for a run MM never had (audit_claims)."""
    world = make_world()
    made: list[Ticket] = []
    html = Rule(operation="start")
    op = world.shop.ops[world.shop.machines[0]][0]
    assert (
        fault_batch(world, "html:start", _in(world, op, "R", timedelta(minutes=20), made), rules=(html,))
        == []
    )
    assert html.fired >= 1
    assert world.sim.runs()[rid(made[0])]["end_at"] is None


def test_case2_a_ghost_start_given_up_is_settled_by_reading_mm(make_world: MakeWorld) -> None:
    """MM applies the start, every answer is lost until sync.max_action_attempts: the give-up
    reads MM, finds the run and settles the start as done; the clock-out stops it."""
    world = make_world()
    made: list[Ticket] = []
    op = world.shop.ops[world.shop.machines[1]][0]
    ghost = ({"kind": "apply_then_fail", "operations": ["start"]},)
    step = _in(world, op, "R", timedelta(minutes=20), made)
    assert fault_batch(world, "ghost", step, sim_faults=ghost, long=True) == []
    lost = [c for c in world.sim.calls() if c["run_id"] == rid(made[0]) and c["fault"] == "apply_then_fail"]
    assert lost  # MM applied the start and answered 500
    assert [a.outcome for a in audit(world, rid(made[0]), "start_run")][-1] == "succeeded"
    assert scripted(world, lambda conn, now: world.shop.clock_out(conn, made[0], now)) == []


def test_case2_a_ghost_start_mm_cannot_confirm_is_still_stopped_at_clock_out(make_world: MakeWorld) -> None:
    """The same ghost start while MM's reads fail too: given up `unconfirmed` (MM may have it,
    quarantined for a person); the ERP's clock-out must still stop the MM run."""
    world = make_world()
    made: list[Ticket] = []
    op = world.shop.ops[world.shop.machines[2]][0]
    step = _in(world, op, "R", timedelta(minutes=20), made)
    assert (
        fault_batch(world, "ghost, reads fail", step, sim_faults=({"kind": "apply_then_fail"},), long=True)
        == []
    )
    assert binding_status(world, rid(made[0])) == "unconfirmed"
    assert world.sim.runs()[rid(made[0])]["end_at"] is None  # MM took it
    assert scripted(world, lambda conn, now: world.shop.clock_out(conn, made[0], now)) == []
    assert world.sim.runs()[rid(made[0])]["end_at"] is not None


@pytest.mark.parametrize("body", ["mm", "gateway"])
def test_case3_a_404_to_a_stop_is_not_nothing_to_stop(make_world: MakeWorld, body: str) -> None:
    """A 404 to the stop, MM's own (JSON) or a gateway's page, while MM still has the run: not
    "nothing to stop"; the stop is sent again and MM ends the run."""
    world = make_world()
    ticket = clock_in(world, world.shop.ops[world.shop.machines[3]][0])
    rule = Rule(operation="stop", status=404, body=NOT_FOUND, content_type=JSON)
    if body == "gateway":
        rule.body, rule.content_type = b"<html><body>404 Not Found</body></html>", HTML
    out = fault_batch(
        world, "stop_404", lambda conn, now: world.shop.clock_out(conn, ticket, now), rules=(rule,)
    )
    assert out == []
    assert rule.fired >= 1 and world.sim.runs()[rid(ticket)]["end_at"] is not None


@pytest.mark.parametrize("when", ["instead", "after"])
def test_case4_a_409_to_the_switch_is_quarantined_not_a_success(make_world: MakeWorld, when: str) -> None:
    """A 409 to the setup -> production switch (MM never got it, or applied it and the answer says
    409): never a success; MM's run does not show its phase, so erpsync quarantines the switch for
    a person (refused_switches; MM left in setup is excused only then). The run is still stopped
    at the clock-out."""
    world = make_world()
    op = world.shop.ops[world.shop.machines[4]][0]
    setup = clock_in(world, op, "S", timedelta(minutes=40))
    hits: list[str] = []
    crew: list[Ticket] = []
    rule = switch_rule(world, 409, "instead" if when == "instead" else "after", hits)
    step = _in(world, op, "R", timedelta(0), crew)
    assert fault_batch(world, "switch_409", step, rules=(rule,), refused_switches=hits) == []
    assert hits == [rid(setup)]
    with world.store.session() as session:
        assert (
            session.scalar(select(QuarantineEntry.status).where(QuarantineEntry.record_key == rid(setup)))
            == "open"
        )
    phase = world.sim.runs()[rid(setup)]["phase"]
    assert phase == ("setup" if when == "instead" else "production")

    def out(conn: Connection, now: datetime) -> None:
        world.shop.clock_out(conn, setup, now)
        world.shop.clock_out(conn, crew[0], now)

    assert scripted(world, out) == []


def test_case5_an_answer_trickled_a_byte_a_second_does_not_hold_the_cycle(make_world: MakeWorld) -> None:
    """Every start answered one byte a second (an HTML page: minutes): each call ends at
    mm.retry_deadline_seconds (3 s), the starts go through once MM answers, and another machine's
    stop is not held up meanwhile."""
    world = make_world()
    other = clock_in(world, world.shop.ops[world.shop.machines[5]][0])
    made: list[Ticket] = []
    slow = Rule(operation="start", trickle_seconds=1.0)
    op = world.shop.ops[world.shop.machines[0]][0]

    def steps(conn: Connection, now: datetime) -> None:
        _in(world, op, "R", timedelta(minutes=5), made)(conn, now)
        world.shop.clock_out(conn, other, now)

    assert fault_batch(world, "trickle:start", steps, rules=(slow,), window=5.0) == []
    assert slow.fired >= 1
    assert world.sim.runs()[rid(made[0])]["end_at"] is None


@pytest.mark.parametrize("what", ["huge", "good_above_total"])
def test_case6_implausible_counts_are_quarantined_never_written(make_world: MakeWorld, what: str) -> None:
    """MM answers 10^30 parts (or more good parts than parts): quarantined with MM's values, the
    ERP keeps the counts written before; once MM answers plausible counts they are written and the
    entry resolves (ticket_counts, quarantine_expected)."""
    world = make_world()
    ticket = clock_in(world, world.shop.ops[world.shop.machines[1]][0])
    run = rid(ticket)
    assert scripted(world, lambda conn, now: None) == []  # counted and written
    before = world.sim.runs()[run]["metrics"]
    counts = (before["totalParts"], before["goodParts"], before["scrapParts"], before["nonconformParts"])
    total = 10**30 if what == "huge" else counts[0] + 3
    good = total if what == "huge" else total + 7
    world.sim.set_counts(run, total=total, good=good, scrap=0, nonconform=0)
    world.expect.plausible[run] = counts
    world.expect.implausible[run] = {
        "totalParts": total,
        "goodParts": good,
        "scrapParts": 0,
        "nonconformParts": 0,
    }
    found, _ = world.converge()
    assert found == []
    world.sim.set_counts(run, total=counts[0] + 5, scrap=counts[2], nonconform=counts[3])
    del world.expect.implausible[run], world.expect.plausible[run]
    world.expect.restored.add(run)
    assert scripted(world, lambda conn, now: None) == []


@pytest.mark.parametrize(
    ("heal", "lost"), [("restart", True), ("restart", False), ("flag", True), ("flag", False)]
)
def test_case7_a_run_mm_lost_or_a_person_ended_is_healed_or_flagged(
    make_world: MakeWorld, heal: str, lost: bool
) -> None:
    """MM loses the run erpsync holds open, or a person ends it there. restart: noticed by
    write-back's reads, the ticket's next generation starts from then (the old run's counts stay in
    the ticket's sum); flag: a `missing_in_mm` / `ended_in_mm` row and a failed binding, nothing
    restarted (drift_records, the oracle's `drift`). The clock-out ends what is left."""
    world = make_world(heal=heal)
    ticket = clock_in(world, world.shop.ops[world.shop.machines[2]][0], ago=timedelta(hours=2))
    assert scripted(world, lambda conn, now: None) == []  # counted and written
    assert drift(world, world.rng, lost=lost) is not None
    assert world.hook_violations == []
    runs = world.sim.runs()
    assert (rid(ticket, 2) in runs) == (heal == "restart")
    if heal == "restart":
        ended = world.oracle.runs[rid(ticket)].end
        assert ended is not None and runs[rid(ticket, 2)]["start_at"] is not None
    else:
        assert binding_status(world, rid(ticket)) == "failed"
    assert scripted(world, lambda conn, now: world.shop.clock_out(conn, ticket, now)) == []


# -- issue #19, the shop floor ----------------------------------------------------------------------
def test_shop_floor_a_crew_is_one_run_until_its_last_member_leaves(make_world: MakeWorld) -> None:
    """A setup tech, then two operators on one operation: one MM run, switched to production, from
    the first clock-in to the last clock-out; the operator leaving first does not stop it."""
    world = make_world()
    op = world.shop.ops[world.shop.machines[3]][0]
    setup = clock_in(world, op, "S", timedelta(hours=2))
    first = clock_in(world, op, "R", timedelta(hours=1))
    second = clock_in(world, op, "R", timedelta(minutes=30))
    assert (
        scripted(world, lambda conn, now: world.shop.clock_out(conn, setup, now - timedelta(minutes=50)))
        == []
    )
    assert scripted(world, lambda conn, now: world.shop.clock_out(conn, first, now)) == []
    assert world.sim.runs()[rid(setup)]["end_at"] is None
    assert scripted(world, lambda conn, now: world.shop.clock_out(conn, second, now)) == []
    runs = world.sim.runs()
    assert [r for r in runs if r.startswith("erp:")] == [rid(setup)] and runs[rid(setup)][
        "phase"
    ] == "production"


def test_shop_floor_final_counts_arrive_after_a_clock_out_entered_hours_late(make_world: MakeWorld) -> None:
    """Clocked in 8 hours ago, the clock-out entered 3 hours late: MM's run ends then, and the parts
    MM counted after the last write-back (and after the stop) still reach the ticket."""
    world = make_world()
    ticket = clock_in(world, world.shop.ops[world.shop.machines[4]][0], ago=timedelta(hours=8))
    assert scripted(world, lambda conn, now: None) == []
    late = lambda conn, now: world.shop.clock_out(conn, ticket, now - timedelta(hours=3))  # noqa: E731
    assert scripted(world, late) == []
    run = world.sim.runs()[rid(ticket)]
    assert run["end_at"] is not None
    m = run["metrics"]
    world.sim.set_counts(rid(ticket), total=m["totalParts"] + 11, scrap=m["scrapParts"] + 1)  # final counts
    found, _ = world.converge()
    assert found == []


def test_shop_floor_one_bad_cell_costs_one_ticket_not_the_cycle(make_world: MakeWorld) -> None:
    """Tickets with a bad cell (CLOCK_IN in year 9999, an unknown TYPE, an operation whose
    CALC_END_QTY is 1E30) in one batch with good ones: each bad one quarantined with its field,
    the good ones in MM, and the next cycles go on."""
    world = make_world()
    shop, rng = world.shop, world.rng
    good: list[Ticket] = []

    def batch(conn: Connection, now: datetime) -> None:
        shop.clock_in(
            conn, shop.ops[shop.machines[0]][0], datetime(9999, 12, 31, 23, 59), "R", rng, bad="CLOCK_IN"
        )
        good.append(shop.clock_in(conn, shop.ops[shop.machines[1]][0], now, "R", rng))
        shop.clock_in(conn, shop.ops[shop.machines[2]][0], now, "X", rng, bad="TYPE")
        shop.clock_in(conn, shop.poisoned_op, now, "R", rng, bad="CALC_END_QTY")
        good.append(shop.clock_in(conn, shop.ops[shop.machines[3]][0], now, "S", rng))

    assert scripted(world, batch) == []
    assert all(world.sim.runs()[rid(t)]["end_at"] is None for t in good)
    assert scripted(world, lambda conn, now: shop.clock_out(conn, good[0], now)) == []


# -- found by this campaign (FINDINGS.md) ------------------------------------------------------------
@pytest.mark.parametrize("when", ["instead", "after"])
def test_f4_a_404_to_the_switch_leaves_the_run_managed(make_world: MakeWorld, when: str) -> None:
    """F4: MM (or a gateway speaking its JSON) answers 404 to the setup -> production switch of a
    run it has open. erpsync quarantines the switch and records the binding `failed` ("MM refused
    it") without reading MM, so it stops managing a run MM has: its counts are no longer written
    back, and the clock-out never stops it (ticket_counts, open_after_erp_closed)."""
    world = make_world()
    op = world.shop.ops[world.shop.machines[5]][0]
    setup = clock_in(world, op, "S", timedelta(minutes=40))
    assert scripted(world, lambda conn, now: None) == []  # counted and written
    hits: list[str] = []
    crew: list[Ticket] = []
    rule = switch_rule(world, 404, "instead" if when == "instead" else "after", hits)
    assert fault_batch(world, "switch_404", _in(world, op, "R", timedelta(0), crew), rules=(rule,)) == []
    assert hits == [rid(setup)]

    def out(conn: Connection, now: datetime) -> None:
        world.shop.clock_out(conn, setup, now)
        world.shop.clock_out(conn, crew[0], now)

    assert scripted(world, out) == []


def test_a_stop_given_up_in_a_long_outage_is_quarantined_and_only_so_left_open(make_world: MakeWorld) -> None:
    """Stops answered 503 until sync.max_action_attempts, MM's reads fine: the give-up reads MM,
    sees the run open and quarantines the stop for a person (docs/architecture.md "Give up only
    after reading"); only that lets the run stay open in MM after the clock-out (stop_refused)."""
    world = make_world()
    ticket = clock_in(world, world.shop.ops[world.shop.machines[0]][1])
    failing = ({"kind": "error", "status": 503, "operations": ["stop"]},)
    out = lambda conn, now: world.shop.clock_out(conn, ticket, now)  # noqa: E731
    assert fault_batch(world, "sim_long:stop", out, sim_faults=failing, long=True) == []
    with world.store.session() as session:
        stop = session.scalars(
            select(SyncAction).where(SyncAction.mm_run_id == rid(ticket), SyncAction.kind == "stop_run")
        ).one()
    assert (stop.status, stop.attempts) == ("failed_permanent", 3)
    assert rid(ticket) in world.expect.stop_refused and world.sim.runs()[rid(ticket)]["end_at"] is None
    assert [a.outcome for a in audit(world, rid(ticket), "stop_run")][-1] == "failed"
