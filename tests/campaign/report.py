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
  line, field and reason, an unreadable file is quarantined whole, nothing else is;
- shop scenarios, against MM's and the ERP's own truth:
  - **the multi-ticket rule**: every MM run is the oracle's (machine, job, operation, phase, start
    and end within 1 s); MM holds no run the rule does not explain; no two runs on a machine share
    any time; no run open in MM that the ERP closed;
  - **no run id started twice**, and no start answered 409;
  - **every `succeeded` start or stop audit row holds in MM** (the run exists, is in production
    after a production start, is ended after a stop), but a run MM itself lost;
  - **counts**: every ticket holds the sum of its runs' MM counts and erpsync's last written counts
    are MM's; a lost run's counts stay in the sum; implausible counts never reach the ERP and are
    quarantined with MM's values (resolved once MM answers plausible ones);
  - **MM faults**: a run MM lost or a person ended there has exactly one `missing_in_mm` /
    `ended_in_mm` row and its binding as `sync.heal_drift` says (restart: the ticket's next
    generation starts no earlier than that end; flag: `failed`, nothing restarted); an action MM
    refused or erpsync gave up is quarantined and deviates only as the docs allow (a switch left in
    setup, a run whose stop MM refused left open, a start MM confirms it lacks not in MM); a switch
    answered 409 is quarantined;
  - **every journal action has exactly one final audit row**; every bad cell is quarantined with its
    ticket and field and nothing else is; no secret in erpsync's output or stored rows."""


def _quantile(values: list[float], q: float) -> float:
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
        "converge_p95": _quantile(converge, 0.95),
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


MM_STATE_FAULTS = ("lose_run", "end_run", "implausible")  # events on MM's side, not failed calls


def mm_family(trial: dict[str, Any]) -> str:
    """The MM-fault family of a trial (`sim_long:error503:all:long` -> `sim_long`)."""
    return str(trial.get("mm_fault", "none")).split(":", 1)[0]


def _mm_figures(trial: dict[str, Any]) -> Counter[str]:
    """One trial's MM figures: calls (all, while armed), failed calls and state faults injected."""
    injected = sum(trial.get("mm_injected", {}).values())
    state = mm_family(trial) in MM_STATE_FAULTS
    return Counter(
        mm_calls=trial.get("mm_calls", 0),
        mm_calls_armed=trial.get("mm_calls_armed", 0),
        mm_failed_calls=0 if state else injected,
        mm_state_faults=injected if state else 0,
    )


def rates(figures: dict[str, Any]) -> tuple[float, float]:
    """(overall, while armed): failed MM calls over every MM call, and over the calls made while
    call faults were armed (the "33 %" of the old headline was the second)."""
    failed = figures.get("mm_failed_calls", 0)
    return failed / max(1, figures.get("mm_calls", 0)), failed / max(1, figures.get("mm_calls_armed", 0))


def scenario_summary(worlds: list[dict[str, Any]], seconds: float, workers: int) -> dict[str, Any]:
    """Shop-scenario figures per scenario family (ERP step kind), per MM-fault family and per state
    database: trials, MM calls and faults injected, violating trials."""
    trials = [t for w in worlds for t in w["trials"] if t["index"] >= 0 and t["kinds"] != ["final check"]]
    checks = [t for w in worlds for t in w["trials"]]
    families: dict[str, Counter[str]] = {}
    mm_families: dict[str, Counter[str]] = {}
    for t in trials:
        violated = int(bool(t["violations"]))
        for kind in t["kinds"]:
            families.setdefault(kind, Counter()).update(trials=1, violations=violated)
        mm_families.setdefault(mm_family(t), Counter()).update(
            trials=1, violations=violated, **_mm_figures(t)
        )
    databases: dict[str, Counter[str]] = {}
    per_trial: dict[str, list[float]] = {}
    policies: Counter[str] = Counter()
    for w in worlds:
        db = databases.setdefault(w["world"]["backend"], Counter())
        db.update(worlds=1, history_rows=w["world"]["history_rows"], restarts=w["restarts"])
        policies[f"vanished_runs={w['world']['vanished_runs']}, heal_drift={w['world']['heal_drift']}"] += 1
        for t in w["trials"]:
            db.update(violations=int(bool(t["violations"])))
            if t["index"] < 0 or t["kinds"] == ["final check"]:
                continue
            db.update(trials=1, **{f"fault {t['fault']}": 1}, **t["injected"])
            db.update(_mm_figures(t))
            per_trial.setdefault(w["world"]["backend"], []).append(t["seconds"])
    mm_total: Counter[str] = Counter()
    for t in trials:
        mm_total.update(_mm_figures(t))
    return {
        "trials": len(trials),
        "worlds": len(worlds),
        "workers": workers,
        "seconds": seconds,
        "steps": sum(len(t["steps"]) for t in trials),
        "by_family": {k: dict(v) for k, v in sorted(families.items())},
        "by_mm_family": {k: dict(v) for k, v in sorted(mm_families.items())},
        "by_state_db": {k: dict(v) for k, v in sorted(databases.items())},
        "by_policy": dict(sorted(policies.items())),
        "mm": dict(mm_total),
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
    failed = sum(mm["injected"].values())
    overall = f"{failed / max(1, mm['calls']):.0%} of all {mm['calls']} calls; " if "calls" in mm else ""
    return [
        "## Faults",
        "",
        f"**MachineMetrics failing {mm['rate']:.0%} of the calls made while faults were armed**: "
        f"{len(mm['trials'])} trials; {failed} of the {mm['armed_calls']} MM calls made while armed failed "
        f"({overall}{injected}). Invariant violations: **{len(mm_v)}**.",
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


def _pct(n: float) -> str:
    return f"{n:.1%}"


def _scenarios(sc: dict[str, Any]) -> list[str]:
    mm = sc["mm"]
    overall, armed = rates(mm)
    times = ", ".join(f"{db} {t:.1f} s" for db, t in sc["trial_seconds"].items())
    lines = [
        "## Shop scenarios with MachineMetrics faults",
        "",
        f"{sc['trials']} trials in {sc['worlds']} worlds on {sc['workers']} workers in "
        f"{sc['seconds'] / 60:.1f} min ({sc['steps']} ERP steps; median trial {times}; median world "
        f"set-up {sc['setup_seconds']:.1f} s). Worlds: "
        + "; ".join(f"{n} with {policy}" for policy, n in sc["by_policy"].items())
        + ".",
        "",
        f"MM calls: {mm.get('mm_calls', 0)}, of which {mm.get('mm_calls_armed', 0)} while call faults "
        f"were armed; {mm.get('mm_failed_calls', 0)} failed by injection: **{_pct(overall)} of all "
        f"calls, {_pct(armed)} of the calls made while armed**. MM-side events: "
        f"{mm.get('mm_state_faults', 0)} (runs lost or ended by hand in MM, implausible counts). "
        f"**Trials with an invariant violated: {len(sc['violating_trials'])}** (target 0).",
        "",
        "Per state database:",
        "",
        "| state database | worlds | trials | kills | state connection cuts | MM calls | failed by injection "
        "(overall / while armed) | MM-side events | violating trials |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for db, f in sc["by_state_db"].items():
        o, a = rates(f)
        lines.append(
            f"| {db} | {f.get('worlds', 0)} | {f.get('trials', 0)} | {f.get('kills', 0)} | "
            f"{f.get('state_cuts', 0)} | {f.get('mm_calls', 0)} | {f.get('mm_failed_calls', 0)} "
            f"({_pct(o)} / {_pct(a)}) | {f.get('mm_state_faults', 0)} | **{f.get('violations', 0)}** |"
        )
    lines += [
        "",
        "Per MM-fault family (tests/campaign/mm_faults.py; one family per trial):",
        "",
        "| MM fault | trials | faults injected | MM calls (while armed) | rate overall / while armed | "
        "violating trials |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for family, f in sc["by_mm_family"].items():
        o, a = rates(f)
        injected = f.get("mm_failed_calls", 0) + f.get("mm_state_faults", 0)
        rate = "MM-side events" if family in MM_STATE_FAULTS else f"{_pct(o)} / {_pct(a)}"
        lines.append(
            f"| `{family}` | {f.get('trials', 0)} | {injected} | {f.get('mm_calls', 0)} "
            f"({f.get('mm_calls_armed', 0)}) | {rate} | **{f.get('violations', 0)}** |"
        )
    lines += [
        "",
        "Per ERP scenario family (tests/campaign/scenarios.py; a trial has one to several):",
        "",
        "| ERP step | trials | violating trials |",
        "|---|---:|---:|",
        *(f"| `{k}` | {f['trials']} | **{f['violations']}** |" for k, f in sc["by_family"].items()),
        "",
        *_listed(f"- {v}" for v in sc["violations"][:40]),
    ]
    return lines


EXPECTED_MINUTES = 27  # the full campaign on this 2-CPU machine, from smoke runs' per-trial figures

METHOD = f"""## Method

Run it: `uv run pytest tests/campaign -m campaign` (about {EXPECTED_MINUTES} minutes on 2 CPUs; the
default test run excludes it). It fails when any invariant is violated, and saves each violating
scenario trial with its world seed for replay (`ERPSYNC_CAMPAIGN_REPLAY=<seed>`); it rewrites this
file only after a full campaign (every part, at least the default number of crash and scenario
trials). `ERPSYNC_CAMPAIGN_CRASH_TRIALS`, `ERPSYNC_CAMPAIGN_FAULT_TRIALS`,
`ERPSYNC_CAMPAIGN_SCENARIO_TRIALS` and `ERPSYNC_CAMPAIGN_SCENARIO_PER_WORLD` shrink it for a smoke
run. The same run replays the fixed corpus (tests/campaign/test_corpus.py, test_findings.py): one
deterministic batch sequence per defect class of the MM-answers and shop-floor issues and per
finding in tests/campaign/FINDINGS.md, judged by the same oracle and invariants.

- erpsync always runs as real processes (`python -m erpsync --config X serve | sync | writeback`),
  with sub-second loop intervals and a 1.5 s leader lease set through environment overrides; the
  config is tests/sync_helpers.write_config plus write-back into the VISUAL labor tickets.
- Crash, MM faults, ERP cuts: the ERP is a VISUAL schema (tests/sync_helpers.Shop, 6 machines);
  operators clock in (run or setup tickets) and clock out (CLOCK_OUT only: the ticket's quantities
  are erpsync's to write); MM counts parts on every open run (set exactly, only growing). Crash: the
  MM simulator answers after 120 ms, 2 connections, so work is in flight when the kill lands; the
  kill is a SIGKILL, the restart is `erpsync serve`. MM faults: the simulator's own (503, 429 +
  Retry-After, drops, a 1.5 s answer against a 1 s read timeout, apply-then-fail,
  drop-after-apply), armed 1-2 s per trial; ERP cuts: a proxy (tests/campaign/pgproxy.py) that cuts
  PostgreSQL connections inside transactions.
- Shop scenarios (tests/campaign/scenario_world.py, scenarios.py): each world is a VISUAL shop with
  20,000-100,000 closed tickets of history, erpsync's state on SQLite, PostgreSQL or MariaDB (a
  password-protected user; servers behind a connection-cutting proxy), `sync.vanished_runs`
  flag/stop and `sync.heal_drift` restart/flag spread over the worlds, `sync.max_action_attempts =
  3`, `mm.retry_deadline_seconds = 3`. A trial: the world's MM fault armed; one ERP batch of crews,
  handovers, other operations, late and backdated clock-ins and clock-outs, reopened, edited,
  rerouted and deleted tickets and poisoned cells (or 2-3 batches faster than erpsync's cycle); MM
  counts parts; a process fault (none, a SIGKILL of `serve`, or the state connection cut); the MM
  fault disarmed, retries made due, convergence awaited (25 s at most). An independent oracle
  (tests/campaign/oracle.py, written from docs/architecture.md) says what MM must show.
- MM faults in scenario trials (tests/campaign/mm_faults.py), one family per trial, through the
  simulator and a misbehaving proxy in front of it (tests/mm_proxy.py): today's faults in short
  (1-2 s) and long windows (kept armed, retries made due, until every action succeeded or was given
  up after reading MM), HTML 200s, 200s of the wrong shape, a redirect, ghost starts (MM applied,
  HTML answered), MM's or a gateway's 404 and 409 to stops and to the setup -> production switch
  (instead of MM or after it applied the call), answers trickled a byte at a time, runs lost or
  ended by hand in MM, implausible counts (10^30 parts, more good parts than parts). The failure
  rate is given over every MM call and over the calls made while faults were armed.
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
        *_scenarios(results["scenarios"]),
        METHOD + INVARIANTS,
        "",
    ]
    return "\n".join(lines)
