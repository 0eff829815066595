"""CSV export trials: consecutive exports into a CSV source, checked after each.

A trial (seed -> `params`): a state database (SQLite, PostgreSQL, MariaDB in turn by seed), a
`vanished_runs` policy, an Infor VISUAL (2 in 3) or Infor LN export, an inbox or a single path,
and `erpsync sync` per file or one `erpsync serve` the files are dropped into. Its 4-6 exports
(tests/campaign/csv_scenarios.py) are dropped one by one; after each, the invariants of
tests/campaign/csv_checks.py. A violating trial's folder (files, archive, quarantine, log, SQLite
state) is kept with a `trial.json`, and `ERPSYNC_CAMPAIGN_CSV_REPLAY=<seed>` runs it again (the
files are drawn from the seed alone). `csv_summary` and `record_results` put the figures into
report.RESULTS["csv_exports"].
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.campaign import report
from tests.campaign.csv_checks import RunLedger, bindings, mm, process, quarantine
from tests.campaign.csv_scenarios import DIALECTS, ExportFile, TrialParams, trial_files
from tests.campaign.csv_world import CsvWorld
from tests.conftest import BACKENDS

REPLAY = "ERPSYNC_CAMPAIGN_CSV_REPLAY={seed} uv run pytest tests/campaign -m campaign -k csv_exports"


def params(seed: int) -> TrialParams:
    """Everything about a trial follows from its seed: consecutive seeds spread the trials evenly
    over the three state databases and both policies."""
    rng = random.Random(f"params/{seed}")
    return TrialParams(
        seed=seed,
        backend=BACKENDS[seed % 3],
        policy=("flag", "stop")[(seed // 3) % 2],
        mode=rng.choice(("inbox", "inbox", "path")),
        runner=rng.choice(("sync", "sync", "sync", "serve")),
        files=rng.randint(4, 6),
        kind=rng.choice(("infor-visual-csv", "infor-visual-csv", "infor-ln-csv")),
    )


def run_trial(seed: int, folder: Path, saved: Path | None = None) -> dict[str, Any]:
    """One trial of the campaign; returns its record (violations included)."""
    p = params(seed)
    return run_files(p, trial_files(p), folder / f"trial{seed}", saved)


def run_files(
    p: TrialParams, files: list[ExportFile], folder: Path, saved: Path | None = None
) -> dict[str, Any]:
    """Drop `files` one by one into a fresh world, checking every invariant after each."""
    began = time.monotonic()
    dialect = DIALECTS[p.kind]
    world = CsvWorld(
        folder, p.backend, p.policy, p.mode, p.runner, kind=p.kind, csv_settings=dialect.settings
    )
    ledger = RunLedger()
    steps: list[dict[str, Any]] = []
    violations: list[str] = []
    try:
        for f in files:
            ledger.before_step(world.sim.runs())
            outcome = world.step(f.name, f.data)
            found = process(outcome, world.secrets)
            found += mm(f, world.sim.runs(), ledger, outcome)
            found += quarantine(f, world.store, outcome)
            found += bindings(f, world.store)
            steps.append(
                {"step": f.step, "file": f.name, "kinds": f.kinds, "changes": f.changes, "bad": f.bad,
                 "exit_code": outcome.exit_code, "notes": f.expect.notes[-1:], "violations": found}
            )  # fmt: skip
            violations += [f"step {f.step} ({f.name}, {', '.join(f.kinds) or 'clean'}): {v}" for v in found]
    finally:
        serve_exit = world.close()
        log = world.log_text()
    if p.runner == "serve" and serve_exit != 0:
        violations.append(f"erpsync serve exited {serve_exit} on SIGTERM")
    if "Traceback" in log:
        violations.append("a traceback in erpsync's log")
    violations += [f"a secret ({s[:4]}...) in erpsync's log" for s in world.secrets if s in log]
    record = {
        **p.__dict__,
        "seconds": time.monotonic() - began,
        "steps": steps,
        "files_dropped": len(files),
        "kinds": dict(Counter(k for f in files for k in f.kinds)),
        "changes": sum(len(f.changes) for f in files),
        "bad_rows": sum(len(f.bad) for f in files),
        "violations": violations,
    }
    if violations and saved is not None:
        keep = saved / folder.name
        shutil.copytree(folder, keep, dirs_exist_ok=True)
        (keep / "trial.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
        (keep / "files").mkdir(exist_ok=True)
        for f in files:
            (keep / "files" / f"{f.step:02d}_{f.name}").write_bytes(f.data)
    shutil.rmtree(folder, ignore_errors=True)
    return record


def csv_summary(trials: list[dict[str, Any]], seconds: float, workers: int) -> dict[str, Any]:
    """The figures for report.RESULTS["csv_exports"]."""
    by_db: dict[str, Counter[str]] = {}
    for t in trials:
        db = by_db.setdefault(t["backend"], Counter())
        db.update(trials=1, files=t["files_dropped"], violating_trials=int(bool(t["violations"])))
        db.update(violations=len(t["violations"]))
    kinds: Counter[str] = Counter()
    for t in trials:
        kinds.update(t["kinds"])
    faulty = sum(1 for t in trials for s in t["steps"] if s["kinds"])
    return {
        "trials": len(trials),
        "files": sum(t["files_dropped"] for t in trials),
        "files_with_faults": faulty,
        "erp_changes": sum(t["changes"] for t in trials),
        "bad_rows": sum(t["bad_rows"] for t in trials),
        "faults": dict(sorted(kinds.items())),
        "by_state_db": {k: dict(v) for k, v in sorted(by_db.items())},
        "by_policy": dict(Counter(t["policy"] for t in trials)),
        "by_mode": dict(Counter(f"{t['mode']}/{t['runner']}" for t in trials)),
        "by_kind": dict(Counter(t["kind"] for t in trials)),
        "seconds": seconds,
        "workers": workers,
        "trial_median_seconds": statistics.median([t["seconds"] for t in trials]) if trials else 0.0,
        "violations": [f"seed {t['seed']} {v}" for t in trials for v in t["violations"]],
        "violating_seeds": [t["seed"] for t in trials if t["violations"]],
        "replay": REPLAY,
    }


def record_results(summary: dict[str, Any]) -> None:
    """The CSV trials' figures, for tests/campaign/report.py to render."""
    report.RESULTS["csv_exports"] = summary
