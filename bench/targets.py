"""The benchmark targets (reconciler issue and issue 8), checked against a campaign's figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

NO_CHANGE_SECONDS = 5.0
PEAK_MB = 300.0
NEW_RUNS_FLOOR_RATIO = 1.3
NEW_RUNS_SPEEDUP = 10.0
WRITEBACK_FLOOR_RATIO = 1.5
# "flat as rows grow": RSS may rise by this much from 10k to 100k rows read (a list of 100k row
# dicts would add ~100 MB; the duplicate-key index a CSV snapshot keeps is ~20-25 MB per 100k rows)
CSV_GROWTH_MB = 30.0


@dataclass(frozen=True)
class Check:
    """One target: a measured value against its limit."""

    scenario: str
    what: str
    value: float
    op: Literal["<=", ">=", "=="]
    limit: float
    unit: str

    @property
    def ok(self) -> bool:
        if self.op == "<=":
            return self.value <= self.limit
        if self.op == ">=":
            return self.value >= self.limit
        return self.value == self.limit

    def line(self) -> str:
        verdict = "met" if self.ok else "MISSED"
        target = f"{self.op} {self.limit:,.2f} {self.unit}"
        return f"{self.what}: {self.value:,.2f} {self.unit} (target {target}) {verdict}"


def checks(results: dict[str, dict[str, Any]]) -> list[Check]:
    """Every target whose scenario ran (a failed scenario is reported separately)."""
    out: list[Check] = []
    for name in ("nochange-10k", "nochange-100k"):
        r = results.get(name)
        if r and "erpsync" in r:
            runs = f"{r['runs']:,}"
            out.append(
                Check(
                    name,
                    f"no-change cycle over {runs} runs: API calls",
                    r["erpsync"]["calls"],
                    "==",
                    0,
                    "calls",
                )
            )
            if name == "nochange-100k":
                e = r["erpsync"]
                out.append(
                    Check(
                        name,
                        f"no-change cycle over {runs} runs: cycle time",
                        e["cycle_seconds"],
                        "<=",
                        NO_CHANGE_SECONDS,
                        "s",
                    )
                )
                out.append(
                    Check(
                        name, f"no-change cycle over {runs} runs: peak RSS", e["peak_mb"], "<=", PEAK_MB, "MB"
                    )
                )
    r = results.get("new-runs")
    if r and "erpsync" in r:
        e, b = r["erpsync"], r["baseline"]
        out.append(
            Check(
                "new-runs",
                "new runs: cycle / floor",
                e["cycle_seconds"] / e["floor"],
                "<=",
                NEW_RUNS_FLOOR_RATIO,
                "x",
            )
        )
        out.append(
            Check(
                "new-runs",
                "new runs: one-at-a-time / erpsync",
                b["wall"] / e["cycle_seconds"],
                ">=",
                NEW_RUNS_SPEEDUP,
                "x",
            )
        )
    r = results.get("writeback")
    if r and "erpsync" in r:
        e = r["erpsync"]
        out.append(
            Check(
                "writeback",
                "write-back: cycle / floor",
                e["wall"] / e["floor"],
                "<=",
                WRITEBACK_FLOOR_RATIO,
                "x",
            )
        )
    r = results.get("csv-ingest")
    if r and "erpsync" in r:
        e = r["erpsync"]
        out.append(Check("csv-ingest", "CSV ingest: peak RSS", e["peak_mb"], "<=", PEAK_MB, "MB"))
        marks = {int(k): v for k, v in e["marks"].items()}
        if len(marks) >= 2:
            growth = marks[max(marks)] - marks[min(marks)]
            out.append(
                Check(
                    "csv-ingest",
                    f"CSV ingest: RSS growth {min(marks) // 1000}k -> {max(marks) // 1000}k rows",
                    growth,
                    "<=",
                    CSV_GROWTH_MB,
                    "MB",
                )
            )
    return out
