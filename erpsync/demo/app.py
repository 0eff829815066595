"""`run_demo`: the demo ERP, the simulator, the real service in a thread, the operators, the views.

The service is the one `erpsync serve` runs (`bootstrap.build_service`): leader lease, start-up
recovery, scheduled sync / write-back / purge jobs, health endpoint (on a random loopback port).
It runs in a background thread; the main thread plays the operators, who only touch the ERP,
and draws what the three worlds look like twice a second. Logs go to a file in the demo folder
at WARNING, so the screen shows the demo, not log lines.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from erpsync import bootstrap
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.db import create_db_engine
from erpsync.config import Settings
from erpsync.demo import MIN_SECONDS
from erpsync.demo.erp import JOBS, MACHINES, DemoErp
from erpsync.demo.observe import Observer
from erpsync.demo.script import ShopFloor, Step
from erpsync.demo.summary import shown_path, summary
from erpsync.demo.view import Scene, live_view, plain_audit, plain_event, plain_progress
from erpsync.demo.workspace import (
    SYNC_SECONDS,
    WRITEBACK_SECONDS,
    DemoFolder,
    demo_config,
    demo_settings,
    sqlite_url,
)
from erpsync.observability.correlation import correlation
from erpsync.observability.scrub import register_secret
from erpsync.runtime.logging import configure_logging
from erpsync.runtime.service import Service
from erpsync.service import quarantine
from erpsync.service.ports import AdminUnitOfWorkFactory, QuarantineAdmin

TIME_SCALE = 120.0  # the simulated machines make parts 120x faster than their cycle times
SEED = 7
TICK_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 5.0
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


class _ServiceThread(threading.Thread):
    """Runs `Service.run()` and keeps its exit code (or the exception that ended it)."""

    def __init__(self, service: Service) -> None:
        super().__init__(name="erpsync-demo-service", daemon=True)
        self.service = service
        self.exit_code: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.exit_code = self.service.run()
        except BaseException as exc:  # reported by the demo, which then exits 1
            self.error = exc


def run_demo(root: Path, seconds: float, console: Console, *, live: bool | None = None) -> int:
    """Run the demo in folder `root` for `seconds` of service time; the exit code."""
    began = time.monotonic()
    folder = DemoFolder(root)
    folder.prepare()
    with folder.log_file.open("a", encoding="utf-8") as log_stream:
        configure_logging("WARNING", "json", stream=log_stream)
        try:
            return _run(
                folder,
                max(seconds, MIN_SECONDS),
                console,
                console.is_terminal if live is None else live,
                began,
            )
        finally:
            logging.getLogger().handlers[:] = [logging.NullHandler()]  # the log file closes here


def _run(folder: DemoFolder, seconds: float, console: Console, live: bool, began: float) -> int:
    erp_engine = create_db_engine(sqlite_url(folder.erp_db))
    try:
        erp = DemoErp(erp_engine)
        erp.build()
        first_ticket = erp.fx.next_transaction_id()
        api_key = secrets.token_urlsafe(24)  # not a real secret, treated like one: never shown or kept
        register_secret(api_key)
        known = [m.id for m in MACHINES if m.in_mm]
        with MMSimulator(api_key=api_key, machines=known, time_scale=TIME_SCALE, seed=SEED) as sim:
            config = demo_config(folder, sim.base_url)
            folder.write_config(config)
            settings = demo_settings(config, api_key)
            with bootstrap.state_store(settings) as state, bootstrap.state(settings, store=state) as uow:
                bootstrap.Schema(state.engine).upgrade()
                floor = ShopFloor(erp, functools.partial(add_machine_in_mm, sim, uow))
                _intro(console, folder, seconds, floor.start_of_shift())
                scene = Scene(
                    seconds=seconds,
                    started_at=datetime.now(UTC),
                    sim_url=sim.base_url,
                    time_scale=TIME_SCALE,
                    sync_seconds=SYNC_SECONDS,
                    writeback_seconds=WRITEBACK_SECONDS,
                )
                runner = _ServiceThread(bootstrap.build_service(settings))
                observer = Observer(erp_engine, state.engine, sim, first_ticket)
                interrupted = _play(floor.steps(seconds), observer, scene, runner, console, live, settings)
                frame, examples = observer.frame(), observer.examples()  # MM still up: final counts
    finally:
        erp_engine.dispose()
    for part in summary(frame, scene, examples, folder, first_ticket, time.monotonic() - began):
        console.print(part, soft_wrap=isinstance(part, Text))  # lines stay whole for copy and paste
    return _outcome(runner, interrupted, console, folder)


def _play(
    steps: list[Step],
    observer: Observer,
    scene: Scene,
    runner: _ServiceThread,
    console: Console,
    live: bool,
    settings: Settings,
) -> bool:
    """Start the service, run the show, stop the service; True when Ctrl-C ended it early."""
    runner.start()
    try:
        _drive(steps, observer, scene, runner, console, live)
    except KeyboardInterrupt:
        return True
    finally:
        runner.service.request_stop("the demo ended")
        runner.join(settings.service.stop_grace_seconds + 5)
    return False


def _intro(console: Console, folder: DemoFolder, seconds: float, opening: list[str]) -> None:
    console.print(
        Text.assemble(
            ("erpsync demo", "bold"),
            f": the real service for {seconds:.0f} s on a demo Infor VISUAL ERP ({len(MACHINES)} machines, "
            f"{len(JOBS)} open work orders) and a simulated MachineMetrics; everything goes into "
            f"{shown_path(folder.root)}.",
        )
    )
    console.print(Text("At the start of the shift:"))
    for line in opening:
        console.print(Text(f"  {line}"), soft_wrap=True)


def _drive(
    steps: list[Step], observer: Observer, scene: Scene, runner: _ServiceThread, console: Console, live: bool
) -> None:
    """Play the operators' steps and redraw until the time is up (or the service stops by itself)."""
    start = time.monotonic()
    next_progress = PROGRESS_EVERY_SECONDS
    view = Live(console=console, auto_refresh=False, transient=False) if live else nullcontext()
    with view as screen:
        while True:
            tick = time.monotonic()
            scene.elapsed = tick - start
            while steps and steps[0].at <= scene.elapsed:
                step = steps.pop(0)
                step.act()
                scene.events.append((scene.elapsed, step.text))
                if screen is None:
                    console.print(Text(plain_event(scene.elapsed, step.text)), soft_wrap=True)
            detail = runner.service.readiness().detail
            scene.role, scene.fencing_token = str(detail.get("role")), detail.get("fencing_token")
            if screen is not None:
                screen.update(live_view(observer.frame(), scene, console), refresh=True)
            else:
                for row in observer.new_audit():
                    console.print(Text(plain_audit(row, scene)), soft_wrap=True)
                if scene.elapsed >= next_progress:
                    console.print(Text(plain_progress(observer.frame(), scene)), soft_wrap=True)
                    next_progress += PROGRESS_EVERY_SECONDS
            if scene.elapsed >= scene.seconds or not runner.is_alive():
                return
            time.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - tick)))


def add_machine_in_mm(sim: MMSimulator, uow: AdminUnitOfWorkFactory, machine: str) -> None:
    """IT's fix for a refused machine: give it its ERP machine id in MM, then retry its quarantined runs.

    The retry is `erpsync quarantine retry <id>` (service/quarantine.py), audited as triggered by cli.
    """
    sim.set_machines([*(sim.machines or []), machine])
    with correlation("cli"), uow() as work:
        admin = work.quarantine_admin
        refused = [e for e in admin.entries("open", limit=100_000) if e.action_id is not None]
        entry_ids = [e.id for e in refused if _action_machine(admin, e.action_id) == machine]
        for entry_id in entry_ids:
            quarantine.retry(work, entry_id)


def _action_machine(admin: QuarantineAdmin, action_id: int | None) -> str | None:
    action = admin.action(action_id) if action_id is not None else None
    return action.erp_machine if action is not None else None


def _outcome(runner: _ServiceThread, interrupted: bool, console: Console, folder: DemoFolder) -> int:
    log = shown_path(folder.log_file)
    if runner.is_alive():
        console.print(Text(f"error: the service did not stop in time; see {log}", "red"))
        return EXIT_FAILED
    if runner.error is not None or runner.exit_code != 0:
        why = (
            f"{type(runner.error).__name__}: {runner.error}"
            if runner.error
            else f"exit code {runner.exit_code}"
        )
        console.print(Text(f"error: the service stopped by itself ({why}); see {log}", "red"))
        return EXIT_FAILED
    if interrupted:
        console.print(Text("interrupted: the demo stopped early (Ctrl-C); the summary shows how far it got"))
        return EXIT_INTERRUPTED
    return EXIT_OK
