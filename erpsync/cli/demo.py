"""`erpsync demo`: the one-minute tour, with no configuration and no network (see erpsync/demo/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from erpsync.cli.common import handle_errors, stdout
from erpsync.demo import DEFAULT_SECONDS, MIN_SECONDS

PIPED_WIDTH = 120


def register(app: typer.Typer) -> None:
    """Add `demo` to the root `erpsync` app."""
    app.command("demo")(demo)


@handle_errors
def demo(
    seconds: Annotated[
        float,
        typer.Option(
            min=MIN_SECONDS, max=3600, help="Seconds the service runs; start-up and the summary add ~5-10 s."
        ),
    ] = DEFAULT_SECONDS,
    folder: Annotated[
        Path,
        typer.Option(
            "--dir", help="Folder for the demo's databases, log and erpsync.toml (emptied when re-run)."
        ),
    ] = Path("erpsync-demo"),
    plain: Annotated[
        bool, typer.Option("--plain", help="Print progress lines instead of the live view.")
    ] = False,
) -> None:
    """Watch erpsync work: a demo VISUAL ERP, a simulated MachineMetrics and the real service loop.

    Needs no configuration and no network; it ignores --config and ERPSYNC_* variables. Afterwards
    it prints the SQL and the erpsync commands to look at what happened.
    """
    from rich.console import Console  # noqa: PLC0415

    from erpsync.demo.app import run_demo  # noqa: PLC0415 - only this command needs it

    piped = not stdout.is_terminal and not os.environ.get("COLUMNS")
    console = Console(highlight=False, width=PIPED_WIDTH if piped else None)  # logs: no 80-column tables
    raise typer.Exit(run_demo(folder, seconds, console, live=False if plain else None))
