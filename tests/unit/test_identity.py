"""Deterministic identities: MM run ids, idempotency keys, payload fingerprints."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erpsync.domain.identity import (
    MM_RUN_ID_MAX,
    generation_token,
    idempotency_key,
    mm_fields,
    mm_run_id_for,
    payload_fingerprint,
)
from erpsync.domain.model import JobOperationRun, RunState
from tests.unit.reconcile_helpers import operation

PATH_SAFE = re.compile(r"[A-Za-z0-9._:@+=~-]+")


# --- mm_run_id_for ----------------------------------------------------------------------------


def test_plain_ids_are_readable_and_exact() -> None:
    assert mm_run_id_for("erp", "LT1234") == "erp:LT1234"
    assert mm_run_id_for("visual", "W-1808412-1:20") == "visual:W-1808412-1:20"


def test_unsafe_characters_are_replaced_and_a_hash_keeps_ids_distinct() -> None:
    slash = mm_run_id_for("erp", "W/1808412/1/0/0/20/3")
    dash = mm_run_id_for("erp", "W-1808412-1-0-0-20-3")
    assert slash == "erp:W-1808412-1-0-0-20-3~86ecf1e5b0a9fa97"  # pinned: ids are persisted
    assert dash == "erp:W-1808412-1-0-0-20-3"
    assert slash != dash


def test_long_ids_are_cut_to_64_with_a_hash() -> None:
    a = mm_run_id_for("erp", "X" * 100 + "A")
    b = mm_run_id_for("erp", "X" * 100 + "B")
    assert len(a) == len(b) == MM_RUN_ID_MAX
    assert a.startswith("erp:XXXX") and "~" in a
    assert a != b


def test_exactly_64_characters_stays_plain() -> None:
    key = "K" * (MM_RUN_ID_MAX - len("erp:"))
    assert mm_run_id_for("erp", key) == f"erp:{key}"


def test_colon_in_source_cannot_collide() -> None:
    assert mm_run_id_for("a:b", "c") != mm_run_id_for("a", "b:c")


def test_empty_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        mm_run_id_for("", "LT1")
    with pytest.raises(ValueError, match="non-empty"):
        mm_run_id_for("erp", "")


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=120))
def test_ids_are_short_path_safe_and_deterministic(source: str, run_key: str) -> None:
    run_id = mm_run_id_for(source, run_key)
    assert len(run_id) <= MM_RUN_ID_MAX
    assert PATH_SAFE.fullmatch(run_id)
    assert mm_run_id_for(source, run_key) == run_id


@given(st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_distinct_run_keys_get_distinct_ids(source: str, key_a: str, key_b: str) -> None:
    if key_a != key_b:
        assert mm_run_id_for(source, key_a) != mm_run_id_for(source, key_b)


# --- idempotency_key --------------------------------------------------------------------------


def test_key_formats() -> None:
    assert idempotency_key("start_run", "erp:LT1", "setup") == "start_run:erp:LT1:setup"
    assert idempotency_key("start_run", "erp:LT1", "production") == "start_run:erp:LT1:production"
    assert idempotency_key("stop_run", "erp:LT1") == "stop_run:erp:LT1"
    assert idempotency_key("stop_run", "erp:LT1", generation="r1") == "stop_run:erp:LT1@r1"
    assert (
        idempotency_key("start_run", "erp:LT1", "setup", generation="r20260504T140000000000Z")
        == "start_run:erp:LT1:setup@r20260504T140000000000Z"
    )


def test_setup_start_and_production_switch_are_distinct_actions() -> None:
    assert idempotency_key("start_run", "x", "setup") != idempotency_key("start_run", "x", "production")


def test_keys_fit_the_journal_column() -> None:
    key = idempotency_key("start_run", "x" * MM_RUN_ID_MAX, "production", generation="g" * 64)
    assert len(key) <= 255


@pytest.mark.parametrize(
    ("kind", "run_id", "phase", "generation", "message"),
    [
        ("", "x", "", "", "kind"),
        ("start:run", "x", "", "", "kind"),
        ("start_run", "", "", "", "mm_run_id"),
        ("start_run", "x", "warmup", "", "phase"),
        ("start_run", "x", "setup", "has space", "generation"),
        ("start_run", "x", "setup", "g" * 65, "generation"),
    ],
)
def test_bad_key_parts_are_refused(kind: str, run_id: str, phase: str, generation: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        idempotency_key(kind, run_id, phase, generation=generation)


def test_generation_token_is_utc_to_the_microsecond() -> None:
    at = datetime(2026, 5, 4, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert generation_token(at) == "r20260504T140000123456Z"
    assert idempotency_key("stop_run", "x", generation=generation_token(at))
    with pytest.raises(ValueError, match="timezone-aware"):
        generation_token(datetime(2026, 5, 4))


# --- payload_fingerprint ----------------------------------------------------------------------


def _run(**fields: object) -> JobOperationRun:
    return JobOperationRun(
        run_key="LT1",
        operation=operation("1808412", "20", "M1", **fields),
        state=RunState.SETUP,
        start_at=datetime(2026, 5, 4, 6, tzinfo=UTC),
    )


def test_fingerprint_is_sha256_hex_and_pinned() -> None:
    fp = payload_fingerprint(_run(), "M1")
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    # Fingerprints are stored on bindings: a silent change would flag every open run as edited.
    assert fp == "c3d8f8d876e00e289c3492c1eb4f903e339c85da2c8cd5b1ebbc5f994afd7cb8"


@pytest.mark.parametrize(
    "change",
    [
        {"job_name": "other"},
        {"operation_name": "30"},
        {"part_name": "P2"},
        {"lot_name": "2"},
        {"description": "bracket, machined "},
        {"quantity_required": 121},
        {"quantity_required": None},
        {"expected_setup_seconds": 1801},
        {"ideal_part_ms": 45_001},
        {"expected_part_ms": 50_001},
    ],
)
def test_every_mm_job_field_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert payload_fingerprint(_run(**change), "M1") != payload_fingerprint(_run(), "M1")


def test_the_mm_machine_changes_the_fingerprint() -> None:
    assert payload_fingerprint(_run(), "M2") != payload_fingerprint(_run(), "M1")


def test_state_times_due_date_and_erp_keys_do_not_change_it() -> None:
    base = _run()
    later = replace(
        base,
        run_key="LT2",
        state=RunState.ENDED,
        start_at=base.start_at + timedelta(hours=1) if base.start_at else None,
        end_at=datetime(2026, 5, 5, tzinfo=UTC),
        origin="file.csv:7",
        operation=replace(base.operation, due_at=datetime(2026, 6, 1, tzinfo=UTC), origin="x"),
    )
    assert payload_fingerprint(later, "M1") == payload_fingerprint(base, "M1")


def test_field_boundaries_cannot_shift() -> None:
    a = _run(job_name="ab", operation_name="c")
    b = _run(job_name="a", operation_name="bc")
    assert payload_fingerprint(a, "M1") != payload_fingerprint(b, "M1")


def test_mm_fields_names_what_the_fingerprint_covers() -> None:
    fields = mm_fields(_run(), "M1")
    assert fields["erpMachineId"] == "M1"
    assert fields["quantityRequired"] == 120
    assert set(fields) == {
        "jobName",
        "operationName",
        "partName",
        "lotName",
        "erpMachineId",
        "jobOperationDescription",
        "quantityRequired",
        "expectedSetupTime",
        "idealPartTime",
        "expectedPartTime",
    }
