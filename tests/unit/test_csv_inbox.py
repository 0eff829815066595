"""The CSV inbox: ready files only, newest wins, archive/quarantine on acknowledge, never read twice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from erpsync.adapters.erp.csv_inbox import SourceFileMissingError
from erpsync.adapters.erp.csv_source import CsvSource
from erpsync.config import CsvSettings, SourceSettings
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import BadRecord, JobOperationRun, RunState

HEADER = "WORKORDER_TYPE,WORKORDER_BASE_ID,WORKORDER_LOT_ID,SEQUENCE_NO,RESOURCE_ID,QTY_GOOD,Run_Complete\n"
NOW = 1_800_000_000.0


def export(*rows: str) -> str:
    return HEADER + "".join(row + "\n" for row in rows)


def drop(folder: Path, name: str, content: str | bytes, age: float = 60) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    os.utime(path, (NOW - age, NOW - age))
    return path


def inbox_source(inbox: Path, **csv: Any) -> CsvSource:
    settings = SourceSettings(
        kind="infor-visual-csv",
        name="inbox",
        csv=CsvSettings(inbox=inbox, settle_seconds=5, **csv),
    )
    return CsvSource(settings, clock=lambda: NOW)


def run_keys(items: list[JobOperationRun | BadRecord]) -> dict[str, RunState]:
    return {i.run_key: i.state for i in items if isinstance(i, JobOperationRun)}


def test_empty_inbox_has_nothing_new(tmp_path: Path) -> None:
    assert inbox_source(tmp_path).read_runs() is None


def test_missing_inbox_is_a_retryable_error(tmp_path: Path) -> None:
    with pytest.raises(SourceFileMissingError, match="not a folder"):
        inbox_source(tmp_path / "nope").read_runs()


def test_files_still_being_written_are_not_read(tmp_path: Path) -> None:
    drop(tmp_path, "ops.csv.tmp", export("W,1,1,10,M1,1,No"))
    drop(tmp_path, "ops.part", export("W,1,1,10,M1,1,No"))
    drop(tmp_path, ".hidden.csv", export("W,1,1,10,M1,1,No"))
    drop(tmp_path, "~$locked.csv", export("W,1,1,10,M1,1,No"))
    drop(tmp_path, "notes.pdf", b"%PDF")
    drop(tmp_path, "fresh.csv", export("W,1,1,10,M1,1,No"), age=1)  # modified 1 s ago
    source = inbox_source(tmp_path)
    assert source.read_runs() is None
    os.utime(tmp_path / "fresh.csv", (NOW - 10, NOW - 10))
    snapshot = source.read_runs()
    assert snapshot is not None
    assert run_keys(list(snapshot)) == {"W/1/1/0/0|10": RunState.PRODUCTION}


def test_newest_file_wins_and_older_ones_are_superseded(tmp_path: Path) -> None:
    old = drop(tmp_path, "a_monday.csv", export("W,1,1,10,M1,1,No"), age=300)
    new = drop(tmp_path, "b_tuesday.csv", export("W,1,1,10,M1,1,Yes", "W,2,1,10,M2,3,No"), age=60)
    source = inbox_source(tmp_path)
    snapshot = source.read_runs()
    assert snapshot is not None
    assert snapshot.complete is True
    assert run_keys(list(snapshot)) == {"W/1/1/0/0|10": RunState.ENDED, "W/2/1/0/0|10": RunState.PRODUCTION}
    assert old.exists() and new.exists()  # nothing moves before the cycle commits
    source.acknowledge(snapshot)
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == ["a_monday.csv", "b_tuesday.csv"]
    assert not old.exists() and not new.exists()
    assert source.read_runs() is None


def test_same_content_is_never_read_twice(tmp_path: Path) -> None:
    content = export("W,1,1,10,M1,1,No")
    drop(tmp_path, "ops.csv", content)
    source = inbox_source(tmp_path)
    first = source.read_runs()
    assert first is not None
    list(first)
    source.acknowledge(first)
    again = drop(tmp_path, "ops.csv", content)  # the ERP drops the same export again
    assert source.read_runs() is None
    assert not again.exists()
    archived = sorted(p.name for p in (tmp_path / "archive").iterdir())
    assert len(archived) == 2 and "ops.csv" in archived  # second copy kept under a checksum name


def test_unreadable_file_is_quarantined_whole_with_its_reason(tmp_path: Path) -> None:
    good = drop(tmp_path, "a.csv", export("W,1,1,10,M1,1,No"), age=300)
    drop(tmp_path, "b.csv", "WORKORDER_BASE_ID,RESOURCE_ID\n1,M1\n", age=60)
    source = inbox_source(tmp_path)
    snapshot = source.read_runs()
    assert snapshot is not None
    assert snapshot.complete is False  # no runs can be trusted from it
    items = list(snapshot)
    assert len(items) == 1 and isinstance(items[0], BadRecord)
    assert items[0].error_class == "unreadable_file"
    assert "header_overrides" in items[0].reason
    source.acknowledge(snapshot)
    quarantined = tmp_path / "quarantine"
    assert (quarantined / "b.csv").exists()
    assert "header_overrides" in (quarantined / "b.csv.reason.txt").read_text()
    assert good.exists()  # the older good file was not superseded by a broken one
    nxt = source.read_runs()
    assert nxt is not None and run_keys(list(nxt)) == {"W/1/1/0/0|10": RunState.PRODUCTION}


def test_bad_rows_do_not_stop_the_file(tmp_path: Path) -> None:
    drop(tmp_path, "ops.csv", export("W,1,1,10,M1,1,No", "W,2,1,ten,M1,1,No", "W,3,1,10,M1,1,Maybe"))
    source = inbox_source(tmp_path)
    snapshot = source.read_runs()
    assert snapshot is not None
    items = list(snapshot)
    assert run_keys(items) == {"W/1/1/0/0|10": RunState.PRODUCTION}
    bad = [(b.file, b.line, b.field) for b in items if isinstance(b, BadRecord)]
    assert bad == [("ops.csv", 3, "SEQUENCE_NO"), ("ops.csv", 4, "Run_Complete")]
    source.acknowledge(snapshot)
    assert (tmp_path / "archive" / "ops.csv").exists()  # rows are quarantined, the file is archived
    assert snapshot.stats.rows_read == 3


def test_operations_and_lookup_use_the_latest_file_even_after_archiving(tmp_path: Path) -> None:
    drop(tmp_path, "ops.csv", export("W,1,1,10,M1,1,No", "W,1,1,20,M1,0,No", "W,1,1,30,M1,0,Yes"))
    source = inbox_source(tmp_path)
    snapshot = source.read_runs()
    assert snapshot is not None
    list(snapshot)
    source.acknowledge(snapshot)
    assert [o.operation_name for o in source.read_operations()] == ["1/1|10", "1/1|20"]  # type: ignore[union-attr]
    found = run_keys(list(source.lookup_runs(["W/1/1/0/0|30", "W/1/1/0/0|20", "nope"])))
    assert found == {"W/1/1/0/0|30": RunState.ENDED}  # |20 never started, so it is no run


def test_path_mode_reads_only_changed_content_and_never_moves_the_file(tmp_path: Path) -> None:
    path = drop(tmp_path, "export.csv", export("W,1,1,10,M1,1,No"))
    settings = SourceSettings(kind="infor-visual-csv", name="p", csv=CsvSettings(path=path, settle_seconds=5))
    source = CsvSource(settings, clock=lambda: NOW)
    first = source.read_runs()
    assert first is not None
    list(first)
    source.acknowledge(first)
    assert source.read_runs() is None
    drop(tmp_path, "export.csv", export("W,1,1,10,M1,1,Yes"), age=2)  # rewritten 2 s ago: settling
    assert source.read_runs() is None
    os.utime(path, (NOW - 30, NOW - 30))
    second = source.read_runs()
    assert second is not None
    assert run_keys(list(second)) == {"W/1/1/0/0|10": RunState.ENDED}
    source.acknowledge(second)
    assert path.exists() and not (tmp_path / "archive").exists()


def test_path_mode_missing_file(tmp_path: Path) -> None:
    settings = SourceSettings(kind="infor-ln-csv", csv=CsvSettings(path=tmp_path / "none.csv"))
    with pytest.raises(SourceFileMissingError, match="does not exist"):
        CsvSource(settings).read_runs()


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ({"header_overrides": {"colour": "X"}}, r"source\.csv\.header_overrides\.colour: unknown field"),
        ({"run_time_unit": "FURLONGS"}, r"source\.csv\.run_time_unit"),
    ],
)
def test_config_errors(tmp_path: Path, csv: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        inbox_source(tmp_path, **csv)


def test_file_changed_while_read_is_not_a_complete_snapshot(tmp_path: Path) -> None:
    path = drop(tmp_path, "ops.csv", export(*(f"W,{n},1,10,M1,1,No" for n in range(2000))))
    source = inbox_source(tmp_path)
    snapshot = source.read_runs()  # hashed and checked as UTF-8 here ...
    assert snapshot is not None
    with path.open("ab") as fh:  # ... then the exporter appends more rows
        fh.write(b"W,9999,1,10,M\xff\xfe,1,No\n" * 10)
    items = list(snapshot)
    assert 0 < len(run_keys(items)) <= 2000  # rows of the hashed size were read ...
    assert snapshot.complete is False  # ... but they are not the full set any more
    assert isinstance(items[-1], BadRecord)
    assert items[-1].error_class == "unreadable_file"
    source.acknowledge(snapshot)
    assert (tmp_path / "quarantine" / "ops.csv").exists()
