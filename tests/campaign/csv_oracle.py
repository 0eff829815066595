"""What MachineMetrics must show after each CSV export of a trial, worked out from the files alone.

The rule assumed (docs/sources.md "CSV exports", docs/architecture.md "Only a trusted snapshot
stops runs"), for the simple shop of the CSV trials, where an open row is alone on its machine:

1. Every row that is open (setup or production) in the LAST GOOD VIEW of it has exactly one open
   MM run: on its machine, with its job and operation name, part time and phase. A good view is
   the row as read from a file where it is not bad; a bad row (quarantined), or a row missing from
   a suspect file, keeps its previous view.
2. A good row that is ENDED stops its open run at its CLOSE_DATE (erpsync's now without one), never
   before the run's start; a row first seen ended is never started.
3. A good open row without an open run starts one at its ACT_START_DATE (erpsync's now without
   one), never before the latest end of a run on its machine; setup -> production is MM's switch.
4. A row missing from a file (deleted, or its key cells unreadable so its bad row cannot name it)
   "vanished". In a suspect file (cut off, header-only, empty): nothing happens. Otherwise, policy
   `flag`: its run stays open (the row, if it comes back, is managed again); policy `stop`: its
   run stops at erpsync's now, unless the file would stop at least 2 and more than
   `MAX_SHARE` of the open runs at once (a mass vanish: nothing is stopped). A stopped row that
   comes back open starts its next run generation.
5. A file with the same bytes as the last one read changes nothing.

Pure: no I/O. Times are rules (`("at", utc)` or `("now", step)`); the trial checks them against the
MM runs and the wall-clock window of each step's `erpsync sync`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

MAX_SHARE = 0.5  # sync.max_vanished_share's default
MASS_MINIMUM = 2
State = Literal["not_started", "setup", "production", "ended"]
Status = Literal["none", "open", "closed"]
TimeRule = tuple[str, datetime | int]  # ("at", utc datetime) or ("now", step index)


@dataclass(frozen=True)
class RowView:
    """One row as erpsync must read it from a good line of a file."""

    key: str
    job: str
    operation: str
    machine: str
    part: str
    state: State
    start: datetime | None  # ACT_START_DATE in UTC
    end: datetime | None  # CLOSE_DATE in UTC
    part_time_ms: int | None


@dataclass(frozen=True)
class FileView:
    """What one export file says: its good rows, the keys of its bad rows, and whether it is read
    at all and trusted to make rows vanish."""

    good: Mapping[str, RowView]
    held: frozenset[str]  # keys of bad rows whose key cells are readable
    suspect: bool  # cut off, header-only, empty: nothing vanishes
    read: bool = True  # False: the same bytes as the last file read


@dataclass
class Expected:
    """What MM must show for one row key."""

    view: RowView
    status: Status = "none"
    phase: str = ""
    generations: int = 0  # MM runs erpsync started for it
    start: TimeRule | None = None  # of the current (or last) generation
    end: TimeRule | None = None
    flagged: bool = False  # vanished under `flag`: open in MM, not managed until it comes back
    how: str = ""  # why the status last changed


@dataclass
class ShopState:
    """Every row key's expectation after the files applied so far."""

    policy: str
    rows: dict[str, Expected] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # per file: holds, vanishes
    steps: int = 0  # files applied

    def copy(self) -> ShopState:
        return copy.deepcopy(self)

    def open_on(self, machine: str) -> bool:
        return any(e.status == "open" and e.view.machine == machine for e in self.rows.values())

    def apply(self, step: int, view: FileView) -> bool:
        """The file of step `step` read by one `erpsync sync` (rules 1-5); True when erpsync must
        acknowledge it (a trusted file that held nothing back: its bytes are the last processed)."""
        self.steps += 1
        if not view.read:
            self.notes.append(f"{step}: not read (the same bytes as the last file)")
            return False
        live = sum(1 for e in self.rows.values() if e.status == "open")  # MM's open runs, as loaded
        for key, row in view.good.items():
            self._good(step, self.rows.setdefault(key, Expected(row)), row)
        vanished = [
            e
            for key, e in self.rows.items()
            if e.status == "open" and key not in view.good and key not in view.held and not e.flagged
        ]
        if view.suspect:
            self.notes.append(f"{step}: suspect, {len(vanished)} missing rows held")
            return False
        if not vanished:
            return True
        if self.policy == "flag":
            for e in vanished:
                e.flagged, e.how = True, f"vanished at step {step}, flagged, still open"
            return True
        if len(vanished) >= MASS_MINIMUM and len(vanished) > MAX_SHARE * live:
            self.notes.append(f"{step}: mass vanish, {len(vanished)} of {live} open runs held")
            return False
        for e in vanished:
            e.status, e.end, e.how = "closed", ("now", step), f"vanished at step {step}, stopped"
        return True

    def _good(self, step: int, e: Expected, row: RowView) -> None:
        e.view = row
        if e.flagged and row.state != "not_started":
            e.flagged = False  # back in the ERP: managed again
        if row.state == "ended":
            if e.status == "open":
                e.status, e.how = "closed", f"ended at step {step}"
                e.end = ("at", row.end) if row.end is not None else ("now", step)
            return
        if row.state == "not_started":
            return
        if e.status == "open":
            if e.phase == "setup" and row.state == "production":
                e.phase, e.how = "production", f"switched at step {step}"
            return
        e.status, e.phase, e.generations = "open", row.state, e.generations + 1
        e.start = ("at", row.start) if row.start is not None else ("now", step)
        e.end, e.how = None, f"started at step {step}"


def machines_in_use(state: ShopState, rows: Iterable[RowView]) -> set[str]:
    """Machines with an open MM run expected, or an open row in `rows` (the ERP's truth)."""
    busy = {e.view.machine for e in state.rows.values() if e.status == "open"}
    busy.update(r.machine for r in rows if r.state in ("setup", "production"))
    return busy
