"""The naive CSV baseline: what a simple script does with an export, `list(csv.DictReader(...))`.

Standard library only, so its peak RSS is the loader's and not erpsync's imports. Prints one JSON
line: rows and seconds. Run by bench/csv_bench.py through bench.procstat (peak RSS measured there).
"""

from __future__ import annotations

import csv
import json
import sys
import time


def main(path: str) -> None:
    began = time.perf_counter()
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    print(json.dumps({"rows": len(rows), "seconds": time.perf_counter() - began}))


if __name__ == "__main__":
    main(sys.argv[1])
