"""How long `erpsync --help`, `erpsync status` and `erpsync audit` take to answer, start to exit.

Run: `uv run python -m bench.cli_startup [--runs 15] [--baseline REV] [--max-load 1.5] [--write-doc]`.

Each command runs in a fresh `python -m erpsync` process (what the `erpsync` script runs), against a
migrated SQLite state database with some audit history; `--baseline REV` measures erpsync as it was
at a git revision in the same runs, in turns, for a before/after comparison. Byte code is compiled
first (pip and `uv sync --compile-bytecode` do that at install time; this repository's development
shell sets PYTHONDONTWRITEBYTECODE, which would measure compiling instead). Reported per command:
the best and the median wall time of `--runs` runs, and the median CPU time (user + system) of the
process, which a busy neighbour on a shared CPU disturbs less than wall time.

`--write-doc` puts the figures into docs/performance.md between the `cli-startup` markers; the
campaign (bench/campaign.py) keeps that section when it rewrites the rest of the file.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.machine import ROOT, calibrate, git_state, load, machine_info

COMMANDS: tuple[tuple[str, ...], ...] = (("--help",), ("status",), ("audit",))
TARGET_SECONDS = 0.5
BEGIN, END = "<!-- cli-startup:begin -->", "<!-- cli-startup:end -->"
DOC = ROOT / "docs" / "performance.md"


@dataclass(frozen=True)
class Timing:
    tree: str
    command: str
    best: float
    median: float
    cpu: float

    @property
    def met(self) -> bool:
        return self.median <= TARGET_SECONDS


def _environment(state_url: str, code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(code)  # this tree's erpsync package, ahead of the installed one
    env["ERPSYNC_STATE__URL"] = state_url
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run (CPU: this child's user + system time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _audit_history(state_url: str, rows: int) -> None:
    """Some audit rows, so `audit` prints a table (imports of the output path included)."""
    from erpsync.adapters.state.audit import record_audit  # noqa: PLC0415
    from erpsync.adapters.state.store import StateStore  # noqa: PLC0415
    from erpsync.config import StateSettings  # noqa: PLC0415

    store = StateStore.from_settings(StateSettings(url=state_url))
    try:
        with store.session() as session:
            for i in range(rows):
                record_audit(
                    session,
                    action="start_run",
                    outcome="succeeded",
                    erp_job=f"18084{i:02d}/1",
                    erp_operation="10",
                    erp_machine=f"HAAS-{i % 5}",
                    mm_run_id=f"erp:LT{4700 + i}",
                )
    finally:
        store.dispose()


def _tree_at(revision: str, into: Path) -> Path:
    """erpsync's package as it was at `revision` (git archive), for a before/after comparison."""
    archive = subprocess.run(
        ["git", "archive", revision, "erpsync"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def measure(runs: int, baseline: str | None = None) -> list[Timing]:
    """Every command of every tree `runs` times, taken in turns (a busy moment hits all alike)."""
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        state_url = f"sqlite:///{cwd / 'state.db'}"
        trees = {"this tree": ROOT}
        if baseline:
            trees[baseline] = _tree_at(baseline, Path(tempfile.mkdtemp(dir=tmp)))
        envs = {name: _environment(state_url, code) for name, code in trees.items()}
        _run([sys.executable, "-m", "erpsync", "db", "upgrade"], envs["this tree"], cwd)
        _audit_history(state_url, 50)
        cases = [(name, args) for name in trees for args in COMMANDS]
        argv = {args: [sys.executable, "-m", "erpsync", *args] for args in COMMANDS}
        for name, args in cases * 2:  # byte code written, files in the page cache
            _run(argv[args], envs[name], cwd)
        samples: dict[tuple[str, tuple[str, ...]], list[tuple[float, float]]] = {c: [] for c in cases}
        for _ in range(runs):
            for name, args in cases:
                samples[(name, args)].append(_run(argv[args], envs[name], cwd))
    timings = []
    for (name, args), runs_of in samples.items():
        walls = [wall for wall, _ in runs_of]
        timing = Timing(
            name,
            f"erpsync {' '.join(args)}",
            min(walls),
            statistics.median(walls),
            statistics.median(cpu for _, cpu in runs_of),
        )
        verdict = ("met" if timing.met else "MISSED") if name == "this tree" else "before"
        print(
            f"  {name:<10} {timing.command:<16} best {timing.best:.3f} s, median {timing.median:.3f} s, "
            f"CPU {timing.cpu:.3f} s: {verdict}",
            flush=True,
        )
        timings.append(timing)
    return timings


def section(timings: list[Timing], runs: int, loads: tuple[float, float], speed: float) -> str:
    info = machine_info()
    commit = git_state(("erpsync",))
    ours = [t for t in timings if t.tree == "this tree"]
    before = {t.command: t for t in timings if t.tree != "this tree"}
    lines = [
        BEGIN,
        "## CLI start-up (`cli-startup`)",
        "",
        f"Written by `uv run python -m bench.cli_startup --write-doc` on {info['date']}, commit "
        f"`{commit['commit'][:12]}`{' (uncommitted changes)' if commit['uncommitted'] else ''}; "
        f"{info['nproc']} CPUs, Python {info['python']}; load average {loads[0]:.2f} before, "
        f"{loads[1]:.2f} after; CPU calibration {speed:.0f} ms (see above).",
        "",
        f"`python -m erpsync COMMAND` in a fresh process, {runs} runs of each command taken in turns",
        "after two warm-up runs, byte code compiled (as after an install), state in SQLite with 50",
        f"audit rows. Target: a median of at most {TARGET_SECONDS} s. The CLI imports SQLAlchemy,",
        "pydantic-settings, httpx, structlog and APScheduler only in the commands that use them;",
        "`status` and `audit` need SQLAlchemy Core (not its ORM: erpsync/adapters/state/reads.py) and",
        "the configuration, and set logging (structlog) up only if something logs; `--help` needs",
        "none of them. CPU is the process's own user + system time. On these shared vCPUs both vary",
        "with what the neighbours do (the same command measured 0.5 s to 0.9 s of CPU in one",
        "evening), so the figures before the change are measured in the same runs, in turns with ours.",
        "",
        "| command | best | median | CPU (median) | target | before: median | before: CPU |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for t in ours:
        old = before.get(t.command)
        was = f"{old.median:.3f} s (`{old.tree}`) | {old.cpu:.3f} s" if old else "- | -"
        lines.append(
            f"| `{t.command}` | {t.best:.3f} s | {t.median:.3f} s | {t.cpu:.3f} s | "
            f"{'met' if t.met else 'missed'} | {was} |"
        )
    return "\n".join([*lines, END]) + "\n"


def extract_section(document: str) -> str | None:
    """The cli-startup section of `document`, markers included, if it has one."""
    found = re.search(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", document, flags=re.DOTALL)
    return found.group(0) if found else None


def keep_section(document: str, new_section: str | None) -> str:
    """`document` with its cli-startup section replaced by `new_section`, placed before "Method"."""
    old = extract_section(document)
    body = document.replace(old, "") if old else document
    if not new_section:
        return body
    marker = "\n## Method"
    if marker in body:
        head, _, tail = body.partition(marker)
        return head.rstrip("\n") + "\n\n" + new_section + marker + tail
    return body.rstrip("\n") + "\n\n" + new_section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--max-load", type=float, default=None, help="wait for a quieter machine first")
    parser.add_argument("--max-wait", type=float, default=600)
    parser.add_argument("--write-doc", action="store_true", help="put the figures into docs/performance.md")
    parser.add_argument("--baseline", help="also measure erpsync at this git revision, e.g. main")
    args = parser.parse_args()
    from bench.campaign import wait_for_quiet  # noqa: PLC0415 - the campaign imports this module

    wait_for_quiet(args.max_load, args.max_wait)
    before, speed = load()[0], calibrate()
    print(f"CLI start-up, {args.runs} runs per command (load {before:.2f}, calibration {speed:.0f} ms)")
    timings = measure(args.runs, args.baseline)
    after = load()[0]
    if args.write_doc:
        text = section(timings, args.runs, (before, after), speed)
        DOC.write_text(keep_section(DOC.read_text(encoding="utf-8"), text), encoding="utf-8")
        print(f"wrote the cli-startup section of {DOC.relative_to(ROOT)}")
    return 0 if all(t.met for t in timings if t.tree == "this tree") else 1


if __name__ == "__main__":
    sys.exit(main())
