"""docs/performance.md, rendered from one campaign's figures (the file always holds the latest)."""

from __future__ import annotations

from typing import Any

from bench.targets import Check

HEADER = """# Performance

Written by `uv run python -m bench.campaign` from the figures of its latest full run; do not edit
by hand, rerun the campaign. How each figure is measured is under [Method](#method).
"""


def _s(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds < 100 else f"{seconds:,.0f} s"


def _load(r: dict[str, Any]) -> str:
    before, after = r.get("load_before"), r.get("load_after")
    text = f"{before[0]:.2f} before, {after[0]:.2f} after" if before and after else "n/a"
    if r.get("calibration_ms"):
        text += f"; CPU calibration {r['calibration_ms']:.0f} ms"
    return text


def _machine(info: dict[str, Any]) -> list[str]:
    git = info["git"]
    calibration = " / ".join(f"{x:.0f}" for x in info["calibration_ms"])
    dirty = f" plus uncommitted changes in {', '.join(git['uncommitted'])}" if git["uncommitted"] else ""
    return [
        "## Where and when",
        "",
        f"- Date: {info['date']}; commit `{git['commit'][:12]}`{dirty}",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, {info['os']}",
        f"- Python {info['python']}, SQLite {info['sqlite']} (erpsync state), "
        f"PostgreSQL {info['postgresql']} (ERP)",
        "- Load average (1 min) and CPU calibration (a fixed pure-Python loop, best of 3; lower is",
        "  faster) are given per scenario: the vCPUs of this VM are shared, and the same work took up",
        f"  to 2x longer at busy moments. Calibration at the start / end of the campaign: {calibration} ms.",
        "",
    ]


def _targets(found: list[Check], results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Targets", "", "| Target | Measured | Limit | |", "|---|---:|---:|---|"]
    for c in found:
        lines.append(
            f"| {c.what} | {c.value:,.2f} {c.unit} | {c.op} {c.limit:,.2f} {c.unit} | "
            f"{'met' if c.ok else '**missed**'} |"
        )
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | scenario failed: {r['error']} | | **failed** |")
    return [*lines, ""]


def _no_change(name: str, r: dict[str, Any]) -> list[str]:
    e, b, setup = r["erpsync"], r["baseline"], r["setup"]
    lines = [
        f"### No-change sync over {r['runs']:,} ERP runs (`{name}`)",
        "",
        f"{r['runs']:,} open labor tickets, each on its own machine, all already bound (set-up: erpsync's",
        f"own cycle with MM answered in-process bound them in {_s(setup['seconds'])}), then `erpsync sync`",
        "with nothing to do.",
        f"erpsync figures are the median of {len(e['cycle_seconds_all'])} runs (all cycle times: "
        f"{', '.join(f'{x:.2f}' for x in e['cycle_seconds_all'])} s). Load: {_load(r)}.",
        "",
        "| | erpsync | naive baseline | baseline / erpsync |",
        "|---|---:|---:|---:|",
        f"| MM API calls | {e['calls']:,} | {b['calls']:,} | |",
        f"| cycle time | {_s(e['cycle_seconds'])} | {_s(b['wall'])} | "
        f"{b['wall'] / e['cycle_seconds']:,.1f}x |",
        f"| process wall time (start-up included) | {_s(e['wall'])} | | |",
        f"| peak RSS | {e['peak_mb']:.0f} MB | | |",
        "",
    ]
    parts = r.get("breakdown")
    if parts:
        lines += [
            "Where the time goes (each part timed alone in-process; in the cycle the ERP read and the",
            "bindings load overlap):",
            "",
            *[f"- {part}: {_s(seconds)}" for part, seconds in parts.items()],
            "",
        ]
    return lines


def _new_runs(r: dict[str, Any]) -> list[str]:
    e, b = r["erpsync"], r["baseline"]
    lines = [
        f"### {r['runs']:,} new runs to start, {r['latency_ms']:.0f} ms per MM call (`new-runs`)",
        "",
        f"A fresh state database and {r['runs']:,} open tickets on {r['runs']:,} machines: one sync",
        "starts them all.",
        f"Floor = calls x latency / concurrency ({r['concurrency']}) for erpsync, calls x latency for a",
        f"one-at-a-time loop. erpsync: median of {len(e['cycle_seconds_all'])} runs "
        f"({', '.join(f'{x:.2f}' for x in e['cycle_seconds_all'])} s). Load: {_load(r)}.",
        "",
        "| | erpsync | naive baseline (one at a time) |",
        "|---|---:|---:|",
        f"| MM API calls | {e['calls']:,} | {b['calls']:,} |",
        f"| cycle time | {_s(e['cycle_seconds'])} | {_s(b['wall'])} |",
        f"| floor | {_s(e['floor'])} | {_s(b['floor'])} |",
        f"| time / floor | {e['cycle_seconds'] / e['floor']:.2f}x | {b['wall'] / b['floor']:.2f}x |",
        f"| process wall time (start-up included) | {_s(e['wall'])} | |",
        f"| peak RSS | {e['peak_mb']:.0f} MB | |",
        "",
        f"erpsync is {b['wall'] / e['cycle_seconds']:,.1f}x faster than the one-at-a-time loop.",
        "",
    ]
    if e.get("cpu_seconds"):
        per_call = e["cpu_seconds"] / max(1, e["calls"]) * 1000
        lines += [
            f"The erpsync process used {e['cpu_seconds']:.1f} s of CPU ({per_call:.1f} ms per MM call,",
            "start-up included). Its 16 senders share one interpreter lock and each call costs CPU in the",
            "HTTP client, the journal and the audit, so the senders wait for one another: that is most of",
            "the time above the floor.",
            "",
        ]
    return lines


def _writeback(r: dict[str, Any]) -> list[str]:
    e, b = r["erpsync"], r["baseline"]
    return [
        f"### Write-back over {r['runs']:,} active runs, {r['latency_ms']:.0f} ms per MM read (`writeback`)",
        "",
        f"bench/bench_writeback.py's cycle: MM reads at concurrency {r['concurrency']}, ERP (staging",
        "table, SQLite) written in batches. The one-at-a-time",
        f"figure is bench_writeback's baseline measured on {b['sample']} runs ({_s(b['sample_wall'])}) and",
        f"scaled to {r['runs']:,}: an estimate. Load: {_load(r)}.",
        "",
        "| | erpsync | one at a time (estimated) |",
        "|---|---:|---:|",
        f"| MM API calls | {e['calls']:,} | {r['runs']:,} |",
        f"| counts written | {e['written']:,} | |",
        f"| cycle time | {_s(e['wall'])} | {_s(b['wall'])} |",
        f"| floor | {_s(e['floor'])} | {_s(b['floor'])} |",
        f"| time / floor | {e['wall'] / e['floor']:.2f}x | {b['wall'] / b['floor']:.2f}x |",
        f"| peak RSS (scenario process) | {r['harness_peak_mb']:.0f} MB | |",
        "",
    ]


def _csv(r: dict[str, Any]) -> list[str]:
    e, b = r["erpsync"], r["baseline"]
    marks = ", ".join(
        f"{int(k) // 1000}k rows: {v:.0f} MB" for k, v in sorted(e["marks"].items(), key=lambda i: int(i[0]))
    )
    return [
        f"### CSV ingest of a {r['rows']:,}-row Infor VISUAL export (`csv-ingest`)",
        "",
        f"A {r['file_mb']:.1f} MB operations export read by the `infor-visual-csv` source (mapping, units,",
        "time zones, validation) in a fresh process, against a naive `list(csv.DictReader(...))`",
        f"(parsing only, nothing checked). Load: {_load(r)}.",
        "",
        "| | erpsync | naive loader |",
        "|---|---:|---:|",
        f"| rows/s | {e['rows_per_s']:,.0f} | {b['rows_per_s']:,.0f} |",
        f"| time | {_s(e['seconds'])} | {_s(b['seconds'])} |",
        f"| peak RSS | {e['peak_mb']:.0f} MB | {b['peak_mb']:.0f} MB |",
        "",
        f"RSS while reading: start {e['baseline_mb']:.0f} MB; {marks} (flat: the file is streamed).",
        "",
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else _s(seconds)


PAGES = {
    "postgresql": "LABOR_TICKET heap + index pages, hit or read (`pg_statio_user_tables`)",
    "mariadb": "`Innodb_buffer_pool_read_requests`, server-wide: every table of the read (the joins "
    "too) and anything else the server ran meanwhile",
}
ROWS = {
    "postgresql": "`seq_tup_read + idx_tup_fetch` of LABOR_TICKET (`pg_stat_user_tables`)",
    "mariadb": "`ROWS_READ` of LABOR_TICKET (`information_schema.TABLE_STATISTICS`, `userstat` on "
    "for the run)",
}


def _history(r: dict[str, Any]) -> list[str]:
    repeats = r["repeats"]
    lines = [
        "### ERP load against history (`erp-history`)",
        "",
        "bench/history_bench.py: VISUAL-shaped databases with only the primary keys VISUAL ships (no",
        "index on CLOCK_OUT), 300 open tickets on 100 machines and 600 closed within the 72 h lookback,",
        "over a closed history of each size. Each read and cycle runs as `erpsync serve`'s sync job",
        "runs it (a new source per cycle, closed after it); figures come from the servers' own",
        "statistics around it. The *full read* is what every cycle cost before issue 18 and is now the",
        "start-up / daily safety net; the *no-change read* is `read_runs` between full reads (median of",
        f"{repeats}, wall time including the connection and mapping 900 runs; *server*: the statements'",
        "execution time by `EXPLAIN ANALYZE` / MariaDB `ANALYZE FORMAT=JSON`, best of 5, same parameters);",
        f"the *cycle* is the whole no-change `SyncService.run_cycle` (median of {repeats}; state in SQLite,",
        "MM answered in-process).",
        f"Load: {_load(r)}.",
        "",
    ]
    for server, s in r["servers"].items():
        lines += [
            f"**{server}**. Rows: {ROWS.get(server, 'rows read')}; pages: {PAGES.get(server, 'pages')}.",
            "",
            "| closed history | full read: rows | pages | server | time | no-change read: rows | pages "
            "| server | time | no-change cycle: rows | time |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size, f in sorted(s["sizes"].items(), key=lambda i: int(i[0])):
            full, read, cycle, server_ms = f["full_read"], f["read"], f["cycle"], f["server_ms"]
            lines.append(
                f"| {int(size):,} | {full['rows']:,} | {full['pages']:,} | {server_ms['full']:,.1f} ms "
                f"| {_ms(full['seconds'])} | {read['rows_median']:,.0f} | {read['pages']:,} "
                f"| {server_ms['no_change']:,.1f} ms | {_ms(read['seconds'])} "
                f"| {cycle['rows_median']:,.0f} | {_ms(cycle['seconds'])} |"
            )
        ratios = s["ratios"]
        largest = s["sizes"][str(max(int(k) for k in s["sizes"]))]
        handler = {
            part: {k: v for k, v in largest[part]["raw"].items() if k.startswith("Handler_read") and v}
            for part in ("full_read", "read")
        }
        if handler["read"]:
            lines += [
                "",
                f"`Handler_read_*` (server-wide) at {int(max(s['sizes'], key=int)):,}: full read "
                + ", ".join(f"{k[13:]} {v:,}" for k, v in handler["full_read"].items())
                + "; no-change read "
                + ", ".join(f"{k[13:]} {v:,}" for k, v in handler["read"].items())
                + ".",
            ]
        lines += [
            "",
            f"Largest / smallest history: rows read {ratios['rows_large_over_small']:.2f}x, runs-read "
            f"time {ratios['read_time_large_over_small']:.2f}x, its server time "
            f"{ratios['server_time_large_over_small']:.2f}x; most LABOR_TICKET rows one cycle read: "
            f"{ratios['cycle_rows_per_ticket']:.2f} per open or recent ticket.",
            "",
        ]
    return lines


METHOD = """## Method

Run it: `uv run python -m bench.campaign` (all scenarios, about 20 minutes, most of it the naive
baselines; exit status 1 when a target is missed). `--quick` runs small sizes as a smoke test and
never writes this file; `--max-load 1.5` waits for a quiet machine before each scenario.

- Every scenario runs in a fresh `python -m bench.scenario NAME` process, so memory never carries
  over from one scenario to the next.
- MM is the simulator (`erpsync.adapters.mm.simulator`) in a process of its own, on loopback, with
  latency injected as a fault where a scenario says so. The client's rate limit
  (`mm.rate_limit_per_second`, default 50) is raised out of the way so the floor depends on latency
  and concurrency only (`mm.max_concurrency` = 16, the default); with the default limit, 2,000
  starts take at least 40 s by design.
- Sync scenarios run the real CLI, `python -m erpsync --config X sync`, against a VISUAL schema in
  its own PostgreSQL database (bench/bench_sources.py builds it: one work order, operation and open
  labor ticket per run, each ticket on its own machine since MM keeps one open run per machine),
  with erpsync's state in an embedded SQLite file (the default deployment). *Cycle time* is the
  duration erpsync records for the cycle (`erpsync_cycle.summary.seconds`, what `erpsync serve`
  spends per cycle); *process wall time* adds interpreter start-up and imports. Targets are
  checked on the cycle time.
- Peak RSS of erpsync is the `ru_maxrss` of the CLI process itself, read by a small relay process
  (bench/procstat.py): Linux carries a parent's peak into a forked child, so measuring from the
  benchmark process itself would report the benchmark's memory. The CSV reader's peak is its
  process's VmHWM; the write-back figure is that of its whole scenario process.
- Naive baseline (bench/naive.py): each cycle, one SQL query for the open tickets, then one start
  per open ticket, one at a time, with httpx keep-alive. MM treats an identical repeated start as a
  no-op, so this is the cheapest loop that keeps MM right without state of its own (a GET before
  each start would cost two calls per new run). It has its own simulator, since MM keeps one open
  run per machine; for no-change, its previous cycle is run first (unmeasured, concurrently).
- Write-back and CSV reuse bench/bench_writeback.py and bench/bench_sources.py (each can also be
  run alone).
- `erp-history` is bench/history_bench.py (also runnable alone, `--sizes`, `--servers`): its
  databases are built once per server and size with INSERT ... SELECT (generate_series, MariaDB's
  seq_1_to_N) and kept for the next run (`--rebuild` builds them again); the 900 open / recent
  tickets are refreshed relative to the current time on every run.
"""


# Sections after this line come from benchmarks run on their own (bench/state_history.py,
# bench/soak.py: too long for the campaign); a campaign run keeps them as they are.
KEPT_MARKER = "<!-- hand-run benchmarks below: kept by bench.campaign -->"


def kept_sections(text: str) -> str:
    """The hand-run sections of an existing docs/performance.md (marker included), or ""."""
    at = text.find(KEPT_MARKER)
    return "\n" + text[at:] if at >= 0 else ""


def render(
    info: dict[str, Any], results: dict[str, dict[str, Any]], found: list[Check], *, quick: bool
) -> str:
    lines = [HEADER, *_machine(info), *_targets(found, results), "## Figures", ""]
    sections = {
        "nochange-10k": lambda r: _no_change("nochange-10k", r),
        "nochange-100k": lambda r: _no_change("nochange-100k", r),
        "new-runs": _new_runs,
        "writeback": _writeback,
        "csv-ingest": _csv,
        "erp-history": _history,
    }
    for name, section in sections.items():
        r = results.get(name)
        if r and "error" not in r:
            lines += section(r)
    lines.append(METHOD)
    return "\n".join(lines)
