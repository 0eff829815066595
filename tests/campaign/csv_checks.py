"""The invariants checked after every CSV export, against MM's truth (`sim.runs()`) and erpsync's
state (`erpsync_quarantine`); each returns what it found wrong, as sentences.

- the process: `erpsync sync` exits 0 (README "Exit codes": bad rows and unreadable files are
  quarantined, not failures; MM answers everything here), no traceback, no secret in any output;
- MM: for every row key, the runs the oracle expects (tests/campaign/csv_oracle.py): how many
  generations, exactly one open run for an open row (machine, job, operation, part, part time,
  phase), none for the others; a new run's start and an ended run's end at the ERP's time (or in
  erpsync's step window), never before the machine's previous run ended; no run of an unknown row;
  a run stopped while its row is open is named a stop of a live run (a mass stop shows as many);
- erpsync's state: each row's binding says what the oracle says of it (running, `vanished` when
  flagged under `flag`, stopped); a file not trusted (suspect) or a mass vanish is audited as
  held (`untrusted_snapshot` naming the file, `mass_vanish`);
- the quarantine: every bad row of a file read is an entry touched by this step with the file's
  name, the line and the header of the bad field; an unreadable file is one `unreadable_file`
  entry; nothing else is quarantined for that file.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding
from tests.campaign.csv_oracle import Expected, TimeRule
from tests.campaign.csv_scenarios import ExportFile
from tests.campaign.csv_world import Outcome

TOLERANCE = timedelta(seconds=1.5)
UNREADABLE = "unreadable_file"


def _ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def process(outcome: Outcome, secrets: list[str]) -> list[str]:
    found = []
    if outcome.exit_code not in (0, None):
        found.append(f"erpsync sync exited {outcome.exit_code} (expected 0): {outcome.output[-400:]!r}")
    if outcome.exit_code is None and not outcome.output.startswith("cycle outcome ok"):
        found.append(f"serve: {outcome.output}")
    if "Traceback" in outcome.output:
        found.append(f"a traceback in the output: {outcome.output[-600:]!r}")
    found += [f"a secret ({s[:4]}...) in the output" for s in secrets if s in outcome.output]
    return found


class RunLedger:
    """What the checks remember between steps: each MM run's first sight and each machine's
    latest end before the step (a new run never starts before it)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.ended: set[str] = set()
        self.machine_end: dict[str, datetime] = {}

    def before_step(self, runs: dict[str, dict[str, Any]]) -> None:
        self.machine_end = {}
        for run in runs.values():
            end = _ts(run["end_at"])
            if end is not None and end > self.machine_end.get(run["machine_id"], end - timedelta(1)):
                self.machine_end[run["machine_id"]] = end


def _time_ok(actual: datetime | None, rule: TimeRule, outcome: Outcome, floor: datetime | None) -> bool:
    if actual is None:
        return False
    kind, value = rule
    if kind == "at":
        assert isinstance(value, datetime)
        expected = max(value, floor) if floor is not None else value
        return abs(actual - expected) <= TOLERANCE
    low = max(outcome.began, floor) if floor is not None else outcome.began
    return low - TOLERANCE <= actual <= max(outcome.ended, low) + TOLERANCE


def mm(f: ExportFile, runs: dict[str, dict[str, Any]], ledger: RunLedger, outcome: Outcome) -> list[str]:
    found: list[str] = []
    by_op: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs.values():
        by_op[(run["job_name"], run["operation_name"])].append(run)
    known = set()
    for key, e in f.expect.rows.items():
        known.add((e.view.job, e.view.operation))
        found += _row(key, e, by_op.get((e.view.job, e.view.operation), []), ledger, outcome, f.step)
    for (job, op), stray in by_op.items():
        if (job, op) not in known:
            found.append(f"MM has {len(stray)} run(s) of an operation no export holds: {job!r} {op!r}")
    for run in runs.values():
        ledger.seen.add(run["run_id"])
        if run["end_at"] is not None:
            ledger.ended.add(run["run_id"])
    return found


def _row(
    key: str, e: Expected, runs: list[dict[str, Any]], ledger: RunLedger, outcome: Outcome, step: int
) -> list[str]:
    found: list[str] = []
    what = f"{key} ({e.how or 'never started'})"
    opened = [r for r in runs if r["end_at"] is None]
    if len(runs) != e.generations:
        found.append(f"{what}: MM has {len(runs)} run(s), expected {e.generations}")
    for run in runs:
        if run["end_at"] is not None and run["run_id"] not in ledger.ended and e.status == "open":
            found.append(
                f"{what}: MM run {run['run_id']} was stopped at step {step} while the row is open "
                f"(ended_by {run['ended_by']})"
            )
    if e.status != "open":
        if opened:
            found.append(f"{what}: MM still has run {opened[0]['run_id']} open, expected {e.status}")
        elif e.status == "closed" and e.end is not None and runs:
            last = max(runs, key=lambda r: r["start_at"])
            start = _ts(last["start_at"])
            if last["run_id"] not in ledger.ended and not _time_ok(
                _ts(last["end_at"]), e.end, outcome, start
            ):
                found.append(f"{what}: MM run {last['run_id']} ended at {last['end_at']}, expected {e.end}")
        return found
    if len(opened) != 1:
        return [*found, f"{what}: MM has {len(opened)} open run(s), expected 1"]
    run, view = opened[0], e.view
    got = (run["machine_id"], run["job_name"], run["operation_name"], run["part_name"], run["phase"])
    want = (view.machine, view.job, view.operation, view.part, e.phase)
    if got != want:
        found.append(f"{what}: MM run {run['run_id']} is {got}, expected {want}")
    if run["part_time_ms"] != view.part_time_ms:
        found.append(f"{what}: MM part time {run['part_time_ms']} ms, expected {view.part_time_ms}")
    if run["run_id"] not in ledger.seen and e.start is not None:
        floor = ledger.machine_end.get(run["machine_id"])
        if not _time_ok(_ts(run["start_at"]), e.start, outcome, floor):
            found.append(
                f"{what}: MM run {run['run_id']} starts at {run['start_at']}, expected {e.start} "
                f"(not before the machine's last end {floor})"
            )
    return found


def quarantine(f: ExportFile, store: StateStore, outcome: Outcome) -> list[str]:
    since = outcome.began  # this step's process (or cycle) touched it
    with store.session() as session:
        entries = session.scalars(select(QuarantineEntry).where(QuarantineEntry.last_seen_at >= since)).all()
        touched = [
            (e.file_name, e.line_number, e.field, e.error_class, e.message, e.record_key) for e in entries
        ]
    mine = [t for t in touched if t[0] == f.name]
    found: list[str] = []
    if f.unreadable:
        whole = [t for t in mine if t[3] == UNREADABLE]
        if len(whole) != 1 or len(mine) != 1:
            found.append(f"{f.name}: expected the file quarantined whole, got {mine or touched}")
        return found
    if not f.view.read:
        return [f"{f.name}: not to be read (same bytes), yet quarantined: {t}" for t in mine]
    expected = set(f.bad)
    for line, header in f.bad:
        if not any(t[1] == line and t[2] == header and t[4] for t in mine):
            near = [t for t in touched if t[1] == line] or touched
            found.append(
                f"{f.name}:{line} ({header}) not quarantined with its file, line and field; got {near}"
            )
    for t in mine:
        if (t[1], t[2]) not in expected:
            found.append(f"{f.name}: unexpected quarantine entry {t}")
    return found


BINDING = {"open": "running", "closed": "stopped"}


def bindings(f: ExportFile, store: StateStore) -> list[str]:
    """Each row's latest binding and the audited holds against the oracle."""
    with store.session() as session:
        rows = session.execute(
            select(RunBinding.run_key, RunBinding.status)
            .where(RunBinding.source == "erp")
            .order_by(RunBinding.id)
        ).all()
        holds = session.execute(
            select(AuditEntry.action, AuditEntry.detail).where(
                AuditEntry.action.in_(("untrusted_snapshot", "mass_vanish"))
            )
        ).all()
    latest = {key.split("#")[0]: status for key, status in rows}  # `KEY#g2`: its next run generation
    found = []
    for key, e in f.expect.rows.items():
        want = "vanished" if e.flagged else BINDING.get(e.status)
        if latest.get(key) != want:
            found.append(f"{key} ({e.how or 'never started'}): binding {latest.get(key)}, expected {want}")
    if (
        f.view.read
        and f.view.suspect
        and not any(a == "untrusted_snapshot" and f.name in (d or "") for a, d in holds)
    ):
        found.append(f"{f.name}: suspect, but no untrusted_snapshot audit row names it")
    mass = f.expect.notes and f.expect.notes[-1].startswith(f"{f.step}: mass vanish")
    if mass and not any(a == "mass_vanish" for a, _ in holds):
        found.append(f"{f.name}: a mass vanish held, but no mass_vanish audit row")
    return found
