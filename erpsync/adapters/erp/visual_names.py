"""How VISUAL identifiers become erpsync keys and names; shared by the SQL preset and VISUAL CSVs.

Rules (for the dirty data real VISUAL databases hold: padded keys, NULs, blank split/sub ids):
- Every identifier is trimmed (nchar/nvarchar padding, `'1808412 '` == `'1808412'`) and NUL bytes
  are removed. Keys stay strings: LOT_ID `'1'` and `'01'` are different lots.
- SPLIT_ID / SUB_ID that are blank or NULL mean `'0'` (not split / the header work order).
- Job key: the tuple (TYPE, BASE_ID, LOT_ID, SPLIT_ID, SUB_ID) after the rules above.
- Job name (what MM shows): `BASE/LOT`, plus `/SPLIT` only when SPLIT_ID != '0', plus `-SUB` only
  when SUB_ID != '0'. e.g. `1808412/1`, `1808412/1/2`, `1808412/1-3`, `1808412/1/2-3`.
- Operation name: `<job name>|<SEQUENCE_NO>` (MM's `21431871|10` convention); operation_seq is the
  sequence number as text (`'10'`).
- Run key of a labor ticket: `LT<TRANSACTION_ID>`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict, Unpack

from erpsync.domain.model import JobOperation

NO_SPLIT = "0"


def clean(value: Any) -> str:
    """An ERP identifier as trimmed text without NUL bytes; None becomes ''.

    Called a dozen times per ERP row, so the common case (a str without NUL) does the least.
    """
    if value is None:
        return ""
    text = value if value.__class__ is str else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text.strip()


def visual_job_key(wo_type: Any, base: Any, lot: Any, split: Any, sub: Any) -> tuple[str, str, str, str, str]:
    """The canonical five-part key (see module rules)."""
    return (
        clean(wo_type).upper(),
        clean(base),
        clean(lot),
        clean(split) or NO_SPLIT,
        clean(sub) or NO_SPLIT,
    )


def visual_job_name(key: tuple[str, ...]) -> str:
    """`BASE/LOT[/SPLIT][-SUB]` for a key from `visual_job_key`."""
    _, base, lot, split, sub = key
    name = f"{base}/{lot}"
    if split != NO_SPLIT:
        name += f"/{split}"
    if sub != NO_SPLIT:
        name += f"-{sub}"
    return name


def operation_name(job_name: str, seq: str) -> str:
    """`<job name>|<seq>`."""
    return f"{job_name}|{seq}"


class OperationText(TypedDict, total=False):
    """`JobOperation`'s fields that name and describe it, as each source reads them."""

    part_name: str
    lot_name: str
    description: str
    due_at: datetime | None
    origin: str


def named_operation(
    job_key: tuple[str, ...],
    seq: str,
    machine: str,
    job_name: str,
    standards: tuple[int | None, int | None, int | None],
    **text: Unpack[OperationText],
) -> JobOperation:
    """An operation named by `operation_name`, with the ERP's standards (quantity, setup s, ms per
    part): ERPs keep one run time per part, so it is both MM's ideal and expected part time."""
    quantity, setup_seconds, part_ms = standards
    name = operation_name(job_name, seq)
    return JobOperation(
        job_key,
        seq,
        machine,
        job_name,
        name,
        quantity_required=quantity,
        expected_setup_seconds=setup_seconds,
        ideal_part_ms=part_ms,
        expected_part_ms=part_ms,
        **text,
    )


def ticket_run_key(transaction_id: Any) -> str:
    """The run key of a VISUAL labor ticket."""
    return f"LT{int(transaction_id)}"


def parse_ticket_run_key(run_key: str) -> int | None:
    """The TRANSACTION_ID inside a `LT<id>` run key, or None if it is not one."""
    if run_key.startswith("LT") and run_key[2:].isdigit():
        return int(run_key[2:])
    return None


def seq_text(value: Any) -> str | None:
    """An operation sequence number as canonical text (`'0010'`, `10`, `'10.0'` -> `'10'`)."""
    text = clean(value).replace(",", ".")
    if not text:
        return None
    whole, _, frac = text.partition(".")
    if whole.isdigit() and (not frac or set(frac) == {"0"}):
        return str(int(whole))
    return None
