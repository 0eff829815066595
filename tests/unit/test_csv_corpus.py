"""Every file of the dirty-data corpus gives exactly its expected records (tests/fixtures/csv)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from erpsync.adapters.erp.csv_source import CsvSource
from erpsync.config import CsvSettings, SourceSettings, VisualPresetSettings
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "csv"
CASES = sorted(CORPUS.glob("*.expected.json"))


def _source(csv_file: Path, expected: dict[str, Any]) -> CsvSource:
    settings = SourceSettings(
        kind=expected["kind"],
        name="corpus",
        timezone="America/Chicago",
        csv=CsvSettings(path=csv_file, settle_seconds=0, **expected.get("csv", {})),
        visual=VisualPresetSettings(**expected.get("visual", {})),
    )
    return CsvSource(settings)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _fields(op: JobOperation) -> dict[str, Any]:
    return {
        "machine": op.machine,
        "job_name": op.job_name,
        "operation_seq": op.operation_seq,
        "description": op.description,
        "quantity": op.quantity_required,
        "setup_s": op.expected_setup_seconds,
        "part_ms": op.expected_part_ms,
        "due": _iso(op.due_at),
    }


def _run_fields(run: JobOperationRun) -> dict[str, Any]:
    return {
        **_fields(run.operation),
        "run_key": run.run_key,
        "state": run.state.value,
        "start": _iso(run.start_at),
        "end": _iso(run.end_at),
        "line": int(run.origin.rpartition(":")[2]),
    }


def test_corpus_covers_every_csv_case() -> None:
    cases = {path.name.split("_")[0] for path in CASES}
    assert cases == {f"case{n:02d}" for n in range(1, 15) if n != 13}
    assert len(CASES) == len(list(CORPUS.glob("*.csv")))


@pytest.mark.parametrize("expected_file", CASES, ids=lambda p: p.name.removesuffix(".expected.json"))
def test_corpus_file(expected_file: Path) -> None:
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    csv_file = expected_file.with_name(expected_file.name.replace(".expected.json", ".csv"))
    source = _source(csv_file, expected)
    snapshot = source.read_runs()
    assert snapshot is not None
    items = list(snapshot)

    if "unreadable" in expected:
        assert snapshot.complete is False
        assert len(items) == 1
        bad = items[0]
        assert isinstance(bad, BadRecord)
        assert bad.error_class == "unreadable_file"
        assert bad.file == csv_file.name
        assert expected["unreadable"] in bad.reason
        return

    assert snapshot.complete is True
    runs = {i.run_key: i for i in items if isinstance(i, JobOperationRun)}
    assert set(runs) == {r["run_key"] for r in expected["runs"]}, expected["case"]
    for want in expected["runs"]:
        got = _run_fields(runs[want["run_key"]])
        assert {k: got[k] for k in want} == want, expected["case"]

    bad_rows = [i for i in items if isinstance(i, BadRecord)]
    assert [(b.line, b.field) for b in bad_rows] == [(w["line"], w["field"]) for w in expected["bad"]]
    for got_bad, want in zip(bad_rows, expected["bad"], strict=True):
        assert want["reason"] in got_bad.reason
        assert got_bad.record_key == want.get("record_key", got_bad.record_key)
        assert got_bad.file == csv_file.name
        assert got_bad.raw and isinstance(got_bad.raw, dict)
    assert snapshot.stats.skipped == expected["skipped"]
    assert snapshot.stats.quarantined == len(expected["bad"])
    assert snapshot.stats.runs == len(expected["runs"])

    operations = [o for o in source.read_operations() if isinstance(o, JobOperation)]
    assert sorted(o.operation_name for o in operations) == sorted(expected["operations"])
    by_name = {o.operation_name: o for o in operations}
    for name, due in expected.get("operation_due", {}).items():
        assert _iso(by_name[name].due_at) == due
    for name, fields in expected.get("operation_fields", {}).items():
        got = _fields(by_name[name])
        assert {k: got[k] for k in fields} == fields
