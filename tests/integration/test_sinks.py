"""Count sinks against a real ERP database on SQLite, PostgreSQL and MariaDB (and the file sinks).

Each database sink must: write absolute totals, change nothing on a replay, never overwrite a
value it did not write, and keep a batch all-or-nothing.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Numeric, Table, Unicode, select, update

from erpsync.adapters.erp.sinks.base import RUN_COUNT_COLUMNS, CountWrite
from erpsync.adapters.erp.sinks.csv_outbox import CsvOutboxSink
from erpsync.adapters.erp.sinks.factory import open_sink
from erpsync.adapters.erp.sinks.none import NoneSink
from erpsync.adapters.erp.sinks.sql import SqlSink
from erpsync.adapters.erp.sinks.staging import (
    StagingSink,
    install_staging,
    staging_ddl,
    staging_table,
)
from erpsync.adapters.erp.sinks.visual_labor_ticket import VisualLaborTicketSink
from erpsync.adapters.erp.visual_schema import LABOR_TICKET, create_visual_schema
from erpsync.adapters.state.db import create_db_engine
from erpsync.config import DatabaseSettings, Settings, SourceSettings, WritebackSettings
from erpsync.demo.visual_fixture import OperationKey, VisualFixture, WorkOrderKey
from erpsync.domain.errors import ConfigError, RecordError, RetryableError
from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import CountTarget, Sibling

TABLE = "ERPSYNC_RUN_COUNTS"
START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def counts(total: int, good: int, scrap: int = 0, nonconform: int = 0) -> PartCounts:
    return PartCounts(total=total, good=good, scrap=scrap, nonconform=nonconform, start_at=START)


def write(
    run_id: str,
    new: PartCounts,
    previous: PartCounts | None = None,
    run_key: str | None = None,
    in_doubt: tuple[PartCounts, ...] = (),
    siblings: tuple[Sibling, ...] = (),
) -> CountWrite:
    target = CountTarget(
        binding_id=0,
        mm_run_id=run_id,
        run_key=run_key or f"K-{run_id}",
        source="erp",
        erp_job="W100/1",
        erp_operation="10",
        erp_machine="MILL-1",
        last=previous,
        in_doubt=in_doubt,
        siblings=siblings,
    )
    return CountWrite(target, new)


@pytest.fixture
def erp(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def staging_rows(engine: Engine) -> dict[str, dict[str, object]]:
    table = staging_table(TABLE)
    with engine.connect() as conn:
        return {row.RUN_ID: dict(row._mapping) for row in conn.execute(select(table))}


# ---- staging -------------------------------------------------------------------------------


def test_staging_table_must_be_installed_and_install_is_idempotent(erp: Engine) -> None:
    with pytest.raises(ConfigError, match="erpsync erp install-staging"):
        StagingSink(erp, TABLE).write([write("r1", counts(1, 1))])
    install_staging(erp, TABLE)
    install_staging(erp, TABLE)
    assert staging_rows(erp) == {}
    Table("OTHER_TABLE", MetaData(), Column("RUN_ID", Unicode(10), primary_key=True)).create(erp)
    with pytest.raises(ConfigError, match="lacks column"):
        install_staging(erp, "OTHER_TABLE")


def test_staging_upserts_absolute_totals_and_replays_change_nothing(erp: Engine) -> None:
    install_staging(erp, TABLE)
    sink = StagingSink(erp, TABLE)
    first = [write("r1", counts(10, 9, 1)), write("r2", counts(5, 5))]
    assert [r.outcome for r in sink.write(first)] == ["written", "written"]
    rows = staging_rows(erp)
    assert (rows["r1"]["TOTAL_QTY"], rows["r1"]["GOOD_QTY"], rows["r1"]["SCRAP_QTY"]) == (10, 9, 1)
    assert rows["r1"]["RUN_KEY"] == "K-r1" and rows["r1"]["ERP_MACHINE"] == "MILL-1"
    assert rows["r1"]["MM_START_AT"] == START.replace(tzinfo=None)

    # next cycle: r1 grew, r2 unchanged (sent anyway: the sink must not rewrite it)
    second = [write("r1", counts(12, 11, 1), counts(10, 9, 1)), write("r2", counts(5, 5), counts(5, 5))]
    results = sink.write(second)
    assert [r.outcome for r in results] == ["written", "unchanged"]
    assert results[0].before == {"TOTAL_QTY": 10, "GOOD_QTY": 9, "SCRAP_QTY": 1, "NONCONFORM_QTY": 0}
    after = staging_rows(erp)
    assert after["r1"]["TOTAL_QTY"] == 12
    assert after["r2"]["UPDATED_AT"] == rows["r2"]["UPDATED_AT"]

    # replay of the second batch after a crash before erpsync's state commit: already there
    replay = sink.write(second)
    assert [r.outcome for r in replay] == ["already_written", "unchanged"]
    assert staging_rows(erp) == after


def test_staging_never_overwrites_a_human_edit(erp: Engine) -> None:
    install_staging(erp, TABLE)
    sink = StagingSink(erp, TABLE)
    sink.write([write("r1", counts(10, 10))])
    table = staging_table(TABLE)
    with erp.begin() as conn:
        conn.execute(update(table).where(table.c.RUN_ID == "r1").values(GOOD_QTY=8, SCRAP_QTY=2))
    result = sink.write([write("r1", counts(20, 20), counts(10, 10))])[0]
    assert result.outcome == "conflict"
    assert result.before is not None and result.before["GOOD_QTY"] == 8
    assert "edited outside erpsync" in (result.message or "")
    row = staging_rows(erp)["r1"]
    assert (row["TOTAL_QTY"], row["GOOD_QTY"], row["SCRAP_QTY"]) == (10, 8, 2)


def test_staging_batch_is_all_or_nothing_and_a_consumed_row_is_inserted_again(erp: Engine) -> None:
    install_staging(erp, TABLE)
    sink = StagingSink(erp, TABLE)
    with pytest.raises(RecordError):
        sink.write([write("r1", counts(1, 1)), write("r1", counts(2, 2))])  # duplicate key in one batch
    assert staging_rows(erp) == {}
    sink.write([write("r1", counts(10, 10))])
    with erp.begin() as conn:  # the ERP import deletes rows it has consumed
        conn.execute(staging_table(TABLE).delete())
    assert sink.write([write("r1", counts(11, 11), counts(10, 10))])[0].outcome == "written"
    assert staging_rows(erp)["r1"]["TOTAL_QTY"] == 11


def test_staging_never_overwrites_an_edit_committed_while_it_waits(erp: Engine) -> None:
    """A person's transaction holds the row while erpsync writes: erpsync waits, then backs off."""
    install_staging(erp, TABLE)
    sink = StagingSink(erp, TABLE)
    sink.write([write("r1", counts(10, 10))])
    table = staging_table(TABLE)
    outcome: list[object] = []
    with erp.connect() as person:
        edit = person.begin()
        person.execute(update(table).where(table.c.RUN_ID == "r1").values(GOOD_QTY=8, SCRAP_QTY=2))

        def erpsync_writes() -> None:
            try:
                outcome.append(sink.write([write("r1", counts(20, 20), counts(10, 10))])[0].outcome)
            except (RecordError, RetryableError) as exc:  # the guarded UPDATE saw the edit: batch undone
                outcome.append(type(exc).__name__)

        writer = threading.Thread(target=erpsync_writes)
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive()  # blocked on the person's row (or database) lock
        edit.commit()
    writer.join(timeout=30)
    # servers: SELECT ... FOR UPDATE waited and then saw the edit; SQLite has no row locks, so the
    # guarded UPDATE matched nothing and the batch was rolled back (the service retries it per run)
    assert outcome == (["ConcurrentEditError"] if erp.dialect.name == "sqlite" else ["conflict"])
    row = staging_rows(erp)["r1"]
    assert (row["TOTAL_QTY"], row["GOOD_QTY"], row["SCRAP_QTY"]) == (10, 8, 2)


def test_staging_overwrites_its_own_write_in_doubt_but_not_a_person(erp: Engine) -> None:
    sink = StagingSink(erp, TABLE)
    install_staging(erp, TABLE)
    sink.write([write("r1", counts(5, 5)), write("r2", counts(5, 5))])  # committed, state commit lost
    grown = [
        write("r1", counts(9, 8, 1), in_doubt=(counts(5, 5),)),  # never recorded as written
        write("r2", counts(9, 8, 1), in_doubt=(counts(4, 4),)),  # some other value in doubt
    ]
    results = sink.write(grown)
    assert [r.outcome for r in results] == ["written", "conflict"]
    assert results[0].before == {"TOTAL_QTY": 5, "GOOD_QTY": 5, "SCRAP_QTY": 0, "NONCONFORM_QTY": 0}
    rows = staging_rows(erp)
    assert (rows["r1"]["TOTAL_QTY"], rows["r2"]["TOTAL_QTY"]) == (9, 5)


def test_staging_schema_qualified_name_and_ddl_for_every_dialect() -> None:
    for dialect in ("postgresql", "mysql", "mariadb", "sqlite", "mssql"):
        ddl = staging_ddl(dialect, "dbo.ERPSYNC_RUN_COUNTS")
        assert "CREATE TABLE dbo." in ddl and "ERPSYNC_RUN_COUNTS" in ddl
        assert "NONCONFORM_QTY" in ddl and "CREATE INDEX" in ddl
    assert "NVARCHAR(255)" in staging_ddl("mssql", TABLE)
    with pytest.raises(ConfigError, match="unknown SQL dialect"):
        staging_ddl("db2ish", TABLE)


# ---- VISUAL labor ticket -----------------------------------------------------------------------


@pytest.fixture
def visual(erp: Engine) -> VisualFixture:
    create_visual_schema(erp)
    fixture = VisualFixture(erp)
    fixture.add_resource("MILL-1")
    wo = fixture.add_work_order("W100")
    fixture.add_operation(wo, 10, "MILL-1")
    return fixture


def _ticket(fixture: VisualFixture, tid: int) -> tuple[Decimal, Decimal]:
    row = fixture.tickets([tid])[0]
    return row["GOOD_QTY"], row["BAD_QTY"]


def test_labor_ticket_sets_absolute_quantities_and_replays_change_nothing(visual: VisualFixture) -> None:
    op = OperationKey(WorkOrderKey("W", "W100"), 10)
    tid = visual.clock_in(op, datetime(2026, 3, 2, 6, 0), resource_id="MILL-1")
    sink = VisualLaborTicketSink(visual.engine)
    first = write("r1", counts(13, 10, 1, 2), run_key=f"LT{tid}")
    result = sink.write([first])[0]
    assert result.outcome == "written"
    assert result.after == {"GOOD_QTY": 10, "BAD_QTY": 3}
    assert _ticket(visual, tid) == (10, 3)

    grow = write("r1", counts(20, 17, 1, 2), counts(13, 10, 1, 2), run_key=f"LT{tid}")
    assert sink.write([grow])[0].outcome == "written"
    assert sink.write([grow])[0].outcome == "already_written"  # replay: ERP holds the new value
    assert _ticket(visual, tid) == (17, 3)


def test_a_reopened_ticket_holding_both_runs_writes_in_doubt_is_erpsync_s_own(visual: VisualFixture) -> None:
    """Campaign finding F3, in the sink: one transaction wrote both runs' counts (45 + 21), then
    erpsync died before its state commit; both writes are in doubt. The ticket is erpsync's own
    value; a value no combination of the runs' own values makes is a person's."""
    op = OperationKey(WorkOrderKey("W", "W100"), 10)
    tid = visual.clock_in(op, datetime(2026, 3, 2, 6, 0), resource_id="MILL-1")
    first, second = f"LT{tid}", f"LT{tid}#g2"
    old1, old2, doubt1, doubt2 = counts(40, 38, 2), counts(15, 14, 1), counts(47, 45, 2), counts(22, 21, 1)
    sink = VisualLaborTicketSink(visual.engine)
    with visual.engine.begin() as conn:  # what the killed transaction committed
        conn.execute(
            update(LABOR_TICKET).where(tid == LABOR_TICKET.c.TRANSACTION_ID).values(GOOD_QTY=66, BAD_QTY=3)
        )

    def both(new2: PartCounts) -> list[CountWrite]:
        return [
            write("g1", doubt1, old1, first, (doubt1,), (Sibling("g2", old2, (doubt2,)),)),
            write("g2", new2, old2, second, (doubt2,), (Sibling("g1", old1, (doubt1,)),)),
        ]

    results = sink.write(both(counts(25, 24, 1)))  # MM counted on for the second run
    assert [r.outcome for r in results] == ["already_written", "written"]
    assert _ticket(visual, tid) == (45 + 24, 3)

    # the second run's write is in doubt again and it is not in this batch: 45 + 24 and 48 + 21
    # both make 69, so what the second run holds (and the ticket should) is not known: no guess
    alone = write(
        "g1", counts(50, 48, 2), doubt1, first, siblings=(Sibling("g2", doubt2, (counts(25, 24, 1),)),)
    )
    (result,) = sink.write([alone])
    assert result.outcome == "failed" and "tried again next cycle" in (result.message or "")
    assert _ticket(visual, tid) == (69, 3)

    with visual.engine.begin() as conn:  # a person types 70
        conn.execute(update(LABOR_TICKET).where(tid == LABOR_TICKET.c.TRANSACTION_ID).values(GOOD_QTY=70))
    results = sink.write(both(counts(25, 24, 1)))
    assert [r.outcome for r in results] == ["conflict", "conflict"]
    assert "holds GOOD_QTY=70, BAD_QTY=3; erpsync last wrote GOOD_QTY=52, BAD_QTY=3" in (
        results[0].message or ""
    )
    assert _ticket(visual, tid) == (70, 3)


def test_labor_ticket_edit_by_a_person_is_a_conflict(visual: VisualFixture) -> None:
    op = OperationKey(WorkOrderKey("W", "W100"), 10)
    typed = visual.clock_in(op, datetime(2026, 3, 2, 6, 0), resource_id="MILL-1")
    visual.clock_out(typed, datetime(2026, 3, 2, 8, 0), good_qty=7, bad_qty=0)
    ours = visual.clock_in(op, datetime(2026, 3, 2, 9, 0), resource_id="MILL-1")
    sink = VisualLaborTicketSink(visual.engine)
    results = sink.write(
        [
            write("typed", counts(9, 9), run_key=f"LT{typed}"),  # operator typed 7 before our first write
            write("ours", counts(4, 4), run_key=f"LT{ours}"),
        ]
    )
    assert [r.outcome for r in results] == ["conflict", "written"]
    assert _ticket(visual, typed) == (7, 0)
    visual.clock_out(ours, datetime(2026, 3, 2, 10, 0), good_qty=5, bad_qty=1)  # corrected at clock-out
    again = sink.write([write("ours", counts(6, 6), counts(4, 4), run_key=f"LT{ours}")])[0]
    assert again.outcome == "conflict"
    assert _ticket(visual, ours) == (5, 1)
    in_doubt = sink.write([write("ours", counts(8, 8), counts(4, 4), f"LT{ours}", (counts(6, 5, 1),))])
    assert in_doubt[0].outcome == "written"  # (5, 1) was erpsync's own write before a crash
    assert _ticket(visual, ours) == (8, 0)
    bad = sink.write([write("a", counts(1, 1), run_key="W100/10"), write("b", counts(1, 1), run_key="LT999")])
    assert [r.outcome for r in bad] == ["failed", "failed"]
    assert "not a VISUAL labor ticket" in (bad[0].message or "")
    assert "999 not found" in (bad[1].message or "")


# ---- sql -------------------------------------------------------------------------------------

GUARDED = (
    "UPDATE job_counts SET good = :good_parts, bad = :bad_parts WHERE run_key = :run_key "
    "AND good = COALESCE(:prev_good_parts, 0) AND bad = COALESCE(:prev_bad_parts, 0)"
)


@pytest.fixture
def job_counts(erp: Engine) -> Table:
    table = Table(
        "job_counts",
        MetaData(),
        Column("run_key", Unicode(64), primary_key=True),
        Column("good", Numeric(12, 2), nullable=False),
        Column("bad", Integer, nullable=False),
    )
    table.create(erp)
    with erp.begin() as conn:
        conn.execute(table.insert(), [{"run_key": k, "good": 0, "bad": 0} for k in ("K1", "K2")])
    return table


def _job_counts(erp: Engine, table: Table) -> dict[str, tuple[int, int]]:
    with erp.connect() as conn:
        return {r.run_key: (int(r.good), int(r.bad)) for r in conn.execute(select(table))}


def test_sql_sink_guarded_statement_writes_replays_and_detects_conflicts(
    erp: Engine, job_counts: Table
) -> None:
    sink = SqlSink(erp, GUARDED)
    first = [write("r1", counts(10, 8, 2), run_key="K1"), write("r2", counts(3, 3), run_key="K2")]
    assert [r.outcome for r in sink.write(first)] == ["written", "written"]
    assert _job_counts(erp, job_counts) == {"K1": (8, 2), "K2": (3, 0)}
    assert [r.outcome for r in sink.write(first)] == ["already_written", "already_written"]
    with erp.begin() as conn:
        conn.execute(update(job_counts).where(job_counts.c.run_key == "K2").values(good=2))
    second = [
        write("r1", counts(12, 10, 2), counts(10, 8, 2), run_key="K1"),
        write("r2", counts(5, 5), counts(3, 3), run_key="K2"),
    ]
    assert [r.outcome for r in sink.write(second)] == ["written", "conflict"]
    assert _job_counts(erp, job_counts) == {"K1": (10, 2), "K2": (2, 0)}
    # K1 holds (10, 2); erpsync's state still says (8, 2) because a crash lost its commit
    third = [write("r1", counts(15, 13, 2), counts(10, 8, 2), "K1", (counts(12, 10, 2),))]
    assert [r.outcome for r in sink.write(third)] == ["written"]
    assert _job_counts(erp, job_counts)["K1"] == (13, 2)


def test_sql_sink_unguarded_statement_and_statement_errors(erp: Engine, job_counts: Table) -> None:
    sink = SqlSink(erp, "UPDATE job_counts SET good = :good_parts WHERE run_key = :run_key")
    results = sink.write([write("r1", counts(4, 4), run_key="K1"), write("r9", counts(4, 4), run_key="NOPE")])
    assert [r.outcome for r in results] == ["written", "failed"]
    assert _job_counts(erp, job_counts)["K1"] == (4, 0)
    broken = SqlSink(erp, "UPDATE NO_SUCH_TABLE SET good = :good_parts WHERE run_key = :run_key")
    with pytest.raises(ConfigError, match="the ERP refused the statement"):
        broken.write([write("r2", counts(9, 9), run_key="K2")])
    assert _job_counts(erp, job_counts)["K2"] == (0, 0)


def test_sql_statement_with_unknown_binds_is_refused_at_start(tmp_path: Path) -> None:
    bad = "UPDATE T SET Q = :good_part WHERE K = :run_key AND X = :prev_goods"
    with pytest.raises(ConfigError, match=":good_part, :prev_goods"):
        SqlSink(create_db_engine(f"sqlite:///{tmp_path / 'x.db'}"), bad)
    with pytest.raises(ValueError, match=r"unknown bind name\(s\) :good_part, :prev_goods"):
        WritebackSettings(sink="sql", statement=bad)


# ---- csv, none, factory ---------------------------------------------------------------------------


def test_csv_outbox_writes_one_whole_file_per_call(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sink = CsvOutboxSink(outbox)
    assert sink.write([]) == []
    assert not outbox.exists()
    results = sink.write([write("r1", counts(10, 9, 1)), write("r2", counts(2, 2), counts(1, 1))])
    assert [r.outcome for r in results] == ["written", "written"]
    files = list(outbox.iterdir())
    assert len(files) == 1 and files[0].suffix == ".csv" and not files[0].name.startswith(".")
    with files[0].open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == RUN_COUNT_COLUMNS
    assert [(r["RUN_ID"], r["TOTAL_QTY"], r["GOOD_QTY"], r["SCRAP_QTY"]) for r in rows] == [
        ("r1", "10", "9", "1"),
        ("r2", "2", "2", "0"),
    ]
    assert rows[0]["MM_START_AT"] == "2026-03-02T06:00:00Z"


def test_csv_outbox_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="outbox_dir"):
        CsvOutboxSink(blocker).write([write("r1", counts(1, 1))])


def test_none_sink_writes_nothing_and_says_so() -> None:
    results = NoneSink().write([write("r1", counts(1, 1))])
    assert results[0].outcome == "unchanged"
    assert "read-only" in (results[0].message or "")


def test_factory_builds_each_sink_and_defaults_to_the_source_database(tmp_path: Path) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    source = SourceSettings(url=erp_url)
    staging = open_sink(Settings(source=source))
    assert isinstance(staging, StagingSink)
    assert str(staging.engine.url) == erp_url
    staging.close()
    own = open_sink(Settings(writeback=WritebackSettings(database=DatabaseSettings(url=erp_url))))
    assert isinstance(own, StagingSink)
    own.close()
    assert open_sink(Settings(writeback=WritebackSettings(sink="none"))).name == "none"
    csv_sink = open_sink(Settings(writeback=WritebackSettings(sink="csv", outbox_dir=tmp_path)))
    assert isinstance(csv_sink, CsvOutboxSink)
    ticket = open_sink(Settings(source=source, writeback=WritebackSettings(sink="visual-labor-ticket")))
    assert ticket.name == "visual-labor-ticket"
    ticket.close()
    with pytest.raises(ConfigError, match=r"writeback\.database"):
        open_sink(Settings(writeback=WritebackSettings(sink="staging")))
