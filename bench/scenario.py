"""Run ONE benchmark scenario in this (fresh) process and write its figures as JSON.

    python -m bench.scenario NAME --out result.json [--quick] [--pg-url ADMIN_URL]

bench/campaign.py starts one of these per scenario, so memory figures never carry over from one
scenario to the next.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import bench_sources, csv_bench, history_bench, sync_bench, wb_bench
from erpsync.runtime.logging import configure_logging

Runner = Callable[[argparse.Namespace], dict[str, Any]]


def _size(args: argparse.Namespace, full: int, quick: int) -> int:
    return quick if args.quick else full


SCENARIOS: dict[str, Runner] = {
    "nochange-10k": lambda a: sync_bench.no_change(a.pg_url, _size(a, 10_000, 1_000)),
    "nochange-100k": lambda a: sync_bench.no_change(
        a.pg_url, _size(a, 100_000, 5_000), repeats=_size(a, 3, 1)
    ),
    "new-runs": lambda a: sync_bench.new_runs(a.pg_url, _size(a, 2_000, 200), 50.0, repeats=_size(a, 3, 1)),
    "writeback": lambda a: wb_bench.writeback(_size(a, 2_000, 200), 50.0, sample=_size(a, 200, 20)),
    "csv-ingest": lambda a: csv_bench.csv_ingest(_size(a, 100_000, 10_000)),
    "erp-history": lambda a: history_bench.history_load(
        {"postgresql": a.pg_url, "mariadb": history_bench.DEFAULT_MARIADB},
        (10_000, 30_000) if a.quick else history_bench.SIZES,
        repeats=_size(a, 15, 3),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SCENARIOS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--pg-url", default=bench_sources.DEFAULT_PG, help="admin URL of a PostgreSQL server")
    args = parser.parse_args()
    configure_logging("WARNING", "json")
    result = SCENARIOS[args.name](args)
    result["harness_peak_mb"] = bench_sources.peak_mb()
    args.out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
