"""CSV snapshots that cannot be trusted to stop runs (`RunSnapshot.suspect`): a header-only export,
and one caught mid-write (last line without a newline, short of fields or unreadable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from erpsync.adapters.erp.csv_source import CsvSource
from erpsync.config import CsvSettings, SourceSettings
from erpsync.domain.model import BadRecord, JobOperationRun

HEADER = "tisfc010.pdno;tisfc010.opno;tisfc010.mcno;tisfc010.qcmp;tisfc010.opst\n"
ROWS = "PO1;10;M1;1;Actief\nPO2;10;M2;1;Actief\n"


def read(tmp_path: Path, content: bytes) -> tuple[list[str], int, str | None]:
    """(run keys, bad rows, suspect) of one read of `content` as the source's path file."""
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    source = CsvSource(
        SourceSettings(kind="infor-ln-csv", name="ln", csv=CsvSettings(path=path, settle_seconds=0))
    )
    snapshot = source.read_current()
    assert snapshot is not None
    items = list(snapshot)
    runs = [i.run_key for i in items if isinstance(i, JobOperationRun)]
    return runs, sum(isinstance(i, BadRecord) for i in items), snapshot.suspect


@pytest.mark.parametrize(
    ("content", "runs", "suspect"),
    [
        (HEADER + ROWS, ["PO1|10", "PO2|10"], None),
        ((HEADER + ROWS).rstrip("\n"), ["PO1|10", "PO2|10"], None),  # no final newline, last row whole
        ((HEADER + ROWS).replace("\n", "\r\n"), ["PO1|10", "PO2|10"], None),
        (HEADER, [], "export.csv has a header but no rows"),
        (HEADER + "\n\n", [], "export.csv has a header but no rows"),
        (
            HEADER + ROWS + "PO3;10",
            ["PO1|10", "PO2|10"],
            "export.csv: export looks cut off: the last line (4) has 2",
        ),
        (
            HEADER + ROWS + "PO3;10;M3;1;Act",
            ["PO1|10", "PO2|10"],
            "export.csv: export looks cut off: the last line (4) ends without a newline and cannot",
        ),
    ],
)
def test_suspect_snapshots(tmp_path: Path, content: str, runs: list[str], suspect: str | None) -> None:
    got_runs, _, got = read(tmp_path, content.encode("utf-8"))
    assert got_runs == runs
    if suspect is None:
        assert got is None
    else:
        assert got is not None and got.startswith(suspect), got


def test_a_cut_line_says_how_many_fields_it_has(tmp_path: Path) -> None:
    _, bad, suspect = read(tmp_path, (HEADER + ROWS + "PO3;10").encode("utf-8"))
    assert suspect is not None and "has 2 of the header's 5 fields" in suspect
    assert bad == 1  # the cut row is still a bad row of its own (quarantined)


def test_utf16_with_a_final_newline_is_trusted(tmp_path: Path) -> None:
    runs, _, suspect = read(tmp_path, (HEADER + ROWS).encode("utf-16"))
    assert runs == ["PO1|10", "PO2|10"] and suspect is None
