"""Values fitted to state columns: identities never collide, names are marked, text is bounded."""

from __future__ import annotations

import json

from erpsync.domain.columns import RAW_MAX_BYTES, fit_bytes, fit_id, fit_name, utf8_size
from erpsync.domain.identity import mm_run_id_for
from erpsync.domain.lifecycle import MACHINE_MAX, RUN_KEY_MAX, RunRef
from erpsync.domain.model import JobOperation, JobOperationRun, RunState


def test_long_ids_sharing_a_prefix_never_collide_and_are_stable() -> None:
    prefix = "W/" + "x" * 300
    keys = [f"{prefix}|{n}" for n in range(1000)]
    fitted = [fit_id(k, RUN_KEY_MAX) for k in keys]
    assert len(set(fitted)) == len(keys)
    assert all(len(f) == RUN_KEY_MAX for f in fitted)
    assert fitted == [fit_id(k, RUN_KEY_MAX) for k in keys]  # deterministic across calls
    machines = ["M" * 64 + "A", "M" * 64 + "B", "M" * 100]
    assert len({fit_id(m, MACHINE_MAX) for m in machines}) == 3
    assert fit_id("HAAS-1", MACHINE_MAX) == "HAAS-1"  # short values are kept as they are


def test_a_value_at_the_limit_and_one_past_it_differ() -> None:
    at = "k" * RUN_KEY_MAX
    assert fit_id(at, RUN_KEY_MAX) == at
    assert fit_id(at + "k", RUN_KEY_MAX) != at
    assert fit_name(at, RUN_KEY_MAX) == at
    assert fit_name(at + "k", RUN_KEY_MAX).endswith("…")


def test_run_keys_and_mm_run_ids_of_long_runs_stay_distinct() -> None:
    op = JobOperation(("J",), "10", "M1", "J")
    a = JobOperationRun("R" * 300 + "-a", op, RunState.SETUP)
    b = JobOperationRun("R" * 300 + "-b", op, RunState.SETUP)
    assert a.run_key != b.run_key and len(a.run_key) == RUN_KEY_MAX
    assert mm_run_id_for("erp", a.run_key) != mm_run_id_for("erp", b.run_key)
    # the key is fitted once: a RunRef of the fitted key keeps it
    assert RunRef("erp", a.run_key, "x").run_key == a.run_key


def test_text_is_cut_at_a_character_boundary_with_a_marker() -> None:
    raw = json.dumps({"description": "é" * 5_000_000}, ensure_ascii=False)  # 10 MB, 2-byte chars
    kept = fit_bytes(raw, RAW_MAX_BYTES)
    assert utf8_size(kept) <= RAW_MAX_BYTES
    assert kept.startswith('{"description": "éé')
    cut = int(kept.rsplit("[cut ", 1)[1].split(" ", 1)[0])
    assert cut == utf8_size(raw) - utf8_size(kept.rsplit("…[cut ", 1)[0])
    assert f"of {utf8_size(raw)} bytes]" in kept
    assert fit_bytes("short") == "short"
