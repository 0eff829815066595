"""`erpsync simulator`: run the MachineMetrics simulator in the foreground until SIGINT/SIGTERM.

A test and demo tool: it needs no config file, listens on loopback by default, and its control
endpoints (``/_sim/...``) have no auth. Point erpsync at it with ``mm.base_url`` = the printed URL
and ``mm.api_key`` = the printed key.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from erpsync.cli.common import fail, stderr, stdout

if TYPE_CHECKING:
    from erpsync.adapters.mm.simulator import Fault, FaultKind

# the simulator (and the configuration it reads) is imported when the command runs: start-up time

Rate = Annotated[float, typer.Option(min=0.0, max=1.0)]


def read_machines(machines: str | None, machines_file: Path | None) -> set[str] | None:
    """Known machine ids from ``--machines M1,M2`` and/or a file (one per line, ``#`` comments)."""
    if machines is None and machines_file is None:
        return None
    ids = {m.strip() for m in (machines or "").split(",") if m.strip()}
    if machines_file is not None:
        try:
            lines = machines_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {machines_file}: {exc.strerror}") from None
        ids |= {line.split("#", 1)[0].strip() for line in lines} - {""}
    return ids


def faults_from_flags(
    *,
    operations: str | None,
    error_rate: float,
    error_status: int,
    rate_limit_rate: float,
    retry_after: float,
    latency_ms: float,
    drop_rate: float,
    apply_then_fail_rate: float,
) -> list[Fault]:
    from erpsync.adapters.mm.simulator import Fault  # noqa: PLC0415
    from erpsync.adapters.mm.simulator.faults import OPERATIONS  # noqa: PLC0415

    ops = frozenset(o.strip() for o in operations.split(",")) if operations else None
    if ops is not None and not ops <= set(OPERATIONS):
        raise typer.BadParameter(f"--fault-operations: expected some of {', '.join(OPERATIONS)}")
    rates: list[tuple[FaultKind, float]] = [
        ("drop", drop_rate),
        ("rate_limit", rate_limit_rate),
        ("error", error_rate),
        ("apply_then_fail", apply_then_fail_rate),
    ]
    faults = [Fault("latency", operations=ops, latency_ms=latency_ms)] if latency_ms else []
    faults += [
        Fault(kind, operations=ops, probability=rate, status=error_status, retry_after=retry_after)
        for kind, rate in rates
        if rate > 0
    ]
    return faults


def simulator(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 = any free port).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on; keep it loopback.")] = "127.0.0.1",
    api_key: Annotated[
        str, typer.Option(envvar="ERPSYNC_SIM_API_KEY", help="The API key the simulator accepts.")
    ] = "sim-key",
    machines: Annotated[
        str | None, typer.Option(help="Known ERP machine ids, comma-separated (default: accept any).")
    ] = None,
    machines_file: Annotated[
        Path | None, typer.Option(help="File of known machine ids, one per line.")
    ] = None,
    time_scale: Annotated[
        float, typer.Option(min=0.001, help="Simulated seconds per real second (60: a minute a second).")
    ] = 1.0,
    scrap_share: Rate = 0.02,
    nonconform_share: Rate = 0.01,
    seed: Annotated[int | None, typer.Option(help="Seed for part quality and fault draws.")] = None,
    get_query_path: Annotated[
        str | None,
        typer.Option(
            help="Path of get-job-run with query erpRunId (current-docs form); default /erp/jobrun."
        ),
    ] = None,
    reject_busy_machine: Annotated[
        bool, typer.Option(help="409 on a start for a busy machine instead of ending its run.")
    ] = False,
    fault_operations: Annotated[
        str | None, typer.Option(help="Faults only for these operations: start,stop,get,import.")
    ] = None,
    error_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of calls answered 5xx.")] = 0.0,
    error_status: Annotated[int, typer.Option(min=400, max=599, help="Status of injected errors.")] = 500,
    rate_limit_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of calls answered 429.")
    ] = 0.0,
    retry_after: Annotated[float, typer.Option(min=0.0, help="Retry-After of injected 429s.")] = 1.0,
    latency_ms: Annotated[float, typer.Option(min=0.0, help="Latency added to every call.")] = 0.0,
    drop_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of connections closed without answer.")
    ] = 0.0,
    apply_then_fail_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of calls applied, then answered 500.")
    ] = 0.0,
) -> None:
    """Run a strict MachineMetrics simulator (a test tool) until Ctrl-C / SIGTERM."""
    from erpsync.adapters.mm.simulator import MMSimulator, SimPaths  # noqa: PLC0415
    from erpsync.adapters.mm.simulator.server import is_loopback  # noqa: PLC0415

    faults = faults_from_flags(
        operations=fault_operations,
        error_rate=error_rate,
        error_status=error_status,
        rate_limit_rate=rate_limit_rate,
        retry_after=retry_after,
        latency_ms=latency_ms,
        drop_rate=drop_rate,
        apply_then_fail_rate=apply_then_fail_rate,
    )
    sim = MMSimulator(
        api_key=api_key,
        host=host,
        port=port,
        machines=read_machines(machines, machines_file),
        time_scale=time_scale,
        scrap_share=scrap_share,
        nonconform_share=nonconform_share,
        seed=seed,
        paths=SimPaths(get_by_query=get_query_path) if get_query_path else SimPaths(),
        faults=faults,
        reject_busy_machine=reject_busy_machine,
    )
    try:
        sim.start()
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stdout.print(f"MachineMetrics simulator listening on {sim.base_url}", markup=False)
        stdout.print(f"API key: {api_key}", markup=False)
        known = ", ".join(sim.machines) if sim.machines is not None else "any"
        stdout.print(f"machines: {known}; time scale: {time_scale:g}x; faults: {len(faults)}", markup=False)
        stdout.print(f"inspect: {sim.base_url}/_sim/state  (Ctrl-C to stop)", markup=False)
        sys.stdout.flush()
        if not is_loopback(host):
            stderr.print("warning: not loopback; /_sim/ control endpoints have no auth", markup=False)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stdout.print("simulator stopped", markup=False)
