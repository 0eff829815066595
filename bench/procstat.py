"""Run a command and report ITS peak RSS, wall time and exit status (used for erpsync CLI runs).

Why a relay process: Linux carries a process's RSS high-water mark into a child it forks (and a
vfork/exec records the parent's peak too), so `ru_maxrss` of a child of a big benchmark process
reports the benchmark's peak, not erpsync's. The command is therefore started by a small relay
(`python -m bench.procstat`), which waits for it and reads `ru_maxrss` of its only child; the relay's
own ~10 MB is the floor of what can be measured.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    """One finished command: exit status, output, wall seconds and peak RSS in MB."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    peak_mb: float
    cpu_seconds: float


def run_measured(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600) -> Measured:
    """Run `args` through the relay; its output is captured, its peak RSS measured on its own."""
    with tempfile.TemporaryDirectory(prefix="erpsync-procstat-") as tmp:
        result = Path(tmp) / "result.json"
        proc = subprocess.run(
            [sys.executable, "-m", "bench.procstat", str(result), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if not result.exists():
            raise RuntimeError(f"relay failed ({proc.returncode}): {proc.stderr[-2000:]}")
        data = json.loads(result.read_text(encoding="utf-8"))
    return Measured(
        data["returncode"], proc.stdout, proc.stderr, data["wall"], data["maxrss_kb"] / 1024, data["cpu"]
    )


def _relay(result: str, args: list[str]) -> int:
    started = time.perf_counter()
    returncode = subprocess.call(args)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(result).write_text(
        json.dumps(
            {
                "returncode": returncode,
                "wall": wall,
                "maxrss_kb": usage.ru_maxrss,
                "cpu": usage.ru_utime + usage.ru_stime,
            }
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(_relay(sys.argv[1], sys.argv[2:]))
