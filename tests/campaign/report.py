"""docs/reliability.md, rendered from one campaign's figures (the file always holds the latest)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
RESULTS: dict[str, Any] = {}  # filled by the campaign's tests, rendered at the end of the session

INVARIANTS = """- **no run id started twice**: no start answered 409 (a re-send with other fields),
  and no start of a run id after MM stopped it;
- **every ERP run in MM exactly once, right machine**: every open ticket's run is open in MM on the
  ticket's machine, one open run per machine, and MM holds no run erpsync cannot account for;
- **closed in the ERP = closed in MM**: every clocked-out ticket's run is ended in MM, or was never
  started (opened and closed between two cycles);
- **ERP counts = MM counts for settled runs**: for every run MM counted, the ticket's GOOD_QTY /
  BAD_QTY equal MM's good / scrap + nonconform, and erpsync's last written counts agree;
- **every journal action has exactly one outcome**: every action succeeded, with exactly one final
  (succeeded / noop) audit row;
- **no audit row missing**: every count erpsync wrote has its `write_counts` audit row; nothing
  quarantined, no write-back conflict;
- **bad input**: the `sync` process exits 0 with no traceback; every bad row is quarantined with file,
  line, field and reason, an unreadable file is quarantined whole, nothing else is."""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def crash_summary(
    records: list[dict[str, Any]], repeats: int, seconds: float, workers: int
) -> dict[str, Any]:
    trials = [r for r in records if not r["victim"].startswith("final check")]
    converge = [r["converge_seconds"] for r in trials]
    return {
        "trials": len(trials),
        "workers": workers,
        "seconds": seconds,
        "victims": dict(Counter(r["victim"] for r in trials)),
        "killed_alive": sum(r["killed"] for r in trials),
        "left_in_doubt": sum(1 for r in trials if r["left_in_doubt"]),
        "in_doubt_actions": sum(r["left_in_doubt"] for r in trials),
        "erp_ahead": sum(1 for r in trials if r["erp_ahead"]),
        "changes": sum(len(r["changes"]) for r in trials),
        "converge_median": statistics.median(converge) if converge else 0,
        "converge_p95": _pct(converge, 0.95),
        "converge_max": max(converge, default=0),
        "trial_median": statistics.median([r["seconds"] for r in trials]) if trials else 0,
        "repeated_starts": repeats,
        "violations": [
            f"{r['victim']} trial {r['worker']}.{r['index']}: {v}" for r in records for v in r["violations"]
        ],
        "violating_trials": dict(Counter(r["victim"] for r in trials if r["violations"])),
        "victim_trials": dict(Counter(r["victim"] for r in trials)),
        "first_violations": [
            f"trial {r['worker']}.{r['index']} ({r['victim']}): {r['violations'][0]} "
            f"(+{len(r['violations']) - 1} more)"
            for r in records
            if r["violations"]
        ],
    }


def scenario_summary(worlds: list[dict[str, Any]], seconds: float, workers: int) -> dict[str, Any]:
    """Shop-scenario figures per scenario family (step kind) and per state database."""
    trials = [t for w in worlds for t in w["trials"] if t["index"] >= 0 and t["kinds"] != ["final check"]]
    checks = [t for w in worlds for t in w["trials"]]
    families: dict[str, Counter[str]] = {}
    for t in trials:
        for kind in t["kinds"]:
            families.setdefault(kind, Counter()).update(trials=1, violations=int(bool(t["violations"])))
    databases: dict[str, Counter[str]] = {}
    per_trial: dict[str, list[float]] = {}
    for w in worlds:
        db = databases.setdefault(w["world"]["backend"], Counter())
        db.update(worlds=1, history_rows=w["world"]["history_rows"], restarts=w["restarts"])
        for t in w["trials"]:
            db.update(violations=int(bool(t["violations"])))
            if t["index"] < 0 or t["kinds"] == ["final check"]:
                continue
            db.update(trials=1, **{f"fault {t['fault']}": 1}, **t["injected"])
            per_trial.setdefault(w["world"]["backend"], []).append(t["seconds"])
    return {
        "trials": len(trials),
        "worlds": len(worlds),
        "workers": workers,
        "seconds": seconds,
        "steps": sum(len(t["steps"]) for t in trials),
        "by_family": {k: dict(v) for k, v in sorted(families.items())},
        "by_state_db": {k: dict(v) for k, v in sorted(databases.items())},
        "by_policy": dict(Counter(w["world"]["vanished_runs"] for w in worlds)),
        "trial_seconds": {k: statistics.median(v) for k, v in sorted(per_trial.items())},
        "setup_seconds": statistics.median([w["setup_seconds"] for w in worlds]) if worlds else 0,
        "violations": [f"world {t['seed']} trial {t['index']}: {v}" for t in checks for v in t["violations"]],
        "violating_trials": [{"seed": t["seed"], "index": t["index"]} for t in checks if t["violations"]],
    }


def _listed(items: Iterable[str]) -> list[str]:
    """A markdown list followed by a blank line, or nothing at all when there is nothing to list."""
    listed = list(items)
    return [*listed, ""] if listed else []


def _where(info: dict[str, Any]) -> list[str]:
    git = info["git"]
    dirty = f" plus uncommitted changes in {', '.join(git['uncommitted'])}" if git["uncommitted"] else ""
    return [
        "## Where and when",
        "",
        f"- Date: {info['date']}; commit `{git['commit'][:12]}`{dirty}",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, {info['os']}",
        f"- Python {info['python']}, SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}",
        f"- Load average (1 min): {info['load_before'][0]:.2f} at the start, "
        f"{info['load_after'][0]:.2f} at the end; the whole campaign took {info['seconds'] / 60:.1f} min",
        "",
    ]


def _crash(c: dict[str, Any]) -> list[str]:
    victims = ", ".join(f"{n} `{k}`" for k, n in sorted(c["victims"].items()))
    return [
        "## Crash: SIGKILL at a random moment, restart, converge",
        "",
        f"{c['trials']} trials on {c['workers']} workers in {c['seconds'] / 60:.1f} min (median trial "
        f"{c['trial_median']:.1f} s). Victims: {victims}; {c['killed_alive']} were still running when "
        "killed.",
        "",
        "| | |",
        "|---|---:|",
        f"| operator clock-ins / clock-outs | {c['changes']} |",
        "| kills that left journal actions in doubt (intent written, outcome not) | "
        f"{c['left_in_doubt']} trials, {c['in_doubt_actions']} actions |",
        f"| kills between the ERP commit and the state commit of a write-back | {c['erp_ahead']} trials |",
        f"| time to converge after the restart: median / p95 / max | {c['converge_median']:.1f} / "
        f"{c['converge_p95']:.1f} / {c['converge_max']:.1f} s |",
        f"| identical starts repeated to MM (a lost answer retried; MM treats them as no-ops) | "
        f"{c['repeated_starts']} |",
        f"| **trials with an invariant violated** | **{sum(c['violating_trials'].values())}** "
        f"({len(c['violations'])} violations) |",
        "",
        *_listed(
            f"- `{kind}`: {n} of {c['victim_trials'][kind]} trials violated an invariant"
            for kind, n in sorted(c["violating_trials"].items())
        ),
        *_listed(f"- {v}" for v in c["first_violations"][:40]),
    ]


def _faults(mm: dict[str, Any], cuts: dict[str, Any]) -> list[str]:
    injected = ", ".join(f"{k} {n}" for k, n in sorted(mm["injected"].items()))
    proxy = cuts["proxy"]
    mm_v = [v for t in mm["trials"] for v in t["violations"]] + mm["final_violations"]
    cut_v = [v for t in cuts["trials"] for v in t["violations"]] + cuts["final_violations"]
    return [
        "## Faults",
        "",
        f"**MachineMetrics at {mm['rate']:.0%} failures**: {len(mm['trials'])} trials; while armed, "
        f"{sum(mm['injected'].values())} of {mm['armed_calls']} MM calls failed ({injected}). "
        f"Invariant violations: **{len(mm_v)}**.",
        "",
        *_listed(f"- {v}" for v in mm_v[:20]),
        f"**ERP connection cut mid-transaction** (PostgreSQL ERP behind a cutting TCP proxy, p = "
        f"{cuts['cut_probability']} per client message inside a transaction): {len(cuts['trials'])} trials; "
        f"{proxy['connections']} connections, {proxy['cuts']} cut inside a transaction "
        f"({proxy['cuts_after_forwarding']} after the statement was forwarded, so the server may have "
        f"run it, a COMMIT included). Invariant violations: **{len(cut_v)}**.",
        "",
        *_listed(f"- {v}" for v in cut_v[:20]),
    ]


def _bad(b: dict[str, Any]) -> list[str]:
    violations = [f"{r['name']}: {v}" for r in b["results"] for v in r["violations"]]
    generated = ", ".join(f"{name}: {n} kinds" for name, n in b["generated_kinds"].items())
    exits = "0 for every file" if all(r["exit_code"] == 0 for r in b["results"]) else "NON-ZERO for some"
    return [
        "## Bad input",
        "",
        f"{b['files']} CSV files through `erpsync sync`: the {b['corpus_files']} files of the dirty-data "
        f"corpus (tests/fixtures/csv) and generated files with two rows of each malformed kind "
        f"({generated}). {b['bad_rows']} bad rows or unreadable files expected, {b['quarantined']} "
        f"quarantined; `sync` exit status: {exits}. Violations: **{len(violations)}**.",
        "",
        "Generated kinds: " + "; ".join(b["kinds"]) + ".",
        "",
        *_listed(f"- {v}" for v in violations[:30]),
    ]


METHOD = """## Method

Run it: `uv run pytest tests/campaign -m campaign` (about 20 minutes; the default test run
excludes it). It fails when any invariant is violated; it rewrites this file only after a full
campaign (all three parts, at least 200 crash trials). `ERPSYNC_CAMPAIGN_CRASH_TRIALS` /
`ERPSYNC_CAMPAIGN_FAULT_TRIALS` shrink it for a smoke run.

- erpsync always runs as real processes (`python -m erpsync --config X serve | sync | writeback`),
  with sub-second loop intervals and a 1.5 s leader lease set through environment overrides; the
  config is tests/sync_helpers.write_config plus write-back into the VISUAL labor tickets.
- The ERP is a VISUAL schema (tests/sync_helpers.Shop, 6 machines); operators clock in (run or setup
  tickets) and clock out (CLOCK_OUT only: the ticket's quantities are erpsync's to write); MM counts
  parts on every open run (the simulator's counts are set exactly and only grow).
- Crash: the MM simulator answers after 120 ms, 2 connections, so work is in flight when the kill
  lands; the kill is a SIGKILL (no cleanup), the restart is `erpsync serve` (start-up recovery reads
  MM before re-sending anything). A world with a violation is kept for inspection and replaced.
- Faults: MM faults are the simulator's own (error 503, 429 + Retry-After 0.05 s, drop, a 1.5 s
  answer against a 1 s read timeout, apply-then-fail, drop-after-apply), armed 1-2 s per trial while
  the service runs; then disarmed, backed-off retries made due, and convergence awaited. The proxy
  (tests/campaign/pgproxy.py) reads PostgreSQL's ReadyForQuery status to cut only inside
  transactions.
- Invariants, checked after every trial:
"""


def render(info: dict[str, Any], results: dict[str, Any]) -> str:
    lines = [
        "# Reliability",
        "",
        "Written by `uv run pytest tests/campaign -m campaign` from its latest full run; do not edit by",
        "hand, rerun the campaign. What is checked is under [Method](#method).",
        "",
        *_where(info),
        *_crash(results["crash"]),
        *_faults(results["mm_faults"], results["erp_cuts"]),
        *_bad(results["bad_input"]),
        METHOD + INVARIANTS,
        "",
    ]
    return "\n".join(lines)
