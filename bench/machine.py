"""Where and when a campaign ran: machine, Python, databases, git commit, load average."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]


def _meminfo_gb() -> float:
    for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.rstrip("\n")


def git_state(paths: tuple[str, ...]) -> dict[str, Any]:
    """HEAD, and the files under `paths` that differ from it (figures then come from uncommitted code)."""
    porcelain = _git("status", "--porcelain", "--", *paths)  # "XY path" per line
    return {
        "commit": _git("rev-parse", "HEAD").strip() or "unknown",
        "uncommitted": [line[3:] for line in porcelain.splitlines() if len(line) > 3],
    }


def postgres_version(url: str) -> str:
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
        engine.dispose()
    except Exception as exc:  # a campaign part may not need PostgreSQL
        return f"unavailable ({type(exc).__name__})"
    return version


def machine_info(pg_url: str | None = None) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "ram_gb": round(_meminfo_gb(), 1),
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(pg_url) if pg_url else None,
    }


def calibrate() -> float:
    """Milliseconds for a fixed pure-Python loop, best of 3: how fast this machine is right now.

    Shared virtual CPUs slow down when neighbours work; this figure next to the results says how
    fast the CPU was during the campaign (lower is faster).
    """
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i * i
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 1)


def load() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)
