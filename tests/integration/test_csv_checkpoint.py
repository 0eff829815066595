"""CSV checkpoints live in erpsync_checkpoint, so a restarted service never re-reads a file."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import select

from erpsync.adapters.erp.csv_source import CsvSource
from erpsync.adapters.erp.factory import open_source
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import SourceCheckpoint
from erpsync.config import CsvSettings, SourceSettings
from erpsync.domain.model import JobOperationRun

CONTENT = (
    "tisfc010.pdno;tisfc010.opno;tisfc010.mcno;tisfc010.qcmp;tisfc010.opst\n"
    "PO1;10;M1;1;Actief\nPO1;20;M1;0;Gepland\n"
)


def test_checkpoint_survives_a_restart(state_store: StateStore, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "ln.csv").write_text(CONTENT, encoding="utf-8")
    old = time.time() - 60
    os.utime(inbox / "ln.csv", (old, old))
    settings = SourceSettings(kind="infor-ln-csv", name="ln", csv=CsvSettings(inbox=inbox, settle_seconds=1))

    source = open_source(settings, state_store)
    assert isinstance(source, CsvSource)
    snapshot = source.read_runs()
    assert snapshot is not None
    assert [r.run_key for r in snapshot if isinstance(r, JobOperationRun)] == ["PO1|10"]
    source.acknowledge(snapshot)

    with state_store.session() as session:
        rows = session.scalars(select(SourceCheckpoint).where(SourceCheckpoint.source == "ln")).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.stream == f"file:{row.file_sha256}"
    assert (row.position, row.rows_read) == ("read", 2)
    assert row.file_name is not None and row.file_name.endswith("ln.csv")

    # A new process (fresh source, same state DB) sees the same export dropped again: not read.
    (inbox / "ln_again.csv").write_text(CONTENT, encoding="utf-8")
    os.utime(inbox / "ln_again.csv", (old, old))
    restarted = open_source(settings, state_store)
    assert restarted.read_runs() is None
    assert not (inbox / "ln_again.csv").exists()
    assert (inbox / "archive" / "ln_again.csv").exists()
