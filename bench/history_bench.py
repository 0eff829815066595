"""ERP load against history: no-change cycles of the infor-visual preset over VISUAL databases that
hold 10k, 300k and 3M closed labor tickets and the same 300 open + 600 recently closed (issue 18).

    uv run python -m bench.history_bench [--sizes 10000 300000 3000000] [--servers postgresql mariadb]
                                         [--repeats 15] [--rebuild]

Each database has only the primary keys VISUAL ships (the fixture's CLOCK_OUT index is dropped). It
is built once per server and size (`erpsync_bench_history_<N>`, kept for the next run; `--rebuild`
builds it again) with one INSERT ... SELECT over generate_series (PostgreSQL) or a seq_1_to_N table
(MariaDB); the 900 open / recent tickets (ids above the history) are re-inserted relative to the
current time on every run, and the tables analyzed (as a live ERP's automatic statistics would be).

Per server and size, from the server's own statistics around each read (the source is opened and
closed per read, as `erpsync serve`'s sync job does, so PostgreSQL flushes its counters):
- the start-up / nightly full read, once (the cost every cycle had before issue 18);
- the no-change incremental read, `--repeats` times (median): LABOR_TICKET rows read
  (PostgreSQL `seq_tup_read + idx_tup_fetch`; MariaDB `TABLE_STATISTICS.ROWS_READ`, turned on with
  `userstat` for the run and restored), heap and index pages (`pg_statio_user_tables`; MariaDB
  `Innodb_buffer_pool_read_requests`, server-wide so concurrent load adds to it), MariaDB's
  `Handler_read_*` (server-wide), and the read's wall time;
- the whole no-change sync cycle (`SyncService.run_cycle`: recover, read, bindings, reconcile,
  journal, dispatch), `--repeats` times (median), state in SQLite, MM answered in-process.
Targets, as ratios within the run: rows read 3M / 10k <= 1.2x; read time 3M / 10k <= 2x; rows read
per cycle <= 2 x (open + recently closed + new) tickets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from bench import bench_sources
from bench.machine import git_state, load, machine_info
from bench.sync_bench import _AcceptingMM, _Leader
from erpsync.adapters.erp.read_window import ReadWindows
from erpsync.adapters.erp.visual_schema import (
    LABOR_TICKET,
    OPERATION,
    PART,
    SHOP_RESOURCE,
    WORK_ORDER,
    create_visual_schema,
)
from erpsync.adapters.erp.visual_source import LOOKUP_BATCH, VisualSource
from erpsync.adapters.erp.visual_statements import (
    known_tickets_statement,
    latest_id_statement,
    new_tickets_statement,
    runs_statement,
)
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.bootstrap import open_sync
from erpsync.config import Settings, SourceSettings, StateSettings
from erpsync.demo.visual_fixture import (
    OperationKey,
    VisualFixture,
    WorkOrderKey,
    labor_ticket_values,
    operation_values,
    work_order_values,
)
from erpsync.domain.model import JobOperationRun
from erpsync.runtime.logging import configure_logging

DEFAULT_MARIADB = os.environ.get("ERPSYNC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
SIZES = (10_000, 300_000, 3_000_000)
OPEN, RECENT, MACHINES, WORK_ORDERS = 300, 600, 100, 1_000
BATCH = 500_000
ROWS_RATIO, TIME_RATIO, PER_TICKET = 1.2, 2.0, 2.0

# LABOR_TICKET columns filled by the bulk history insert: (column, PostgreSQL expr, MariaDB expr)
_HISTORY = (
    ("TRANSACTION_ID", "g", "seq"),
    ("WORKORDER_TYPE", "'W'", "'W'"),
    ("WORKORDER_BASE_ID", "'B' || lpad((g % 1000)::text, 5, '0')", "CONCAT('B', LPAD(seq MOD 1000, 5, '0'))"),
    ("WORKORDER_LOT_ID", "'1'", "'1'"),
    ("WORKORDER_SPLIT_ID", "'0'", "'0'"),
    ("WORKORDER_SUB_ID", "'0'", "'0'"),
    ("OPERATION_SEQ_NO", "10", "10"),
    ("TYPE", "CASE WHEN g % 10 = 0 THEN 'S' ELSE 'R' END", "IF(seq MOD 10 = 0, 'S', 'R')"),
    ("SETUP_COMPLETED", "'N'", "'N'"),
    ("EMPLOYEE_ID", "'E' || (g % 60)", "CONCAT('E', seq MOD 60)"),
    ("DEPARTMENT_ID", "'PROD'", "'PROD'"),
    ("RESOURCE_ID", "'M' || lpad((g % 100)::text, 3, '0')", "CONCAT('M', LPAD(seq MOD 100, 3, '0'))"),
    (
        "CLOCK_IN",
        "timestamp '2012-01-01' + g * interval '1 minute'",
        "TIMESTAMP('2012-01-01') + INTERVAL seq MINUTE",
    ),
    (
        "CLOCK_OUT",
        "timestamp '2012-01-01' + (g + 50) * interval '1 minute'",
        "TIMESTAMP('2012-01-01') + INTERVAL (seq + 50) MINUTE",
    ),
    ("HOURS_WORKED", "0.833", "0.833"),
    ("GOOD_QTY", "g % 40", "seq MOD 40"),
    ("BAD_QTY", "g % 3", "seq MOD 3"),
    (
        "TRANSACTION_DATE",
        "timestamp '2012-01-01' + g * interval '1 minute'",
        "TIMESTAMP('2012-01-01') + INTERVAL seq MINUTE",
    ),
    ("DESCRIPTION", "'run labor'", "'run labor'"),
    ("POSTING_CANDIDATE", "'N'", "'N'"),
    ("INDIRECT_CODE", "'N'", "'N'"),
    (
        "CREATE_DATE",
        "timestamp '2012-01-01' + g * interval '1 minute'",
        "TIMESTAMP('2012-01-01') + INTERVAL seq MINUTE",
    ),
    ("SITE_ID", "'MAIN'", "'MAIN'"),
)


# -- databases ------------------------------------------------------------------------------------
def _server_url(admin_url: str, database: str) -> str:
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def _is_pg(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def _q(name: str, pg: bool) -> str:
    return f'"{name}"' if pg else f"`{name}`"


def ensure_database(admin_url: str, history: int, rebuild: bool) -> str:
    """The history database of this size on this server, built unless a complete one exists."""
    name = f"erpsync_bench_history_{history}"
    url = _server_url(admin_url, name)
    pg = _is_pg(admin_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n")
                if pg
                else text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"),
                {"n": name},
            ).scalar()
            if exists and not rebuild and _built(url) == history:
                return url
            if exists:
                conn.execute(text(f"DROP DATABASE {name}" + (" WITH (FORCE)" if pg else "")))
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    began = time.perf_counter()
    _build(url, history)
    print(f"  built {name} ({history:,} closed tickets) in {time.perf_counter() - began:.0f} s", flush=True)
    return url


def _built(url: str) -> int | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT history FROM erpsync_bench_built")).scalar_one())
    except Exception:
        return None
    finally:
        engine.dispose()


def _build(url: str, history: int) -> None:
    pg = _is_pg(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        create_visual_schema(engine)
        for index in LABOR_TICKET.indexes:  # VISUAL ships primary keys only
            index.drop(engine)
        fx = VisualFixture(engine)
        fx.insert(SHOP_RESOURCE, [{"ID": _machine(m)} for m in range(MACHINES)])
        fx.insert(PART, [{"ID": f"P{p:03d}", "DESCRIPTION": f"part {p}"} for p in range(50)])
        keys = [WorkOrderKey("W", f"B{w:05d}") for w in range(WORK_ORDERS)]
        fx.insert(
            WORK_ORDER,
            [
                work_order_values(k, site_id="MAIN", PART_ID=f"P{w % 50:03d}", DESIRED_QTY=100)
                for w, k in enumerate(keys)
            ],
        )
        fx.insert(
            OPERATION,
            [
                operation_values(
                    OperationKey(k, 10),
                    _machine(w),
                    site_id="MAIN",
                    RUN=0.05,
                    RUN_TYPE="HRS/PC",
                    CALC_END_QTY=100,
                )
                for w, k in enumerate(keys)
            ],
        )
        columns = ", ".join(_q(c, pg) for c, _, _ in _HISTORY)
        for start in range(1, history + 1, BATCH):
            end = min(history, start + BATCH - 1)
            if pg:
                values = ", ".join(e for _, e, _ in _HISTORY)
                source = f"generate_series({start}, {end}) g"
            else:
                values = ", ".join(e for _, _, e in _HISTORY)
                source = f"seq_{start}_to_{end}"
            with engine.begin() as conn:
                conn.execute(
                    text(f"INSERT INTO {_q('LABOR_TICKET', pg)} ({columns}) SELECT {values} FROM {source}")
                )
        analyze(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CREATE TABLE erpsync_bench_built (history INTEGER NOT NULL)"))
            conn.execute(text("INSERT INTO erpsync_bench_built VALUES (:h)"), {"h": history})
    finally:
        engine.dispose()


def _machine(n: int) -> str:
    return f"M{n % MACHINES:03d}"


def refresh_recent(url: str, history: int, now: datetime) -> None:
    """The 600 recently closed and 300 open tickets, ids above the history, relative to `now`."""
    local = now.astimezone(UTC).replace(tzinfo=None)
    rows = []
    for i in range(RECENT + OPEN):
        w = (i * 7) % WORK_ORDERS if i < RECENT else i - RECENT  # open ones: 3 per machine
        op = OperationKey(WorkOrderKey("W", f"B{w:05d}"), 10)
        if i < RECENT:
            clock_in, clock_out = local - timedelta(hours=2 + i / 10), local - timedelta(hours=1 + i / 10)
        else:
            clock_in, clock_out = local - timedelta(minutes=5 + (i % 8) * 30), None
        rows.append(
            labor_ticket_values(
                history + 1 + i,
                op,
                site_id="MAIN",
                resource_id=_machine(w),
                clock_in=clock_in,
                clock_out=clock_out,
                DEPARTMENT_ID="PROD",
            )
        )
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(delete(LABOR_TICKET).where(LABOR_TICKET.c["TRANSACTION_ID"] > history))
        VisualFixture(engine).insert(LABOR_TICKET, rows)
        analyze(engine)
    finally:
        engine.dispose()


def analyze(engine: Engine) -> None:
    """Fresh planner statistics on every table, as a live ERP's automatic statistics keep them."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("VACUUM ANALYZE"))
        else:
            tables = ", ".join(t.name for t in (LABOR_TICKET, OPERATION, WORK_ORDER, PART, SHOP_RESOURCE))
            conn.execute(text(f"ANALYZE TABLE {tables}")).all()


# -- the servers' own statistics ------------------------------------------------------------------
class Stats:
    """Counters of one server for one database's LABOR_TICKET, read before and after a measurement."""

    def __init__(self, url: str) -> None:
        self.pg = _is_pg(url)
        self.database = make_url(url).database
        self.engine: Engine = create_engine(url, poolclass=NullPool)

    def read(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            if self.pg:
                time.sleep(0.3)  # a closed backend flushes its counters as it exits
                conn.execute(text("SELECT pg_stat_clear_snapshot()"))
                row = conn.execute(
                    text(
                        "SELECT s.seq_tup_read, coalesce(s.idx_tup_fetch, 0), s.seq_scan, "
                        "coalesce(s.idx_scan, 0), io.heap_blks_read + io.heap_blks_hit, "
                        "coalesce(io.idx_blks_read + io.idx_blks_hit, 0) FROM pg_stat_user_tables s "
                        "JOIN pg_statio_user_tables io USING (relid) WHERE s.relname = 'LABOR_TICKET'"
                    )
                ).one()
                names = ("seq_tup_read", "idx_tup_fetch", "seq_scan", "idx_scan", "heap_pages", "index_pages")
                return dict(zip(names, (int(v) for v in row), strict=True))
            rows_read = conn.execute(
                text(
                    "SELECT coalesce(sum(ROWS_READ), 0) FROM information_schema.TABLE_STATISTICS "
                    "WHERE TABLE_SCHEMA = :db AND TABLE_NAME = 'LABOR_TICKET'"
                ),
                {"db": self.database},
            ).scalar_one()
            status = {
                str(name): int(value)
                for name, value in conn.execute(
                    text(
                        "SHOW GLOBAL STATUS WHERE Variable_name LIKE 'Handler_read%' OR Variable_name IN "
                        "('Innodb_rows_read', 'Innodb_buffer_pool_read_requests', 'Innodb_buffer_pool_reads')"
                    )
                )
            }
            return {"table_rows_read": int(rows_read), **status}

    def close(self) -> None:
        self.engine.dispose()


def lt_rows(delta: dict[str, int]) -> int:
    """LABOR_TICKET rows read, by the server's own count."""
    if "table_rows_read" in delta:
        return delta["table_rows_read"]
    return delta["seq_tup_read"] + delta["idx_tup_fetch"]


def pages(delta: dict[str, int]) -> int:
    if "heap_pages" in delta:
        return delta["heap_pages"] + delta["index_pages"]
    return delta["Innodb_buffer_pool_read_requests"]


@contextmanager
def mariadb_userstat(url: str) -> Iterator[None]:
    """MariaDB's per-table row counts (TABLE_STATISTICS) for the run; the setting is restored."""
    if _is_pg(url):
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT @@GLOBAL.userstat")).scalar_one()
        conn.execute(text("SET GLOBAL userstat = 1"))
    try:
        yield
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"SET GLOBAL userstat = {int(before)}"))
        engine.dispose()


def measured(stats: Stats, action: Callable[[], Any]) -> tuple[float, dict[str, int], Any]:
    before = stats.read()
    began = time.perf_counter()
    value = action()
    seconds = time.perf_counter() - began
    after = stats.read()
    return seconds, {k: after[k] - before.get(k, 0) for k in after}, value


# -- one database ---------------------------------------------------------------------------------
def _source_settings(url: str) -> SourceSettings:
    return SourceSettings(url=url, name="erp", kind="infor-visual", timezone="UTC")


def read_once(url: str, windows: ReadWindows) -> int:
    """One read as a sync cycle does it: open the source, read every run, close it."""
    source = VisualSource(_source_settings(url), windows=windows)
    try:
        return sum(1 for item in source.read_runs() if isinstance(item, JobOperationRun))
    finally:
        source.close()


def measure(url: str, history: int, repeats: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    refresh_recent(url, history, now)
    stats = Stats(url)
    result: dict[str, Any] = {"history": history, "open": OPEN, "recent": RECENT}
    try:
        windows = ReadWindows()
        seconds, delta, runs = measured(stats, lambda: read_once(url, windows))
        result["full_read"] = {
            "seconds": seconds,
            "rows": lt_rows(delta),
            "pages": pages(delta),
            "raw": delta,
        }
        result["runs"] = runs
        reads = []
        for _ in range(repeats):
            seconds, delta, runs = measured(stats, lambda: read_once(url, windows))
            reads.append({"seconds": seconds, "rows": lt_rows(delta), "pages": pages(delta), "raw": delta})
            assert runs == result["runs"], (
                f"incremental read returned {runs} runs, full read {result['runs']}"
            )
        result["read"] = _median(reads)
        result["server_ms"] = server_ms(url, windows)
        result["cycle"] = _cycles(url, stats, repeats)
    finally:
        stats.close()
    return result


def server_ms(url: str, windows: ReadWindows, repeats: int = 5) -> dict[str, float]:
    """Server execution time (EXPLAIN ANALYZE / ANALYZE FORMAT=JSON, best of `repeats`) of the
    statements of one full read and of one no-change read, with the parameters the source used."""
    settings = _source_settings(url)
    v = settings.visual
    source = VisualSource(settings, windows=windows)
    try:
        window = windows.get(source._window_key)
    finally:
        source.close()
    assert window is not None
    closed_since = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=v.closed_ticket_lookback_hours)
    after = window.watermark - v.transaction_id_margin
    known = sorted(k for k in window.known if k <= after)
    chunks = [known[i : i + LOOKUP_BATCH] for i in range(0, len(known), LOOKUP_BATCH)]
    reads: dict[str, list[tuple[Any, dict[str, Any]]]] = {
        "full": [(runs_statement(v), {"closed_since": closed_since})],
        "no_change": [
            (latest_id_statement(), {}),
            *((known_tickets_statement(v), {"closed_since": closed_since, "ids": c}) for c in chunks),
            (new_tickets_statement(v), {"closed_since": closed_since, "after": after}),
        ],
    }
    plain = create_engine(url, poolclass=NullPool)
    try:
        return {
            name: min(_explain(plain, statements) for _ in range(repeats))
            for name, statements in reads.items()
        }
    finally:
        plain.dispose()


def _explain(engine: Engine, statements: list[tuple[Any, dict[str, Any]]]) -> float:
    pg = engine.dialect.name == "postgresql"
    total = 0.0
    with engine.connect() as conn:
        for statement, params in statements:
            state = statement.compile(dialect=engine.dialect).construct_expanded_state(params)
            prefix = "EXPLAIN (ANALYZE, FORMAT JSON) " if pg else "ANALYZE FORMAT=JSON "
            row = conn.exec_driver_sql(prefix + state.statement, state.parameters).one()
            if pg:
                total += float(row[0][0]["Execution Time"]) + float(row[0][0]["Planning Time"])
            else:
                plan = json.loads(row[0])
                total += float(plan["query_block"].get("r_total_time_ms", 0.0))
                total += float(plan.get("query_optimization", {}).get("r_total_time_ms", 0.0))
    return total


def _cycles(url: str, stats: Stats, repeats: int) -> dict[str, Any]:
    """Whole no-change sync cycles, a new source per cycle as `serve` runs them."""
    with tempfile.TemporaryDirectory() as tmp:
        state_url = f"sqlite:///{Path(tmp) / 'state.db'}"
        engine = create_db_engine(state_url)
        migrate.upgrade(engine)
        engine.dispose()
        settings = Settings(state=StateSettings(url=state_url), source=_source_settings(url))
        store = StateStore.from_settings(settings.state)

        def one() -> Any:
            service = open_sync(settings, store, _Leader(), _AcceptingMM())  # type: ignore[arg-type]
            try:
                return service.run_cycle()
            finally:
                service.source.close()

        try:
            for _ in range(2):  # binds the open tickets, then settles what MM answered
                one()
            cycles = []
            for _ in range(repeats):
                seconds, delta, summary = measured(stats, one)
                cycles.append(
                    {
                        "seconds": seconds,
                        "rows": lt_rows(delta),
                        "pages": pages(delta),
                        "raw": delta,
                        "started": summary.started,
                        "stopped": summary.stopped,
                    }
                )
        finally:
            store.dispose()
    return _median(cycles)


def _median(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(samples, key=lambda s: s["seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["seconds_all"] = [round(s["seconds"], 4) for s in samples]
    chosen["rows_median"] = statistics.median(s["rows"] for s in samples)
    chosen["rows_max"] = max(s["rows"] for s in samples)
    return chosen


# -- the scenario -----------------------------------------------------------------------------------
def history_load(
    servers: dict[str, str], sizes: tuple[int, ...] = SIZES, repeats: int = 15, rebuild: bool = False
) -> dict[str, Any]:
    """The campaign's `erp-history` scenario: figures per server (name -> admin URL) and size."""
    result: dict[str, Any] = {"sizes": list(sizes), "repeats": repeats, "servers": {}}
    for server, admin_url in servers.items():
        figures: dict[str, Any] = {}
        with mariadb_userstat(admin_url):
            for history in sizes:
                url = ensure_database(admin_url, history, rebuild)
                figures[str(history)] = found = measure(url, history, repeats)
                print(f"  {server} {history:>9,}: {_line(found)}", flush=True)
        result["servers"][server] = {"sizes": figures, "ratios": ratios(figures, sizes)}
    return result


def ratios(figures: dict[str, Any], sizes: tuple[int, ...]) -> dict[str, float]:
    small, large = figures[str(min(sizes))], figures[str(max(sizes))]
    tickets = OPEN + RECENT
    return {
        "rows_large_over_small": large["read"]["rows_median"] / max(1, small["read"]["rows_median"]),
        "read_time_large_over_small": large["read"]["seconds"] / small["read"]["seconds"],
        "server_time_large_over_small": large["server_ms"]["no_change"] / small["server_ms"]["no_change"],
        "cycle_rows_per_ticket": max(f["cycle"]["rows_max"] for f in figures.values()) / tickets,
    }


def _line(f: dict[str, Any]) -> str:
    full, read, cycle = f["full_read"], f["read"], f["cycle"]
    server = f.get("server_ms", {})
    return (
        f"server {server.get('full', 0):.1f} / {server.get('no_change', 0):.1f} ms; "
        f"full read {full['rows']:,} rows {full['pages']:,} pages {full['seconds'] * 1000:.0f} ms; "
        f"no-change read {read['rows_median']:,.0f} rows {read['pages']:,} pages "
        f"{read['seconds'] * 1000:.1f} ms; "
        f"cycle {cycle['rows_median']:,.0f} rows {cycle['seconds'] * 1000:.0f} ms "
        f"({f['runs']} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--servers", nargs="+", choices=("postgresql", "mariadb"), default=["postgresql", "mariadb"]
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true", help="build the history databases again")
    parser.add_argument("--pg-url", default=bench_sources.DEFAULT_PG)
    parser.add_argument("--mariadb-url", default=DEFAULT_MARIADB)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    configure_logging("WARNING", "json")
    urls = {"postgresql": args.pg_url, "mariadb": args.mariadb_url}
    servers = {server: urls[server] for server in args.servers}
    info = machine_info(args.pg_url)
    info["git"] = git_state(("erpsync", "bench"))
    before = load()
    result = history_load(servers, tuple(args.sizes), args.repeats, args.rebuild)
    result.update(machine=info, load_before=before, load_after=load())
    for server, r in result["servers"].items():
        print(f"{server}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
