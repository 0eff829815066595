"""Deterministic identities: MM run ids, journal idempotency keys, payload fingerprints.

Every id here is a pure function of its inputs, so a crash and a replay compute the same id: MM's
``erpJobOperationRunId`` doubles as our idempotency key towards MM (a GET settles an in-doubt call),
and the journal's unique ``idempotency_key`` stops the same action from being recorded twice.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from erpsync.domain.model import JobOperationRun

MM_RUN_ID_MAX = 64
"""Longest MM run id we produce; MM does not document a limit, 64 is far below any sane one."""

_HASH_HEX = 16  # 64 bits of sha256: collisions need ~4e9 ids in one source, never reached
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._:@+=-]")
_GENERATION = re.compile(r"[A-Za-z0-9._-]{1,64}")
PHASES = ("", "setup", "production")


def mm_run_id_for(source: str, run_key: str) -> str:
    """The MM ``erpJobOperationRunId`` for one ERP run: ``<source>:<run_key>``, readable.

    The plain form is used when it is at most 64 characters, ``source`` has no ``:`` and every
    character is URL-path safe (``A-Z a-z 0-9 . _ : @ + = -``): the legacy GET puts the id in the
    URL path, where ``/`` or ``%`` break routing. Otherwise unsafe characters become ``-``, the text
    is cut to leave room, and ``~`` plus 16 hex digits of sha256(source NUL run_key) are appended,
    so distinct runs keep distinct ids. Example: run ``W/1808412/1/0/0/20/3`` of source ``erp``
    -> ``erp:W-1808412-1-0-0-20-3~86ecf1e5b0a9fa97``; run ``W-1808412-1:20`` -> ``erp:W-1808412-1:20``.
    """
    if not source or not run_key:
        raise ValueError("mm_run_id_for needs a non-empty source and run_key")
    plain = f"{source}:{run_key}"
    if len(plain) <= MM_RUN_ID_MAX and ":" not in source and not _UNSAFE_ID.search(plain):
        return plain
    digest = hashlib.sha256(f"{source}\x00{run_key}".encode()).hexdigest()[:_HASH_HEX]
    readable = _UNSAFE_ID.sub("-", plain)[: MM_RUN_ID_MAX - _HASH_HEX - 1]
    return f"{readable}~{digest}"


def generation_run_id(source: str, anchor: str, number: int) -> str:
    """The MM run id of generation ``number`` > 1 of an anchor ticket's run (domain/shop_floor.py).

    ``<anchor's id>.g<n>`` when the anchor's id is plain and the result fits 64 characters
    (``erp:LT7`` -> ``erp:LT7.g2``), else the hashed form of ``<anchor>#g<n>``. Either way a
    pure function of its inputs, distinct from every other run's id: a plain run key never ends in
    ``.g<n>`` after a ticket key (VISUAL ``LT<id>``, CSV ``<job>|<seq>``).
    """
    if number < 2:
        raise ValueError(f"generation_run_id is for generations from 2 on, got {number}")
    base = mm_run_id_for(source, anchor)
    plain = f"{base}.g{number}"
    if "~" not in base and len(plain) <= MM_RUN_ID_MAX:
        return plain
    return mm_run_id_for(source, f"{anchor}#g{number}")


def idempotency_key(kind: str, mm_run_id: str, phase: str = "", *, generation: str = "") -> str:
    """The journal key of one action: ``<kind>:<mm_run_id>[:<phase>][@<generation>]``.

    - start: ``start_run:<id>:setup`` or ``start_run:<id>:production``: the setup start and the
      later switch to production are two actions, and a run never starts twice in one phase;
    - stop: ``stop_run:<id>``: one stop per run;
    - resync: the same plus ``@<generation>`` (a token per resync, see `generation_token`), so an
      explicit resync may repeat an action the journal already holds.
    At most 255 characters (the journal column): kind and phase are short, the id is <= 64.
    """
    if not kind or ":" in kind or "@" in kind:
        raise ValueError(f"idempotency key kind must be non-empty without ':' or '@', got {kind!r}")
    if not mm_run_id:
        raise ValueError("idempotency key needs an mm_run_id")
    if phase not in PHASES:
        raise ValueError(f"idempotency key phase must be one of {PHASES}, got {phase!r}")
    if generation and not _GENERATION.fullmatch(generation):
        raise ValueError(f"generation must be 1-64 of A-Z a-z 0-9 . _ -, got {generation!r}")
    key = f"{kind}:{mm_run_id}"
    if phase:
        key = f"{key}:{phase}"
    if generation:
        key = f"{key}@{generation}"
    return key


def generation_token(at: datetime) -> str:
    """A resync generation from a UTC time, to the microsecond: ``r20260515T101500123456Z``."""
    if at.tzinfo is None:
        raise ValueError("generation_token needs a timezone-aware datetime")
    return "r" + at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def payload_fingerprint(run: JobOperationRun, mm_machine_id: str) -> str:
    """sha256 hex of what MM stores on the job a start creates or matches.

    Covers job, operation, part and lot names, the MM machine, description, quantity and the three
    standard times. Excludes the run state and timestamps (start, end, due): those change in the
    normal course of a run and are not edits of the job. ``repr`` of a tuple of str/int/None is
    unambiguous, so no separator can collide; the ``v1`` prefix allows a future change of fields.
    """
    op = run.operation
    text = repr(
        (
            "v1",
            op.job_name,
            op.operation_name,
            op.part_name,
            op.lot_name,
            mm_machine_id,
            op.description,
            op.quantity_required,
            op.expected_setup_seconds,
            op.ideal_part_ms,
            op.expected_part_ms,
        )
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def mm_fields(run: JobOperationRun, mm_machine_id: str) -> dict[str, object]:
    """The fields `payload_fingerprint` covers, by name: the ``after`` side of an audit row."""
    op = run.operation
    return {
        "jobName": op.job_name,
        "operationName": op.operation_name,
        "partName": op.part_name,
        "lotName": op.lot_name,
        "erpMachineId": mm_machine_id,
        "jobOperationDescription": op.description,
        "quantityRequired": op.quantity_required,
        "expectedSetupTime": op.expected_setup_seconds,
        "idealPartTime": op.ideal_part_ms,
        "expectedPartTime": op.expected_part_ms,
    }
