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
# issue 18: a no-change cycle's ERP reads do not grow with the closed-ticket history
HISTORY_ROWS_RATIO = 1.2
HISTORY_READ_TIME_RATIO = 2.0
HISTORY_ROWS_PER_TICKET = 2.0


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
    r = results.get("erp-history")
    if r and "servers" in r:
        out += _history(r)
    return out


def _history(r: dict[str, Any]) -> list[Check]:
    small, large = min(r["sizes"]), max(r["sizes"])
    span = f"{large // 1000:,}k / {small // 1000:,}k closed tickets"
    out = []
    for server, s in r["servers"].items():
        ratios = s["ratios"]
        out += [
            Check("erp-history", f"{server}: no-change LABOR_TICKET rows read, {span}",
                  ratios["rows_large_over_small"], "<=", HISTORY_ROWS_RATIO, "x"),
            Check("erp-history", f"{server}: no-change runs-read time, {span}",
                  ratios["read_time_large_over_small"], "<=", HISTORY_READ_TIME_RATIO, "x"),
            Check("erp-history", f"{server}: LABOR_TICKET rows read per cycle / (open + recent + new)",
                  ratios["cycle_rows_per_ticket"], "<=", HISTORY_ROWS_PER_TICKET, "x"),
        ]  # fmt: skip
    return out
