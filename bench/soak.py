"""Soak: `erpsync serve` for a long time against a churning VISUAL database, RSS sampled.

    uv run --locked --all-extras python -m bench.soak [--minutes 30] [--pg-url ADMIN_URL] [--out soak.json]

Not part of the test suite (it takes half an hour). It builds two PostgreSQL databases of its own
(dropped at the end): a VISUAL ERP with `--machines` machines and `--per-machine` operations on each,
and erpsync's state. MM is the simulator in its own process. One `erpsync serve` process (the real
CLI, lease defaults) syncs every `--sync-seconds` and writes counts back into LABOR_TICKET; operators
clock in and out `--changes-per-second` times a second (so several tickets share a machine, and the
one-run-per-machine rule keeps flagging the ones that lose it), and MM makes parts on the open runs.

Printed and written as JSON: RSS samples of the serve process, its growth over the last
`--window` minutes (last minus first sample, target <= 5 MB; and the least-squares trend over the
window, which one transient peak does not move), lease losses and error lines in its log (target 0
each),
ticket changes made and what erpsync's state holds at the end.

End check (issue #19, `bench/soak_agreement.py`): once the churn stops, `serve` runs two more sync
cycles, then every machine's most recent open clock-in is compared with the runs MM has open
there (targets: every machine agrees; no machine without a run, with another operation's run,
with several runs, or idle with a run open; no MM run id started twice).

Steady state: the `infor-visual` preset reads every ticket closed within
`source.visual.closed_ticket_lookback_hours` each cycle. The soak sets that lookback to
`--lookback-hours` (1, the minimum) and, before `serve` starts, inserts as many closed tickets as
the churn closes in one lookback, their CLOCK_OUT spread evenly over it, so old ones leave the
window as fast as new ones enter it and the ERP window (runs read per cycle) is constant from the
start; the runs read per cycle at the start and end of the judged window are printed to show it.
`--no-closed-history` starts with none (the window then grows through the whole run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.engine import make_url

from bench import soak_agreement
from bench.bench_writeback import Sim
from erpsync.adapters.erp.visual_schema import LABOR_TICKET, create_visual_schema
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.tables import AuditEntry, Cycle, RunBinding
from erpsync.demo.visual_fixture import OperationKey, VisualFixture, labor_ticket_values

DEFAULT_PG = os.environ.get("ERPSYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ZONE = "America/Chicago"


def create_database(admin_url: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), name


def drop_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def local_now() -> datetime:
    return datetime.now(ZoneInfo(ZONE)).replace(tzinfo=None, microsecond=0)


class Floor:
    """The shop floor: operations on machines, the open ticket of each operation (if any)."""

    def __init__(self, erp_url: str, machines: int, per_machine: int, rng: random.Random) -> None:
        self.engine = create_db_engine(erp_url)
        create_visual_schema(self.engine)
        self.fx = VisualFixture(self.engine)
        self.fx.add_part("P-100", "Bracket, 6061")
        self.rng = rng
        self.ops: list[OperationKey] = []
        for m in range(1, machines + 1):
            machine = self.fx.add_resource(f"M-{m:03d}", f"Machine {m}")
            for slot in range(per_machine):
                wo = self.fx.add_work_order(f"W{m:03d}{slot}", "1", part_id="P-100", desired_qty=500)
                self.ops.append(
                    self.fx.add_operation(wo, 10, machine, setup_hrs=1, run=0.05, calc_end_qty=500)
                )
        self.open: dict[int, int] = {}  # op index -> open ticket
        self.counts: dict[int, int] = {}  # ticket -> total parts made
        self.changes = 0

    def seed_closed_history(self, tickets: int, lookback: timedelta) -> None:
        """Tickets closed before the soak, CLOCK_OUT spread evenly over the last `lookback`."""
        now = local_now()
        step = lookback / max(tickets, 1)
        first = self.fx.next_transaction_id()
        rows = []
        for n in range(tickets):
            clock_out = now - lookback + step * (n + 1)
            clock_in = clock_out - timedelta(minutes=self.rng.randint(5, 90))
            rows.append(
                labor_ticket_values(
                    first + n,
                    self.ops[n % len(self.ops)],
                    site_id=self.fx.site_id,
                    ticket_type=self.rng.choice("RRS"),
                    employee_id="E1",
                    clock_in=clock_in,
                    clock_out=clock_out,
                )
            )
        for start in range(0, len(rows), 2000):
            self.fx.insert(LABOR_TICKET, rows[start : start + 2000])

    def open_all(self) -> None:
        for index in range(len(self.ops)):
            self._clock_in(index)

    def _clock_in(self, index: int) -> None:
        self.open[index] = self.fx.clock_in(
            self.ops[index], local_now(), ticket_type=self.rng.choice("RRS"), employee_id="E1"
        )
        self.changes += 1

    def _clock_out(self, index: int) -> None:
        ticket = self.open.pop(index)
        at = local_now()
        with self.engine.begin() as conn:
            conn.execute(
                update(LABOR_TICKET)
                .where(LABOR_TICKET.c["TRANSACTION_ID"] == ticket)
                .values(CLOCK_OUT=at, ACT_CLOCK_OUT=at)
            )
        self.counts.pop(ticket, None)
        self.changes += 1

    def churn(self, changes: int) -> None:
        """An operator clocks out of an operation and (mostly) the next one clocks in."""
        for index in self.rng.sample(range(len(self.ops)), k=changes):
            if index in self.open:
                self._clock_out(index)
                if self.rng.random() < 0.9:
                    self._clock_in(index)
            else:
                self._clock_in(index)

    def make_parts(self, sim: Sim, share: float = 0.2) -> None:
        """MM counts parts on a share of the open runs (counts only grow)."""
        for ticket in self.rng.sample(sorted(self.open.values()), k=int(len(self.open) * share)):
            total = self.counts.get(ticket, 0) + self.rng.randint(1, 20)
            try:
                sim.set_counts(f"erp:LT{ticket}", total=total)
            except httpx.HTTPError:
                continue  # not started in MM yet (or superseded on its machine)
            self.counts[ticket] = total


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_config(path: Path, erp_url: str, state_url: str, sim: Sim, args: argparse.Namespace) -> None:
    lines = [
        "[state]",
        f"url = {json.dumps(state_url)}",
        "[mm]",
        f"base_url = {json.dumps(sim.base_url)}",
        f"api_key = {json.dumps(sim.api_key)}",
        "max_concurrency = 8",
        "[source]",
        'kind = "infor-visual"',
        f"url = {json.dumps(erp_url)}",
        f"timezone = {json.dumps(ZONE)}",
        "[source.visual]",
        f"closed_ticket_lookback_hours = {args.lookback_hours}",
        "[sync]",
        f"interval_seconds = {args.sync_seconds}",
        "[writeback]",
        'sink = "visual-labor-ticket"',
        f"interval_seconds = {args.writeback_seconds}",
        f"settle_window_minutes = {args.settle_minutes}",
        "[service]",
        "health_port = 0",
        "[logging]",
        'level = "INFO"',
        'format = "json"',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def runs_read_per_cycle(log: Path) -> list[tuple[datetime, int]]:
    """(when, runs read) of each logged sync cycle: the ERP window the cycle read."""
    cycles: list[tuple[datetime, int]] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "sync cycle" and "runs_read" in event and "timestamp" in event:
            at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
            cycles.append((at, int(event["runs_read"])))
    return cycles


def window_runs_read(cycles: list[tuple[datetime, int]], start: datetime) -> dict[str, Any]:
    """Runs read per cycle at the start and end of the judged window, and their range inside it."""
    inside = [runs for at, runs in cycles if at >= start]
    if not inside:
        return {"window_runs_read_first": None, "window_runs_read_last": None}
    return {
        "window_runs_read_first": inside[0],
        "window_runs_read_last": inside[-1],
        "window_runs_read_min": min(inside),
        "window_runs_read_max": max(inside),
        "runs_read_first_cycle": cycles[0][1],
    }


def log_findings(log: Path) -> dict[str, Any]:
    errors: list[str] = []
    lease_lost: list[str] = []
    late: list[str] = []
    cycles = 0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            if line.strip():
                errors.append(line[:300])  # not structured: a traceback or a crash
            continue
        level = str(event.get("level", "")).lower()
        message = str(event.get("event", ""))
        if level in ("error", "critical", "exception"):
            errors.append(line[:300])
        if "lease lost" in message or "FencedError" in line:
            lease_lost.append(line[:300])
        if "renewal was late" in message:
            late.append(line[:300])
        if message == "sync cycle":
            cycles += 1
    return {
        "error_lines": len(errors),
        "errors": errors[:20],
        "lease_losses": len(lease_lost),
        "lease_lost": lease_lost[:20],
        "late_renewals": len(late),
        "sync_cycles_logged": cycles,
    }


def state_figures(state_url: str) -> dict[str, Any]:
    engine = create_db_engine(state_url)
    try:
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(select(RunBinding.status, func.count()).group_by(RunBinding.status)).all()
            )
            audit = dict(
                conn.execute(select(AuditEntry.action, func.count()).group_by(AuditEntry.action)).all()
            )
            outcomes = dict(
                conn.execute(
                    select(Cycle.kind + ":" + func.coalesce(Cycle.outcome, "running"), func.count()).group_by(
                        Cycle.kind, Cycle.outcome
                    )
                ).all()
            )
    finally:
        engine.dispose()
    return {"bindings": statuses, "audit_rows": audit, "cycles": outcomes}


def growth(samples: list[tuple[float, float]], window_seconds: float) -> dict[str, float]:
    """RSS growth over the last `window_seconds`: last minus first sample of the window, and its range."""
    end = samples[-1][0]
    window = [(t, mb) for t, mb in samples if t >= end - window_seconds]
    inside = [mb for _, mb in window]
    # a least-squares line through the window's samples: the trend, not one sample's transient peak
    slope = statistics.linear_regression([t for t, _ in window], inside).slope if len(window) > 1 else 0.0
    return {
        "window_trend_mb": round(slope * (window[-1][0] - window[0][0]), 1),
        "window_first_mb": round(inside[0], 1),
        "window_last_mb": round(inside[-1], 1),
        "window_growth_mb": round(inside[-1] - inside[0], 1),
        "window_min_mb": round(min(inside), 1),
        "window_max_mb": round(max(inside), 1),
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    erp_url, erp_name = create_database(args.pg_url, "erpsync_soak_erp")
    state_url, state_name = create_database(args.pg_url, "erpsync_soak_state")
    sim = Sim(in_process=False, call_log_limit=2_000_000)  # every start of the soak is kept
    proc: subprocess.Popen[bytes] | None = None
    folder = Path(tempfile.mkdtemp(prefix="erpsync-soak-"))
    log = folder / "serve.log"
    try:
        engine = create_db_engine(state_url)
        migrate.upgrade(engine)
        engine.dispose()
        floor = Floor(erp_url, args.machines, args.per_machine, rng)
        seeded = closed_history(args) if args.closed_history else 0
        floor.seed_closed_history(seeded, timedelta(hours=args.lookback_hours))
        floor.open_all()
        print(f"soak: {seeded} closed tickets within the {args.lookback_hours} h lookback seeded", flush=True)
        config = folder / "erpsync.toml"
        write_config(config, erp_url, state_url, sim, args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args.serve_with.split(), "--config", str(config), "serve"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        began = time.monotonic()
        began_wall = datetime.now(ZoneInfo("UTC"))
        end = began + args.minutes * 60
        samples: list[tuple[float, float]] = []
        next_sample = began
        next_parts = began
        print(f"soak: serve pid {proc.pid}, log {log}, {args.minutes} min", flush=True)
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"erpsync serve exited early with {proc.returncode}; see {log}")
            now = time.monotonic()
            if now >= next_sample and (rss := rss_mb(proc.pid)) > 0:
                samples.append((now - began, rss))
                next_sample += args.sample_seconds
                if len(samples) % 12 == 0:
                    print(
                        f"  {samples[-1][0] / 60:5.1f} min: RSS {samples[-1][1]:.1f} MB, "
                        f"{floor.changes} ticket changes",
                        flush=True,
                    )
            if now >= next_parts:
                floor.make_parts(sim)
                next_parts += 10
            floor.churn(args.changes_per_second)
            time.sleep(max(0.0, 1 - (time.monotonic() - now)))
        # the churn has stopped: two more sync cycles, then MM must show every latest clock-in
        settled = soak_agreement.settle(
            proc,
            lambda: len(runs_read_per_cycle(log)),
            2,
            max(3 * args.sync_seconds, args.settle_max_seconds),
        )
        machines = [f"M-{m:03d}" for m in range(1, args.machines + 1)]
        agreed = soak_agreement.end_check(floor.engine, state_url, sim.runs(), sim.calls(), machines)
        print(f"soak: {soak_agreement.summary_line(agreed)}", flush=True)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        findings = log_findings(log)
        judged_from = began_wall + timedelta(seconds=samples[-1][0] - args.window * 60)
        runs_read = window_runs_read(runs_read_per_cycle(log), judged_from)
        result = {
            "minutes": args.minutes,
            "machines": args.machines,
            "open_tickets": len(floor.open),
            "ticket_changes": floor.changes,
            "sync_seconds": args.sync_seconds,
            "writeback_seconds": args.writeback_seconds,
            "settle_window_minutes": args.settle_minutes,
            "exit_code": code,
            "rss_first_mb": round(samples[0][1], 1),
            "rss_last_mb": round(samples[-1][1], 1),
            "rss_peak_mb": round(max(mb for _, mb in samples), 1),
            **growth(samples, args.window * 60),
            "window_minutes": args.window,
            "lookback_hours": args.lookback_hours,
            "closed_history_seeded": seeded,
            **runs_read,
            **findings,
            **settled,
            **agreed,
            "state": state_figures(state_url),
            "samples": [(round(t), round(mb, 1)) for t, mb in samples],
            "log": str(log),
        }
        floor.engine.dispose()
        return result
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sim.close()
        drop_database(args.pg_url, erp_name)
        drop_database(args.pg_url, state_name)


def closed_history(args: argparse.Namespace) -> int:
    """Tickets the churn closes in one lookback: the closed window's steady-state size.

    Each change picks an operation at random: an open one is clocked out (and clocked in again 9
    times in 10), a closed one is clocked in. Open share p balances at 0.1 p = 1 - p, p = 10/11;
    each change on an open operation closes a ticket, so closes per second = changes * 10/11.
    """
    closes_per_second: float = args.changes_per_second * 10 / 11
    hours: int = args.lookback_hours
    return round(closes_per_second * hours * 3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--window", type=float, default=20, help="minutes at the end the growth is judged on")
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--per-machine", type=int, default=3)
    parser.add_argument("--changes-per-second", type=int, default=4)
    parser.add_argument("--sync-seconds", type=float, default=5)
    parser.add_argument("--writeback-seconds", type=float, default=10)
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument(
        "--settle-minutes",
        type=int,
        default=5,
        help="writeback.settle_window_minutes: ended runs are re-read this long, so the write-back "
        "working set (and memory) only levels off after it",
    )
    parser.add_argument(
        "--lookback-hours",
        type=int,
        default=1,
        help="source.visual.closed_ticket_lookback_hours for serve (1 is the minimum)",
    )
    parser.add_argument(
        "--closed-history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="seed the tickets the churn closes in one lookback before serve starts, so the ERP "
        "window is at its steady-state size from the start",
    )
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument(
        "--settle-max-seconds",
        type=float,
        default=60,
        help="after the churn, wait at most this long (or 3 x --sync-seconds) for two sync cycles",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--serve-with",
        default="-m erpsync",
        help="python arguments that start the CLI (e.g. '-X tracemalloc=10 probe.py' to profile it)",
    )
    args = parser.parse_args()
    result = soak(args)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2, default=str))
    ok = result["window_growth_mb"] <= 5 and not result["lease_losses"] and not result["error_lines"]
    ok = ok and soak_agreement.agrees(result)
    print(
        f"soak {'PASS' if ok else 'FAIL'}: RSS growth over the last {args.window:g} min "
        f"{result['window_growth_mb']} MB, last minus first sample (target <= 5; least-squares trend "
        f"{result['window_trend_mb']} MB), lease losses {result['lease_losses']}, "
        f"error lines {result['error_lines']}; runs read per cycle at the start / end of the window "
        f"{result['window_runs_read_first']} / {result['window_runs_read_last']}; "
        f"{soak_agreement.summary_line(result)}"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
