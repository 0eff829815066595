"""The demo's last screen: what erpsync did, the tickets at the end, and how to look around.

Every number comes from the frame (the state database, the ERP, the simulator); nothing is
claimed that did not happen. The inspection commands are exact: copy, paste, run, from the
directory the demo ran in. Only read commands are offered: the simulator is gone by then.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from erpsync.demo.observe import AuditRow, Frame
from erpsync.demo.view import Scene, audit_detail, counts, job_op, outcome_style, table
from erpsync.demo.workspace import SINK, DemoFolder

COMMAND_PREFIX = "  $ "


def shown_path(path: Path) -> str:
    """`path` as the user would type it: relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        text = str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(resolved)
    return shlex.quote(text)


def erpsync_command() -> str:
    """How to run erpsync the way the demo was run: through uv, the installed script, or python -m."""
    if os.environ.get("UV"):  # set by `uv run` for the commands it runs
        return "uv run erpsync"
    if shutil.which("erpsync"):
        return "erpsync"
    return f"{shlex.quote(sys.executable)} -m erpsync"


def inspection_commands(folder: DemoFolder, first_ticket: int) -> list[str]:
    """SQL on both databases and erpsync's read commands, each ready to paste."""
    state, erp = shown_path(folder.state_db), shown_path(folder.erp_db)
    activity = (
        "SELECT occurred_at, action, outcome, erp_machine, erp_operation, mm_run_id "
        "FROM v_erpsync_recent_activity ORDER BY id"
    )
    tickets = (
        "SELECT TRANSACTION_ID, EMPLOYEE_ID, RESOURCE_ID, WORKORDER_BASE_ID, OPERATION_SEQ_NO, TYPE, "
        "CLOCK_IN, CLOCK_OUT, GOOD_QTY, BAD_QTY "
        f"FROM LABOR_TICKET WHERE TRANSACTION_ID >= {first_ticket} ORDER BY TRANSACTION_ID"
    )
    erpsync = f"{erpsync_command()} --config {shown_path(folder.config_file)}"
    return [
        f"sqlite3 -header -column {state} {shlex.quote(activity)}",
        f"sqlite3 -header -column {erp} {shlex.quote(tickets)}",
        f"{erpsync} audit --limit 20",
        f"{erpsync} status",
        f"{erpsync} quarantine list",
    ]


def summary(
    frame: Frame, scene: Scene, examples: list[AuditRow], folder: DemoFolder, first_ticket: int, wall: float
) -> list[RenderableType]:
    """Everything printed after the live part, in order."""
    out: list[RenderableType] = [
        Text(f"\nerpsync demo finished after {wall:.0f} s (the service ran {scene.elapsed:.0f} s).", "bold"),
        Text("What erpsync did on its own, from the labor tickets in the ERP:"),
        Text(f"  runs started in MachineMetrics: {frame.started}, stopped: {frame.stopped}"),
        Text(
            f"  part counts written onto labor tickets: {frame.writes} writes on {frame.tickets_written} "
            "tickets (GOOD_QTY / BAD_QTY)"
        ),
    ]
    refused = frame.count("start_run", "quarantined")
    if refused:
        retried = frame.count("quarantine_retry", "succeeded")
        tail = ", then started after the fix and `erpsync quarantine retry`" if retried else ""
        out.append(Text(f"  quarantined: {refused} run(s) on a machine MachineMetrics did not know{tail}"))
    for state in frame.tickets:
        if state.conflict and state.run is not None:
            t = state.ticket
            out.append(
                Text(
                    f"  kept a person's count: LT{t.id} holds {counts(t.good, t.bad)} typed at clock-out, "
                    f"MachineMetrics counted {counts(state.run.good, state.run.bad)}; erpsync did not "
                    "overwrite it and quarantined the conflict for a person to decide"
                )
            )
    out += [
        tickets_table(frame),
        Text("A few audit rows (the first of each kind; occurred_at is UTC), from erpsync_audit:", "bold"),
        *(example_line(row) for row in examples),
        Text(f"\nLook around: everything is in {shown_path(folder.root)}", "bold"),
    ]
    out += [Text(COMMAND_PREFIX + command) for command in inspection_commands(folder, first_ticket)]
    notes = [
        "The simulated MachineMetrics stopped with the demo, so use commands that read (audit, status, "
        "machines, quarantine list, plan); serve, sync and writeback need a MachineMetrics.",
        f"The demo writes counts onto the operator's labor ticket (writeback.sink = {SINK!r}); "
        "a production install defaults to the staging table (see `erpsync erp install-staging`).",
    ]
    if shutil.which("sqlite3") is None:
        notes.insert(
            0,
            "No sqlite3 command here: install it (e.g. apt install sqlite3) or open the files "
            "in any SQLite browser.",
        )
    out += [Text(note, "dim") for note in notes]
    return out


def example_line(row: AuditRow) -> Text:
    return Text.assemble(
        f"  {row.at:%H:%M:%S}  {row.action} ",
        (row.outcome, outcome_style(row.outcome)),
        f"  {' '.join(p for p in (row.machine, job_op(row)) if p)}  {audit_detail(row, 160)}".rstrip(),
    )


def tickets_table(frame: Frame) -> Table:
    out = table("\nLabor tickets at the end (ERP) and their job runs (MachineMetrics)")
    for name in ("ticket", "machine", "job op", "type", "clock in-out"):
        out.add_column(name, no_wrap=True)
    out.add_column("MM good/bad", justify="right", no_wrap=True)
    out.add_column("ticket", justify="right", no_wrap=True)
    out.add_column("erpsync", no_wrap=True)
    for state in frame.tickets:
        t, run = state.ticket, state.run
        out.add_row(
            f"LT{t.id}",
            t.machine,
            f"{t.job} op {t.op}",
            "SETUP" if t.setup else "RUN",
            f"{t.clock_in:%H:%M:%S}-{t.clock_out:%H:%M:%S}" if t.clock_out else f"{t.clock_in:%H:%M:%S}-",
            counts(run.good, run.bad) if run else "",
            counts(t.good, t.bad),
            Text("conflict", "red") if state.conflict else Text(state.binding or "not started"),
        )
    out.caption = "open runs keep counting in MachineMetrics; erpsync writes their counts every few seconds"
    out.caption_justify = "left"
    return out
