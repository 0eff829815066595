"""Write-back over N active runs with MM latency, through bench/bench_writeback.py's own pieces.

The cycle is `run_writeback` in this (fresh) process, as bench_writeback runs it; the baseline is
bench_writeback's one-at-a-time cycle (concurrency 1, one ERP transaction and one state commit per
run) measured on `sample` runs and scaled to N, labelled as an estimate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.bench_writeback import Sim, cycle, fresh, seed


def writeback(
    runs: int, latency_ms: float, concurrency: int = 16, batch_size: int = 500, sample: int = 200
) -> dict[str, Any]:
    latency = latency_ms / 1000
    sim = Sim(in_process=False)
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            run_ids = [f"bench-{n:05d}" for n in range(runs)]
            erp_url, store = fresh(tmp, "main", None, None)
            seed(sim, store, run_ids, concurrency)
            sim.set_latency(latency_ms)
            summary, wall = cycle(sim, store, erp_url, concurrency, batch_size)
            floor = summary.calls * latency / concurrency
            print(
                f"  erpsync: {summary.calls:,} calls, {summary.written:,} written, {wall:.2f} s "
                f"(floor {floor:.2f} s)",
                flush=True,
            )
            store.dispose()
            sample_ids = [f"base-{n:05d}" for n in range(sample)]
            sim.set_latency(None)
            base_erp, base_store = fresh(tmp, "baseline", None, None)
            seed(sim, base_store, sample_ids, concurrency)
            sim.set_latency(latency_ms)
            base, base_wall = cycle(sim, base_store, base_erp, concurrency=1, batch_size=1)
            base_store.dispose()
            estimate = base_wall * runs / max(1, base.calls)
            print(
                f"  one-at-a-time: {base.calls} runs in {base_wall:.2f} s, "
                f"estimated {estimate:.1f} s for {runs:,}",
                flush=True,
            )
    finally:
        sim.close()
    return {
        "runs": runs,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "erpsync": {
            "calls": summary.calls,
            "written": summary.written,
            "failed": summary.failed,
            "wall": wall,
            "floor": floor,
        },
        "baseline": {
            "sample": base.calls,
            "sample_wall": base_wall,
            "wall": estimate,
            "estimated": True,
            "floor": runs * latency,
        },
    }
