"""Whether MM's part counts for a run can be written at all: the check before write-back.

MachineMetrics (or whatever answers in its place) may send counts no ERP should get: 10^30 parts
(a counter gone wild, a wrong multiplier), a negative or fractional count, more good parts than
parts made. Written, such a value lands in the ERP and then overflows erpsync's own BIGINT columns
on every cycle. So each answer is checked here, free of I/O, before anything is written:

1. every count is a finite, whole, non-negative number (12.0 is 12; 12.5, -5, NaN are not);
2. every count is at most ``writeback.max_part_count`` (a plausibility bound whose allowed range
   keeps every value, and the sums the sinks write, below what the ERP and state columns hold);
3. ``goodParts + scrapParts + nonconformParts <= totalParts``. MM's API does not state the
   relation; the simulator models ``good = total - scrap - nonconform``. Only ``<=`` is checked:
   it is what any counting model must satisfy (no more parts judged than were made), while
   ``==`` rests on an inference MM never published and would hold back real counts if MM counts,
   say, parts not yet judged (docs/machinemetrics.md, "Part counts").

An answer that breaks any rule is `Implausible`: the cycle quarantines it with the values MM sent
and the rule broken, and writes nothing for that run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from erpsync.domain.model import BadRecord, PartCounts
from erpsync.domain.writeback_rules import CountTarget, counts_dict

# the quarantine and audit error class of an answer that failed the check
IMPLAUSIBLE_CLASS = "writeback_implausible_counts"
# the audit outcome (and write-back row outcome) of such an answer
IMPLAUSIBLE_OUTCOME = "implausible"

# `writeback.max_part_count`: the default, and the largest value configuration accepts.
# VISUAL's quantities are decimal(20,8), below 10^12; a ticket's value is the sum over its run
# generations, and BAD_QTY is scrap + nonconform (<= total by rule 3), so a bound of 10^10 leaves
# room for 99 generations of one ticket. erpsync's own columns (BIGINT) hold 9.2 * 10^18.
DEFAULT_MAX_PART_COUNT = 1_000_000_000
MAX_PART_COUNT_LIMIT = 10_000_000_000

# MM's names of the four counts, in `PartCounts` order: what a person compares with MM's answer
WIRE_NAMES = {
    "total": "totalParts",
    "good": "goodParts",
    "scrap": "scrapParts",
    "nonconform": "nonconformParts",
}


@dataclass(frozen=True, slots=True)
class Implausible:
    """MM's counts for a run that must not be written: what MM sent, and every rule broken."""

    values: dict[str, Any]  # MM's name -> the value as sent (JSON-safe: NaN/inf as text)
    broken: tuple[str, ...]

    def sent(self) -> str:
        """What MM sent, as a person reads it: `totalParts=1e+30, goodParts=12, ...`."""
        return ", ".join(f"{name}={value}" for name, value in self.values.items())

    def describe(self) -> str:
        """MM's values and the rules they break, in one line."""
        return f"{self.sent()}: {'; '.join(self.broken)}"


def check_counts(raw: Mapping[str, Any], *, bound: int) -> PartCounts | Implausible:
    """MM's four counts (keys ``total``, ``good``, ``scrap``, ``nonconform``, values as MM sent
    them) as `PartCounts` when plausible, else `Implausible` naming every rule broken."""
    broken: list[str] = []
    whole: dict[str, int] = {}
    for field, name in WIRE_NAMES.items():
        value = raw.get(field)
        problem = _problem(value, bound)
        if problem is not None:
            broken.append(f"{name} {problem}")
        else:
            whole[field] = int(value)  # type: ignore[arg-type]  # checked: a finite whole number
    if not broken:
        total, good = whole["total"], whole["good"]
        judged = good + whole["scrap"] + whole["nonconform"]
        if good > total:
            broken.append(f"goodParts ({good}) is more than totalParts ({total})")
        elif judged > total:
            broken.append(
                f"goodParts + scrapParts + nonconformParts ({judged}) is more than totalParts ({total})"
            )
    if broken:
        values = {name: _json_safe(raw.get(field)) for field, name in WIRE_NAMES.items()}
        return Implausible(values, tuple(broken))
    return PartCounts(
        total=whole["total"], good=whole["good"], scrap=whole["scrap"], nonconform=whole["nonconform"]
    )


def implausible_reason(target: CountTarget, implausible: Implausible) -> str:
    """The quarantine message (and audit error) of an implausible answer: the run, what MM sent,
    the rule broken, what erpsync did and what a person can do."""
    kept = (
        "the ERP keeps the counts last written ("
        + ", ".join(f"{k}={v}" for k, v in counts_dict(target.last).items())
        + ")"
        if target.last is not None
        else "nothing was ever written for this run"
    )
    return (
        f"MachineMetrics answered implausible part counts for MM run {target.mm_run_id} (ERP job "
        f"{target.erp_job} op {target.erp_operation} on {target.erp_machine}): {implausible.describe()}. "
        f"Not written to the ERP; {kept}. erpsync reads the run again every write-back cycle: once "
        "MachineMetrics answers plausible counts they are written and this entry resolves. Check the "
        "run's part counts in MachineMetrics (a runaway counter or a wrong count multiplier on the "
        "machine); if counts that high are real, raise writeback.max_part_count"
    )


def implausible_record(target: CountTarget, values: Mapping[str, Any], reason: str) -> BadRecord:
    """The quarantine entry of a run whose MM counts are implausible: one per run, updated with
    each distinct answer, resolved once MM answers plausible counts for the run."""
    return BadRecord(
        source=target.source,
        record_key=target.mm_run_id,
        reason=reason,
        error_class=IMPLAUSIBLE_CLASS,
        raw={
            "run_key": target.run_key,
            "mm_run_id": target.mm_run_id,
            "job": target.erp_job,
            "operation": target.erp_operation,
            "machine": target.erp_machine,
            "mm_counts": dict(values),
            "last_written": counts_dict(target.last) if target.last is not None else None,
        },
        job=target.erp_job,
        operation=target.erp_operation,
        machine=target.erp_machine,
        mm_run_id=target.mm_run_id,
    )


def _problem(value: Any, bound: int) -> str | None:
    """Why one count cannot be written (None: it can)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is not a number ({value!r})"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"is not a finite number ({value})"
        if not value.is_integer():
            return f"is not a whole number ({value})"
    if value < 0:
        return f"is negative ({value})"
    if value > bound:
        return f"({value}) is above writeback.max_part_count ({bound})"
    return None


def _json_safe(value: Any) -> Any:
    """A value as an audit row's JSON holds it: numbers as numbers, NaN/inf and others as text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)
