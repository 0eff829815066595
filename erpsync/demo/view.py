"""How the demo looks: a rich live view on a terminal, plain progress lines anywhere else.

Both render a `Frame` (observe.py) and never query anything. Every value that comes from data
(ERP ids, error messages) goes in as `Text`, never as rich markup, so brackets in it stay text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from erpsync.adapters.erp.visual_names import visual_job_name
from erpsync.demo.observe import AuditRow, Frame, TicketState

LIVE_EVENTS = 3
MAX_AUDIT_ROWS = 8
WIDE_COLUMNS = 100  # narrower terminals get shorter cells, so each machine stays on one line
# "MachineMetrics start for run 'x': " says what the row's own columns already say
_MM_PREFIX = re.compile(r"^MachineMetrics \w+ for run '[^']*': ")


@dataclass
class Scene:
    """What the views need besides the frame: the clock, the service's role, the story so far."""

    seconds: float
    started_at: datetime  # UTC, when the service started
    sim_url: str
    time_scale: float
    sync_seconds: float
    writeback_seconds: float
    elapsed: float = 0.0
    role: str = "starting"
    fencing_token: int | None = None
    events: list[tuple[float, str]] = field(default_factory=list)  # (elapsed, what a person did)

    def since_start(self, at: datetime) -> float:
        return (at.astimezone(UTC) - self.started_at).total_seconds()


def job_name(erp_job: str | None) -> str:
    """`W/24117/1/0/0` (the audit's job key) as the job's name, `24117/1`."""
    if not erp_job:
        return ""
    parts = erp_job.split("/")
    return visual_job_name(tuple(parts)) if len(parts) == 5 else erp_job


def counts(good: int, bad: int) -> str:
    return f"{good}/{bad}"


# -- the live view -------------------------------------------------------------------------------


def table(title: str) -> Table:
    """The demo's table style: compact (no vertical rules), so it fits an 80-column terminal."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def live_view(frame: Frame, scene: Scene, console: Console) -> RenderableType:
    """Header, machines, the last moves on the shop floor, as much audit trail as the screen holds."""
    token = f" (token {scene.fencing_token})" if scene.fencing_token is not None else ""
    header = Text.assemble(
        ("erpsync demo", "bold"),
        f" · {scene.elapsed:.0f} of {scene.seconds:.0f} s · service: {scene.role}{token} · sync "
        f"{scene.sync_seconds:g} s, write-back {scene.writeback_seconds:g} s\n",
        ("ERP: ", "dim"),
        "VISUAL schema in SQLite · ",
        ("MachineMetrics: ", "dim"),
        f"simulator, machines {scene.time_scale:g}x fast",
    )
    wide = console.width >= WIDE_COLUMNS
    top: list[RenderableType] = [header, machines_table(frame, wide=wide), shop_floor(scene)]
    for rows in range(MAX_AUDIT_ROWS, 0, -1):
        view = Group(*top, audit_table(frame.audit[-rows:], scene), totals_line(frame))
        if len(console.render_lines(view, pad=False)) < console.height:
            return view
    return Group(*top, totals_line(frame))


def machines_table(frame: Frame, *, wide: bool = True) -> Table:
    """Per machine: its latest ticket, that ticket's MM run, and good / bad parts in both."""
    out = table("Machines: labor tickets (ERP), job runs (MachineMetrics), good / bad parts")
    out.add_column("machine", no_wrap=True)
    out.add_column("ERP labor ticket", no_wrap=True)
    out.add_column("MM job run" if wide else "MM run", no_wrap=True)
    out.add_column("MM parts", justify="right", no_wrap=True)
    out.add_column("on ticket" if wide else "ticket", justify="right", no_wrap=True)
    for machine, state in frame.by_machine().items():
        if state is None:
            out.add_row(machine, Text("no ticket", "dim"), "", "", "")
            continue
        mm = _mm_cell(state, frame.rejected, wide=wide)
        out.add_row(machine, _ticket_cell(state), mm, *_count_cells(state))
    return out


def _ticket_cell(state: TicketState) -> Text:
    t = state.ticket
    text = Text(f"LT{t.id} {t.job} op {t.op} {'SETUP' if t.setup else 'RUN'}")
    if t.clock_out is not None:
        text.append(" out", "dim")
    return text


def _mm_cell(state: TicketState, rejected: set[str], *, wide: bool) -> Text:
    run = state.run
    if run is not None:
        name = f"{run.operation} " if wide else ""  # MM's own operation name, e.g. 24120/1|10
        return Text(f"{name}ended", "dim") if run.ended else Text(f"{name}{run.phase}")
    if state.ticket.machine in rejected:
        return Text("refused" + (": unknown machine" if wide else ""), "red")
    if state.ticket.clock_out is not None:
        return Text("-", "dim")
    return Text("next sync" if not wide else "starts at the next sync", "yellow")


def _count_cells(state: TicketState) -> tuple[Text, Text]:
    run, t = state.run, state.ticket
    if run is None:
        return Text(""), Text(counts(t.good, t.bad), "dim")
    mm = Text(counts(run.good, run.bad))
    if state.conflict:
        return mm, Text(f"{counts(t.good, t.bad)} typed", "red")
    style = "green" if (t.good, t.bad) == (run.good, run.bad) else "yellow"
    return mm, Text(counts(t.good, t.bad), style)


def shop_floor(scene: Scene) -> Text:
    text = Text("\nOn the shop floor: people change only the ERP; erpsync has to notice\n", "bold")
    if not scene.events:
        text.append("  operators at work; the first clock-in comes in a moment\n", "dim")
    for at, what in scene.events[-LIVE_EVENTS:]:
        text.append(f"  {at:3.0f} s  ", "dim")
        text.append(f"{what}\n", "")
    return text


def audit_table(rows: list[AuditRow], scene: Scene) -> Table:
    """The newest audit rows, times in seconds since the service started."""
    out = table("erpsync's audit trail (erpsync_audit, newest last)")
    out.add_column("at", justify="right", no_wrap=True)
    out.add_column("action", no_wrap=True)
    out.add_column("outcome", no_wrap=True)
    out.add_column("machine", no_wrap=True)
    out.add_column("job op", no_wrap=True)
    out.add_column("detail")
    for row in rows:
        out.add_row(
            f"{scene.since_start(row.at):.0f} s",
            row.action,
            Text(row.outcome, outcome_style(row.outcome)),
            row.machine or "",
            job_op(row),
            Text(audit_detail(row, 70)),
        )
    return out


def job_op(row: AuditRow) -> str:
    return f"{job_name(row.job)} op {row.operation}" if row.job and row.operation else job_name(row.job)


def outcome_style(outcome: str) -> str:
    return "green" if outcome in ("succeeded", "written", "already_written", "noop") else "red"


def audit_detail(row: AuditRow, limit: int = 200) -> str:
    """The one fact worth reading in a row: counts written, the phase started, or what went wrong."""
    if (
        row.action == "write_counts"
        and row.after
        and row.outcome in ("written", "already_written", "conflict")
    ):
        after = json.loads(row.after)
        text = f"GOOD_QTY {after.get('GOOD_QTY')}, BAD_QTY {after.get('BAD_QTY')}"
        if row.outcome == "conflict" and row.before:
            before = json.loads(row.before)
            typed = counts(before.get("GOOD_QTY", 0), before.get("BAD_QTY", 0))
            text = f"ticket holds {typed}, not erpsync's last value: not overwritten with {text}"
        return text
    if row.message:
        return _short(_MM_PREFIX.sub("", row.message), limit)
    if row.action in ("start_run", "stop_run"):
        phase = json.loads(row.after).get("phase") if row.after else None
        return f"MM run {row.run_id}" + (f" in {phase}" if phase else "")
    return _short(row.detail or row.run_id or "", limit)


def totals_line(frame: Frame) -> Text:
    return Text.assemble(
        ("so far: ", "bold"),
        f"runs started {frame.started} · stopped {frame.stopped} · count writes {frame.writes} "
        f"on {frame.tickets_written} tickets · quarantine: {frame.quarantine_open} open, "
        f"{frame.quarantine_retried} retried",
    )


# -- without a terminal ----------------------------------------------------------------------------


def plain_event(at: float, text: str) -> str:
    return f"[{at:5.1f} s] shop floor: {text}"


def plain_audit(row: AuditRow, scene: Scene) -> str:
    where = " ".join(p for p in (row.machine, job_op(row)) if p)
    at = scene.since_start(row.at)
    return f"[{at:5.1f} s] erpsync: {row.action} {row.outcome}  {where}  {audit_detail(row)}".rstrip()


def plain_progress(frame: Frame, scene: Scene) -> str:
    """Each machine's count in MM and on its ticket, one line."""
    parts = []
    for machine, state in frame.by_machine().items():
        if state is not None and state.run is not None:
            run, t = state.run, state.ticket
            parts.append(f"{machine} MM {counts(run.good, run.bad)} ticket {counts(t.good, t.bad)}")
    return f"[{scene.elapsed:5.1f} s] parts (good / bad): " + ("; ".join(parts) or "no runs yet")


def _short(text: str, limit: int) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
