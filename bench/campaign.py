"""The benchmark campaign: every scenario in a fresh process, erpsync next to a naive baseline,
targets checked, figures written to docs/performance.md.

    uv run python -m bench.campaign                      # full campaign (~20 min), writes the doc
    uv run python -m bench.campaign --quick              # small sizes, a smoke run: prints only
    uv run python -m bench.campaign --only new-runs      # some scenarios: prints only
    uv run python -m bench.campaign --max-load 1.5       # wait for a quiet machine first

Needs the PostgreSQL server the tests use (ERPSYNC_TEST_PG_URL, default postgres@127.0.0.1:5432), and
for `erp-history` the MariaDB server too (ERPSYNC_TEST_MARIADB_URL, default root@127.0.0.1:3306).
Exit status: 0 every target met, 1 a target missed or a scenario failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_sources
from bench.cli_startup import extract_section, keep_section
from bench.machine import ROOT, calibrate, git_state, load, machine_info
from bench.perf_doc import kept_sections, render
from bench.scenario import SCENARIOS
from bench.targets import Check, checks

ORDER = ("nochange-10k", "nochange-100k", "new-runs", "writeback", "csv-ingest", "erp-history")
DOC = ROOT / "docs" / "performance.md"


def wait_for_quiet(max_load: float | None, max_wait: float) -> None:
    if max_load is None:
        return
    deadline = time.monotonic() + max_wait
    while load()[0] > max_load and time.monotonic() < deadline:
        print(f"  load {load()[0]:.2f} > {max_load}: waiting", flush=True)
        time.sleep(15)


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One scenario in a fresh `python -m bench.scenario` process; its output streams through."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "bench.scenario", name, "--out", str(out), "--pg-url", args.pg_url]
        if args.quick:
            command.append("--quick")
        before, speed, began = load(), calibrate(), time.monotonic()
        done = subprocess.run(command, cwd=ROOT, check=False)
        elapsed = time.monotonic() - began
        if done.returncode != 0 or not out.exists():
            return {
                "error": f"scenario exited {done.returncode}",
                "load_before": before,
                "load_after": load(),
            }
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result.update(load_before=before, load_after=load(), calibration_ms=speed, elapsed=elapsed)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes; a smoke run, never written to the doc"
    )
    parser.add_argument("--only", nargs="+", choices=ORDER, help="run these scenarios only (doc not written)")
    parser.add_argument("--pg-url", default=bench_sources.DEFAULT_PG, help="admin URL of a PostgreSQL server")
    parser.add_argument(
        "--max-load", type=float, help="before each scenario, wait until the 1-min load is below this"
    )
    parser.add_argument("--max-wait", type=float, default=600, help="longest wait for --max-load, seconds")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    assert set(ORDER) == set(SCENARIOS)

    names = [n for n in ORDER if not args.only or n in args.only]
    info = machine_info(args.pg_url)
    info["git"] = git_state(("erpsync", "bench"))
    info["calibration_ms"] = [calibrate()]
    print(
        f"erpsync benchmark campaign, {info['date']}: {info['nproc']} CPUs, {info['ram_gb']} GB RAM, "
        f"Python {info['python']}, PostgreSQL {info['postgresql']}, load {load()}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        wait_for_quiet(args.max_load, args.max_wait)
        print(f"\n== {name} (load {load()[0]:.2f})", flush=True)
        results[name] = run_scenario(name, args)
    info["calibration_ms"].append(calibrate())
    print(f"\nCPU calibration (fixed loop, lower is faster): {info['calibration_ms']} ms", flush=True)
    found = checks(results)
    failed = [n for n, r in results.items() if "error" in r]
    print("\n== targets")
    for check in found:
        print(f"  {check.line()}")
    for name in failed:
        print(f"  {name}: FAILED ({results[name]['error']})")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2, default=str))
    if not (args.quick or args.only or args.no_doc):
        old = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        # hand-run sections (below perf_doc's marker) and bench.cli_startup's section are kept
        document = render(info, results, found, quick=args.quick) + kept_sections(old)
        DOC.write_text(keep_section(document, extract_section(old)), encoding="utf-8")
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    missed = [c for c in found if not c.ok]
    return 1 if missed or failed else 0


def verdict(found: list[Check]) -> str:
    return "every target met" if all(c.ok for c in found) else "TARGETS MISSED"


if __name__ == "__main__":
    sys.exit(main())
