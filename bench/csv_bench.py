"""CSV ingest of a 100,000-row Infor VISUAL export: erpsync's CSV source vs a naive loader.

erpsync's side is bench/bench_sources.py's reader (a fresh spawned process; RSS sampled at 10k, 50k
and 100k runs, peak from VmHWM). The baseline (bench/naive_csv.py) loads the file the way a simple
script would, `list(csv.DictReader(...))`: no mapping, no validation, everything in memory.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_sources import build_csv, run_measure
from bench.procstat import run_measured


def csv_ingest(rows: int, batch_size: int = 5000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = build_csv(Path(tmp), rows)
        size_mb = path.stat().st_size / 1e6
        print(f"  wrote a {rows:,}-row export ({size_mb:.1f} MB)", flush=True)
        ours = run_measure("csv", str(path), batch_size)
        ours["rows_per_s"] = ours["rows_read"] / ours["seconds"]
        ours["marks"] = {str(k): v for k, v in ours["marks"].items()}
        print(
            f"  erpsync: {ours['rows_read']:,} rows in {ours['seconds']:.2f} s "
            f"({ours['rows_per_s']:,.0f} rows/s), peak {ours['peak_mb']:.0f} MB",
            flush=True,
        )
        naive = run_measured([sys.executable, "-m", "bench.naive_csv", str(path)])
        if naive.returncode != 0:
            raise RuntimeError(f"naive CSV loader failed: {naive.stderr[-2000:]}")
        loaded = json.loads(naive.stdout.strip().splitlines()[-1])
        baseline = {
            "rows": loaded["rows"],
            "seconds": loaded["seconds"],
            "rows_per_s": loaded["rows"] / loaded["seconds"],
            "peak_mb": naive.peak_mb,
        }
        print(
            f"  naive list(csv.DictReader): {baseline['rows_per_s']:,.0f} rows/s, "
            f"peak {naive.peak_mb:.0f} MB",
            flush=True,
        )
    return {"rows": rows, "file_mb": size_mb, "erpsync": ours, "baseline": baseline}
