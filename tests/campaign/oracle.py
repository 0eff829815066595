"""An independent oracle of what MachineMetrics should show, from the ERP's truth as the trial made it.

Written from the documented multi-ticket rule (docs/architecture.md "Several tickets on one
machine", the docstring of erpsync/domain/shop_floor.py), NOT from erpsync's code: it imports
nothing of erpsync's domain, keeps its own toy MM (every run: id, machine, job and operation name,
phase, start, end) and can therefore disagree with erpsync. It is fed the ERP's tickets after each
batch (tests/campaign/scenarios.py applies a batch in one transaction and the trial waits for
erpsync to converge before the next), and applies the rule once per batch:

- Per machine, the open tickets; the **shown** operation is that of the most recent clock-in (ties:
  the higher TRANSACTION_ID). A ticket that anchors an open run stays on that run's machine (a
  machine edit does not move a run); every other ticket is on its current machine.
- **Crew**: the shown operation's open tickets are one run. The run goes on while any ticket that
  overlaps it (clocked in before the run's last ticket clocked out) is open; it ends at the last
  clock-out of that chain. Phase: production as soon as one of its open tickets is a run ticket
  (MM cannot go back to setup).
- **Other operation**: the run of an operation no longer shown ends when the shown one starts, or
  at its own last clock-out if all its tickets closed.
- **New run** of the shown operation (first, after a gap, shown again, reopened): anchored on its
  earliest open ticket; run id ``erp:LT<anchor>`` for the anchor's first run, ``erp:LT<anchor>.g<n>``
  for its n-th; it starts at the latest of: its first clock-in, the latest clock-out on the
  machine after that (at or before now), the end of any earlier run on the machine after that, and
  (when it takes the machine from another operation's run) the shown clock-in and that run's start.
- **Deleted** (vanished) anchor: `stop` policy ends its run at erpsync's now (checked within the
  window between the batch and the check, then the observed end is adopted); `flag` leaves it
  open. Either way a new run on the machine ends it at the new run's start.
- The rule is applied to each ERP state until nothing changes (erpsync's cycles on one state).
- Ends are clamped to [the run's start, now]; an end past now (a clock-in from a terminal whose
  clock runs ahead) is erpsync's now, checked within a window like a vanished stop, or that future
  moment itself (MM ends a run when a run started later takes the machine: when erpsync's stop of
  the old run did not get there first). A run that
  starts on a machine after such a now-based end starts at a moment known only from MM (checked
  within the same window, then adopted). Tickets with a bad cell are never shown.

MM-side faults (tests/campaign/mm_faults.py) are told to the oracle, as the docs say erpsync
answers them (docs/architecture.md "Drift is healed", "Give up only after reading"):

- **Drift** (`drift`): a run MM lost or a person ended by hand. With `sync.heal_drift = "restart"`
  the run ends there (MM's end, or when erpsync found it gone) and the rule goes on: the ticket's
  next generation starts no earlier than that end. With `"flag"` the run is dead (below).
- **Dead** (`kill`): erpsync gave the run up and said so (a flagged drift, a start MM refused or
  given up with MM confirming it has nothing, a stop MM refused): not live any more, MM may hold it
  or not, ended or not; its anchor is **blocked** (no new run while it is the earliest open ticket
  of its operation: "a ticket whose run MM refused: nothing new, a person decides"), but another
  operation that clocks in later still takes the machine.
- **Excused** (`excuse`): an aspect of a run that is a person's job, named by what erpsync
  recorded (`presence`: a start given up that MM may have; `phase`: a switch to production MM
  refused; `end`: a stop MM refused). Everything else about the run is judged. A run whose
  presence is excused may never have been in MM: the next run on its machine starts at its end or,
  as if it had never been, earlier (checked within that window, then adopted).
- **Lost** runs must stay absent: erpsync never starts an MM run id again.

Times are compared to the second (the ERP keeps seconds; MM milliseconds). When several batches
came between two checks (erpsync may have read any of the states in between, or none), `branches`
gives one oracle per subset of intermediate states it may have seen; MM must match one of them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.campaign.scenarios import Ticket
from tests.sync_helpers import ERP_TZ

SOURCE = "erp"
MAX_PASSES = 5
TOLERANCE = timedelta(seconds=1)
_ZONE = ZoneInfo(ERP_TZ)

OpKey = tuple[str, str, str, str, str, int]  # (type, base, lot, split, sub, seq), trimmed


def utc(local: datetime) -> datetime:
    """A naive ERP-local time as UTC."""
    return local.replace(tzinfo=_ZONE).astimezone(UTC)


def mm_time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def op_key(t: Ticket) -> OpKey:
    kind, base, lot, split, sub = (v.strip() for v in t.op.job)
    return (kind.upper(), base, lot, split or "0", sub or "0", t.op.seq)


def job_name(key: OpKey) -> str:
    """docs/sources.md: BASE/LOT, /SPLIT when not 0, -SUB when not 0."""
    _, base, lot, split, sub, _ = key
    return f"{base}/{lot}" + (f"/{split}" if split != "0" else "") + (f"-{sub}" if sub != "0" else "")


def run_id(anchor: int, generation: int) -> str:
    """docs/architecture.md "Run ids": erp:LT<id>, then erp:LT<id>.g<n>."""
    return f"{SOURCE}:LT{anchor}" + (f".g{generation}" if generation > 1 else "")


def anchor_of(mm_run_id: str) -> int | None:
    """The ticket a run id is anchored on (None: not one of the oracle's ids)."""
    prefix = f"{SOURCE}:LT"
    if not mm_run_id.startswith(prefix):
        return None
    digits = mm_run_id[len(prefix) :].split(".g", maxsplit=1)[0]
    return int(digits) if digits.isdigit() else None


@dataclass
class ORun:
    """A run as the oracle expects MM to hold it."""

    run_id: str
    anchor: int
    machine: str
    key: OpKey  # the operation it was started for (its MM job fields)
    start: datetime
    phase: str
    why: str
    end: datetime | None = None
    end_after: datetime | None = None  # ended at erpsync's "now", some time after this
    end_by: datetime | None = None  # ... or at this future moment (a run from a clock-in ahead took over)
    start_after: datetime | None = None  # starts when such a run ended: some time after this
    vanished: bool = False
    lost: bool = False  # MM lost it (a campaign fault): MM must never hold it again
    dead: bool = False  # erpsync gave it up and said so: not live, a person's job
    excused: frozenset[str] = frozenset()  # aspects not judged: presence, phase, end (`EXCUSABLE`)
    excuse_why: str = ""

    @property
    def open(self) -> bool:
        return self.end is None and self.end_after is None and not self.dead

    def describe(self) -> str:
        end = (
            self.end.isoformat()
            if self.end
            else (f"now>={self.end_after:%H:%M:%S}" if self.end_after else "open")
        )
        what = f"{job_name(self.key)}|{self.key[-1]} {self.phase}"
        marks = ("lost " if self.lost else "") + ("dead " if self.dead else "")
        marks += f"excused {sorted(self.excused)} " if self.excused else ""
        return f"{self.run_id} on {self.machine} {what} {self.start:%H:%M:%S}..{end}" + (
            f" ({marks.strip()})" if marks else ""
        )


EXCUSABLE = frozenset({"presence", "phase", "end"})


@dataclass
class Oracle:
    """The toy MM and the rule that moves it, batch by batch."""

    vanished_policy: str = "flag"
    runs: dict[str, ORun] = field(default_factory=dict)
    open_on: dict[str, str] = field(default_factory=dict)  # machine -> run id
    generations: dict[int, int] = field(default_factory=dict)  # anchor -> last generation
    blocked: dict[int, str] = field(default_factory=dict)  # anchor -> why its runs are a person's job
    notes: list[str] = field(default_factory=list)  # what the last batch did, for the record
    _wall: datetime = field(default=datetime.min.replace(tzinfo=UTC), repr=False)

    # -- the rule ---------------------------------------------------------------------------------
    def apply(self, tickets: Mapping[int, Ticket], now_local: datetime, wall: datetime | None = None) -> None:
        """The rule on this ERP state until nothing changes: a run that ends frees its anchor to be
        placed by its own machine (an edit moved it), which the next pass (erpsync: the next cycle
        on the same state) decides. `now_local`: the batch's ERP time (to the second); `wall`: the
        moment the batch was committed (erpsync reads it later, so every run end up to then counts
        as past when it looks for the moment a machine was freed)."""
        self.notes = []
        self._wall = wall or utc(now_local)
        for _ in range(MAX_PASSES):
            before = self._signature()
            self._pass(tickets, utc(now_local))
            if self._signature() == before:
                return
        self.notes.append(f"no fixed point after {MAX_PASSES} passes")

    def _signature(self) -> tuple[Any, ...]:
        return tuple((r.run_id, r.end, r.end_after, r.phase) for r in self.runs.values())

    def _pass(self, tickets: Mapping[int, Ticket], now: datetime) -> None:
        good = {t.id: t for t in tickets.values() if not t.deleted and t.bad is None}
        sticky = {r.anchor: r.machine for r in self.runs.values() if r.open and not r.vanished}
        placed = {tid: sticky.get(tid, t.machine) for tid, t in good.items()}
        ended_before = [r for r in self.runs.values() if r.end is not None]
        machines = set(placed.values()) | set(self.open_on)
        for machine in sorted(machines):
            on = [t for tid, t in good.items() if placed[tid] == machine]
            self._decide(machine, on, good, ended_before, now)

    def _decide(
        self,
        machine: str,
        on: list[Ticket],
        good: Mapping[int, Ticket],
        ended_before: list[ORun],
        now: datetime,
    ) -> None:
        cur = self.runs.get(self.open_on.get(machine, ""))
        live = cur if cur is not None and cur.anchor in good and not cur.vanished else None
        gone = cur if cur is not None and live is None else None  # its anchor was deleted
        if gone is not None and not gone.vanished:
            gone.vanished = True
            self.notes.append(f"{gone.run_id}: anchor LT{gone.anchor} deleted ({self.vanished_policy})")
        open_ = [t for t in on if t.open]
        if not open_:
            if live is not None:
                self._end(live, self._chain_end(live, on, good), now, "last clock-out")
            if gone is not None and self.vanished_policy == "stop":
                self._end_at_now(gone, now)
            return
        shown = max(open_, key=lambda t: (t.clock_in, t.id))
        key = op_key(shown)
        group = sorted((t for t in open_ if op_key(t) == key), key=lambda t: (t.clock_in, t.id))
        phase = "production" if any(t.type == "R" for t in group) else "setup"
        if live is not None and op_key(good[live.anchor]) == key:
            ended = self._chain_end(live, on, good)
            if ended is None:
                if live.phase == "setup" and phase == "production":
                    live.phase = "production"
                    self.notes.append(f"{live.run_id}: switched to production")
                return
            self._end(live, ended, now, "gap: every ticket of its run closed before these clocked in")
            live = None
        anchor = group[0]
        if anchor.id in self.blocked:
            self._blocked(anchor, shown, live, on, good, now)
            return
        first_in = utc(anchor.clock_in)
        horizon = max(now, self._wall)
        outs = [utc(t.clock_out) for t in on if t.clock_out is not None and not t.open]
        ends = [(r.end, "presence" in r.excused) for r in ended_before if r.machine == machine and r.end]
        freed = [e for e in outs + [e for e, _ in ends] if first_in < e <= horizon]
        # the end of a run MM may never have had (a start given up unread) frees nothing if it had not
        sure = [e for e in outs + [e for e, maybe in ends if not maybe] if first_in < e <= horizon]
        start, floor = max([first_in, *freed]), max([first_in, *sure])
        if live is not None:
            start = max(start, utc(shown.clock_in), live.start)
            floor = max(floor, utc(shown.clock_in), live.start)
        # a run on the machine ended at erpsync's now (a vanished run stopped, a clock-in ahead):
        # the new run starts no earlier, at a moment known once MM shows it
        pending = [  # (a future end, a clock-in ahead's, frees nothing: FINDINGS.md O1)
            r.end_after
            for r in self.runs.values()
            if r.machine == machine and r.end_after is not None and r.end_after <= max(now, self._wall)
        ]
        start_after = max(pending) if pending and max(pending) > start else None
        start = start_after or start
        maybe_from = floor if start_after is None and floor < start else None
        generation = self.generations.get(anchor.id, 0) + 1
        if live is not None:
            own = self._chain_end(live, on, good)
            if own is None and start_after is not None:
                self._end(live, None, start_after, "superseded")
            else:
                self._end(
                    live,
                    own if own is not None else start,
                    now,
                    "superseded" if own is None else "last clock-out",
                )
        if gone is not None and gone.open:
            if start_after is not None:
                self._end(gone, None, start_after, "a new run takes the machine")
            else:
                self._end(gone, start, now, "a new run takes the machine")
        self.generations[anchor.id] = generation
        rid = run_id(anchor.id, generation)
        crew = f"crew of {len(group)}" if len(group) > 1 else "alone"
        why = f"LT{anchor.id} {crew}, generation {generation}"
        self.runs[rid] = ORun(
            rid, anchor.id, machine, op_key(anchor), start, phase, why, start_after=start_after or maybe_from
        )
        self.open_on[machine] = rid
        self.notes.append(f"start {self.runs[rid].describe()}")

    def _blocked(
        self,
        anchor: Ticket,
        shown: Ticket,
        live: ORun | None,
        on: list[Ticket],
        good: Mapping[int, Ticket],
        now: datetime,
    ) -> None:
        """The shown operation's earliest ticket anchors a run erpsync gave up: nothing starts, but
        another operation's run still ends when the shown one took the machine (a vanished run is
        ended only by a new run)."""
        if live is not None:
            own = self._chain_end(live, on, good)
            taken = max(utc(shown.clock_in), live.start)
            self._end(live, own if own is not None else taken, now, f"LT{anchor.id}'s operation shown")
        note = f"LT{anchor.id} blocked ({self.blocked[anchor.id]}): nothing started"
        if note not in self.notes:
            self.notes.append(note)

    # -- MM-side faults (tests/campaign/mm_faults.py) ---------------------------------------------
    def drift(self, rid: str, *, end: datetime, lost: bool, heal: str) -> None:
        """MM lost the run (`lost`) or a person ended it there, at `end` (MM's end, or when erpsync
        found it gone). Re-`apply` the ERP state afterwards: under "restart" the rule starts the
        ticket's next generation from `end`."""
        run = self.runs[rid]
        run.lost = lost
        what = "lost by MM" if lost else "ended by hand in MM"
        if heal == "restart":
            run.end, run.end_after = max(end, run.start), None
            if self.open_on.get(run.machine) == rid:
                del self.open_on[run.machine]
            self.notes.append(f"{rid}: {what} at {end.isoformat()} (heal_drift = restart)")
        else:
            self.kill(rid, f"{what}, heal_drift = flag", end=end)

    def kill(self, rid: str, why: str, end: datetime | None = None) -> bool:
        """erpsync gave the run up (`why`, what it recorded): dead, its anchor blocked. False: the
        oracle has no such run (erpsync gave up a run the rule never asked for)."""
        run = self.runs.get(rid)
        if run is None:
            return False
        if run.open and end is not None:
            run.end = max(end, run.start)
        run.dead = True
        run.excused, run.excuse_why = EXCUSABLE, why
        if self.open_on.get(run.machine) == rid:
            del self.open_on[run.machine]
        self.blocked[run.anchor] = why
        self.notes.append(f"{rid}: dead ({why}); LT{run.anchor} blocked")
        return True

    def excuse(self, rid: str, aspects: frozenset[str], why: str) -> bool:
        """`aspects` of the run are a person's job (`why`: what erpsync recorded)."""
        run = self.runs.get(rid)
        if run is None:
            return False
        run.excused = run.excused | aspects
        run.excuse_why = why
        self.notes.append(f"{rid}: {sorted(aspects)} excused ({why})")
        return True

    @staticmethod
    def _chain_end(run: ORun, on: list[Ticket], good: Mapping[int, Ticket]) -> datetime | None:
        """When the run's chain of overlapping tickets (same operation, same machine) last closed;
        None while one of them is open."""
        anchor = good[run.anchor]
        if anchor.clock_out is None:
            return None
        key = op_key(anchor)
        until = anchor.clock_out
        for t in sorted((t for t in on if op_key(t) == key), key=lambda t: t.clock_in):
            if t.id == anchor.id or t.clock_in > until:
                continue
            if t.clock_out is None:
                return None
            until = max(until, t.clock_out)
        return utc(until)

    def _end(self, run: ORun, at: datetime | None, now: datetime, why: str) -> None:
        """End at `at`, clamped to [start, now]; past now (a clock-in from a terminal running ahead)
        it is erpsync's own now: some time after the batch (and never before the start)."""
        if at is not None and at <= now:
            run.end = max(at, run.start)
        else:
            run.end_after = max(now, run.start)
            run.end_by = at  # or at that future moment: MM ends it when a run started then takes over
        self.open_on.pop(run.machine, None)
        self.notes.append(f"end {run.describe()} ({why})")

    def _end_at_now(self, run: ORun, now: datetime) -> None:
        self._end(run, None, now, "vanished, stopped")

    # -- comparing with MM -------------------------------------------------------------------------
    def compare(self, mm_runs: Mapping[str, Mapping[str, Any]], checked_at: datetime) -> list[str]:
        """Every difference between MM and the oracle (empty: MM shows what the rule says).

        A run ended at erpsync's "now" is accepted anywhere between the batch and `checked_at`,
        and its observed end is adopted (later runs on the machine start after it)."""
        found: list[str] = []
        for rid, want in self.runs.items():
            got = mm_runs.get(rid)
            if want.lost:
                if got is not None:
                    found.append(
                        f"oracle: MM holds {rid} again, which it lost (a run id is never started twice)"
                    )
                continue
            if got is None:
                if "presence" not in want.excused:
                    found.append(f"oracle: MM lacks {want.describe()} [{want.why}]")
                continue
            found += _differences(want, got, checked_at)
        for rid, got in mm_runs.items():
            if rid not in self.runs:
                found.append(
                    f"oracle: MM holds {rid} on {got['machine_id']} ({got['job_name']}, {got['start_at']}.."
                    f"{got['end_at'] or 'open'}), which the rule does not explain"
                )
        return found

    def adopt(self, mm_runs: Mapping[str, Mapping[str, Any]]) -> None:
        """After a clean compare: now-based ends and starts become MM's own (exact from here on)."""
        for rid, want in self.runs.items():
            end = mm_time(mm_runs.get(rid, {}).get("end_at"))
            if want.end_after is not None and end is not None:
                want.end, want.end_after, want.end_by = end, None, None
            start = mm_time(mm_runs.get(rid, {}).get("start_at"))
            if want.start_after is not None and start is not None:
                want.start, want.start_after = start, None

    def expected_open(self) -> Iterable[ORun]:
        return (r for r in self.runs.values() if r.open)


def branches(
    oracle: Oracle, states: Sequence[tuple[Mapping[int, Ticket], datetime, datetime]]
) -> list[Oracle]:
    """The oracle after several batches erpsync may have read in any number of cycles: one variant
    per subset of the intermediate ERP states (each a snapshot of the tickets and its time) that a
    cycle saw (each: tickets, ERP time, commit time); every variant applies the last state, which
    erpsync always reads."""
    variants = []
    for seen in range(2 ** (len(states) - 1)):
        variant = copy.deepcopy(oracle)
        for i, (tickets, at, wall) in enumerate(states[:-1]):
            if seen >> i & 1:
                variant.apply(tickets, at, wall)
        variant.apply(*states[-1])
        variants.append(variant)
    return variants


def _differences(want: ORun, got: Mapping[str, Any], checked_at: datetime) -> list[str]:
    diffs = []
    name = job_name(want.key)
    fields = {
        "machine": (want.machine, got["machine_id"]),
        "job": (name, got["job_name"]),
        "operation": (f"{name}|{want.key[-1]}", got["operation_name"]),
    }
    for what, (expected, actual) in fields.items():
        if expected != actual:
            diffs.append(f"{what} {actual!r}, expected {expected!r}")
    start, end = mm_time(got["start_at"]), mm_time(got["end_at"])
    if want.start_after is not None:  # erpsync's now, after a run on the machine ended at its now
        if (
            start is None
            or not want.start_after - TOLERANCE <= start <= max(checked_at, want.start_after) + TOLERANCE
        ):
            diffs.append(
                f"start {got['start_at']}, expected between {want.start_after.isoformat()} and "
                f"{checked_at.isoformat()}"
            )
    elif start is None or abs(start - want.start) > TOLERANCE:
        diffs.append(f"start {got['start_at']}, expected {want.start.isoformat()}")
    if want.dead or "end" in want.excused:  # ended or not is a person's job (its phase too, if dead)
        if got["end_at"] is None and got["phase"] != want.phase and "phase" not in want.excused:
            diffs.append(f"phase {got['phase']}, expected {want.phase}")
    elif want.open:
        if end is not None:
            diffs.append(f"ended at {got['end_at']} ({got['ended_by']}), expected open")
        elif got["phase"] != want.phase and "phase" not in want.excused:
            diffs.append(f"phase {got['phase']}, expected {want.phase}")
    elif end is None:
        diffs.append(
            "open, expected ended" + (f" at {want.end.isoformat()}" if want.end else " (vanished, stop)")
        )
    elif want.end is not None and abs(end - want.end) > TOLERANCE:
        diffs.append(f"end {got['end_at']}, expected {want.end.isoformat()}")
    elif want.end_after is not None and not (
        want.end_after - TOLERANCE
        <= end
        <= max(checked_at, want.end_after, want.end_by or want.end_after) + TOLERANCE
    ):
        latest = max(checked_at, want.end_by or checked_at)
        diffs.append(
            f"end {got['end_at']}, expected between {want.end_after.isoformat()} and {latest.isoformat()}"
        )
    return [f"oracle: {want.run_id}: {d} [{want.why}]" for d in diffs]
