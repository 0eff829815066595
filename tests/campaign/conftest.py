"""The campaign's session plumbing: figures printed at the end, docs/reliability.md written after a
full run. Nothing here runs in the default test run (the tests are marked `campaign`)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bench.machine import git_state, load, machine_info
from tests.campaign import report
from tests.conftest import PG_ADMIN_URL

FULL_CRASH_TRIALS = 100  # test_reliability's defaults: a smaller run leaves the doc alone
FULL_SCENARIO_TRIALS = 240
_STARTED: dict[str, Any] = {"load": load(), "at": time.monotonic()}  # this conftest's import


def pytest_sessionstart(session: pytest.Session) -> None:
    _STARTED.update(load=load(), at=time.monotonic())


def _complete() -> bool:
    results = report.RESULTS
    return (
        {"crash", "mm_faults", "erp_cuts", "bad_input", "scenarios"} <= set(results)
        and results["crash"]["trials"] >= FULL_CRASH_TRIALS
        and results["scenarios"]["trials"] >= FULL_SCENARIO_TRIALS
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    results = report.RESULTS
    if not results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability campaign")
    if "crash" in results:
        c = results["crash"]
        write(
            f"crash: {c['trials']} trials ({c['killed_alive']} kills of a running process, "
            f"{c['left_in_doubt']} left actions in doubt, {c['erp_ahead']} between ERP and state commit), "
            "converge median "
            f"{c['converge_median']:.1f} s, max {c['converge_max']:.1f} s; violations {len(c['violations'])}"
        )
    if "mm_faults" in results:
        m = results["mm_faults"]
        write(
            f"MM faults: {len(m['trials'])} trials, {sum(m['injected'].values())} of {m['armed_calls']} "
            f"calls failed ({m['rate']:.0%}): {m['injected']}"
        )
    if "erp_cuts" in results:
        e = results["erp_cuts"]
        write(f"ERP cuts: {len(e['trials'])} trials, proxy {e['proxy']}")
    if "bad_input" in results:
        b = results["bad_input"]
        write(
            f"bad input: {b['files']} files, {len(b['kinds'])} generated kinds, {b['bad_rows']} bad "
            f"rows/files, {b['quarantined']} quarantined"
        )
    if "scenarios" in results:
        s = results["scenarios"]
        write(
            f"shop scenarios: {s['trials']} trials in {s['worlds']} worlds, {s['seconds'] / 60:.1f} min on "
            f"{s['workers']} workers; median trial {s['trial_seconds']} s, world set-up "
            f"{s['setup_seconds']:.1f} s; violations {len(s['violations'])}"
        )
        overall, armed = report.rates(s["mm"])
        write(
            f"  MM: {s['mm'].get('mm_failed_calls', 0)} failed calls of {s['mm'].get('mm_calls', 0)} "
            f"({overall:.1%} overall, {armed:.1%} of the {s['mm'].get('mm_calls_armed', 0)} while armed), "
            f"{s['mm'].get('mm_state_faults', 0)} MM-side events"
        )
        for db, figures in s["by_state_db"].items():
            write(f"  state on {db}: {figures}")
        for family, figures in s["by_mm_family"].items():
            write(f"  MM fault {family}: {figures}")
        for family, figures in s["by_family"].items():
            write(f"  {family}: {figures}")
    if _complete():
        write(f"wrote {report.DOC}")
    else:
        write(
            "docs/reliability.md not written: a partial campaign (all parts, >= "
            f"{FULL_CRASH_TRIALS} crash and >= {FULL_SCENARIO_TRIALS} scenario trials needed)"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _complete():
        return
    info = machine_info(PG_ADMIN_URL)
    info["git"] = git_state(("erpsync", "tests/campaign"))
    info["load_before"] = _STARTED["load"]
    info["load_after"] = load()
    info["seconds"] = time.monotonic() - _STARTED["at"]
    report.DOC.write_text(report.render(info, report.RESULTS), encoding="utf-8")
