"""`erpsync sources check`: a readable summary, --json, and exit codes 0 / 1 / 2."""

from __future__ import annotations

import codecs
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from typer.testing import CliRunner

from erpsync.adapters.erp.visual_schema import create_visual_schema
from erpsync.cli.app import app
from erpsync.demo.visual_fixture import VisualFixture

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "csv"
runner = CliRunner()


def check(tmp_path: Path, toml: str, *args: str) -> tuple[int, str]:
    """Exit code and stdout + stderr (logs included) of `erpsync sources check`."""
    config = tmp_path / "erpsync.toml"
    config.write_text(toml, encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "sources", "check", *args])
    return result.exit_code, result.output


def check_json(tmp_path: Path, toml: str, *args: str) -> dict[str, Any]:
    config = tmp_path / "erpsync.toml"
    config.write_text(toml, encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "sources", "check", "--json", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def visual_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'visual.db'}"
    engine = create_engine(url)
    create_visual_schema(engine)
    fx = VisualFixture(engine)
    wo = fx.add_work_order("1808412", desired_qty=10)
    op = fx.add_operation(wo, 10, "HAAS-VF2", run=1, run_type="MIN/PC")
    bad = fx.add_operation(wo, 20, "MILL 3", run=1, run_type="FURLONGS")
    fx.clock_in(op, datetime.now().replace(microsecond=0))  # VISUAL stores local time
    fx.clock_in(bad, datetime.now().replace(microsecond=0))
    fx.clock_in(None, datetime.now().replace(microsecond=0), indirect_id="SWEEP")
    engine.dispose()
    return url


def test_visual_database_summary(tmp_path: Path) -> None:
    url = visual_db(tmp_path)
    toml = f"""
[source]
url = "{url}"
kind = "infor-visual"
name = "visual"
[machines]
overrides = {{ "MILL 3" = "mill-3-mm" }}
ignore = ["SAW"]
"""
    code, out = check(tmp_path, toml)
    assert code == 0, out
    assert "rows read:   3" in out
    assert "runs found:  1 (production 1)" in out
    assert "skipped:     indirect_ticket 1" in out
    assert "operations:  1 (from 2 rows)" in out
    assert "quarantined: 2" in out
    assert "LT2 (RUN_TYPE): unknown run unit 'FURLONGS'" in out
    assert "unmapped, sent as is (each must be an ERP Machine ID in MM): HAAS-VF2" in out


def test_json_output(tmp_path: Path) -> None:
    url = visual_db(tmp_path)
    report = check_json(tmp_path, f'[source]\nurl = "{url}"\nkind = "infor-visual"\n', "--limit", "1")
    assert report["runs"] == 1
    assert report["runs_by_state"] == {"production": 1}
    assert report["quarantined"] == 2
    assert len(report["quarantined_rows"]) == 1
    assert report["machines"]["seen"] == ["HAAS-VF2"]
    assert report["snapshot"] == "complete"


def test_csv_file_lists_quarantined_rows_by_file_and_line(tmp_path: Path) -> None:
    csv = tmp_path / "units.csv"
    shutil.copy(CORPUS / "case07_units.csv", csv)
    toml = f"""
[source]
kind = "infor-visual-csv"
[source.csv]
path = "{csv}"
[source.visual]
run_type_aliases = {{ "PC/H" = "PCS/HR" }}
"""
    code, out = check(tmp_path, toml)
    assert code == 0, out
    assert "runs found:  8 (production 8)" in out
    assert "units.csv:9 (RUN_TYPE): unknown run unit 'FURLONGS'" in out
    assert "units.csv:10 (RUN): run standard -1 HRS/PC is negative" in out
    assert csv.exists() and not (tmp_path / "archive").exists()  # check never moves files


def test_unreadable_csv_exits_1(tmp_path: Path) -> None:
    csv = tmp_path / "broken.csv"  # UTF-16 (BOM) with a lone surrogate: cannot be decoded at all
    csv.write_bytes(codecs.BOM_UTF16_LE + "A,B\n".encode("utf-16-le") + b"\x00\xd8A\x00")
    code, out = check(tmp_path, f'[source]\nkind = "infor-visual-csv"\n[source.csv]\npath = "{csv}"\n')
    assert code == 1
    assert "error: cannot read broken.csv" in out


def test_unreachable_database_exits_1_without_the_password(tmp_path: Path) -> None:
    toml = (
        '[source]\nurl = "postgresql+psycopg://erp:s3cretpw@127.0.0.1:1/erp"\nconnect_timeout_seconds = 1\n'
    )
    code, out = check(tmp_path, toml)
    assert code == 1
    assert "database error" in out
    assert "s3cretpw" not in out
    assert "Traceback" not in out


def test_missing_csv_file_exits_1(tmp_path: Path) -> None:
    code, out = check(
        tmp_path, f'[source]\nkind = "infor-ln-csv"\n[source.csv]\npath = "{tmp_path / "no.csv"}"\n'
    )
    assert code == 1
    assert "does not exist" in out


def test_mapping_error_exits_2_naming_the_key(tmp_path: Path) -> None:
    url = visual_db(tmp_path)
    toml = f"""
[source]
url = "{url}"
kind = "generic-sql"
[source.generic]
table = "OPERATION"
columns = {{ job = "WORKORDER_BASE_ID", operation = "SEQUENCE_NO", machine = "MACHINE" }}
"""
    code, out = check(tmp_path, toml)
    assert code == 2
    assert "source.generic.columns.machine: column 'MACHINE' not found" in out


def test_no_source_section_exits_2(tmp_path: Path) -> None:
    code, out = check(tmp_path, "[logging]\nlevel = 'INFO'\n")
    assert code == 2
    assert "source: required" in out


def sources_sql(tmp_path: Path, toml: str, *args: str) -> tuple[int, str]:
    config = tmp_path / "erpsync.toml"
    config.write_text(toml, encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "sources", "sql", *args])
    return result.exit_code, result.output


def test_sources_sql_prints_every_statement_in_the_erp_dialect(tmp_path: Path) -> None:
    """A DBA reviews what runs against VISUAL on SQL Server; nothing connects to print it."""
    toml = """
[source]
url = "mssql+pyodbc://erpsync:S3cret-pw@VISUALSQL/VMFG?driver=ODBC+Driver+18+for+SQL+Server"
kind = "infor-visual"
[source.visual]
schema_name = "dbo"
[sync]
interval_seconds = 20
[sync.imports]
enabled = true
[writeback]
sink = "visual-labor-ticket"
"""
    code, out = sources_sql(tmp_path, toml)
    assert code == 0, out
    assert "S3cret-pw" not in out
    for name in ("runs", "latest_id", "known_tickets", "new_tickets", "lookup", "operations"):
        assert f"-- {name} (" in out
    assert "-- lock_tickets (writeback)" in out and "-- update_ticket (writeback)" in out
    assert "FROM dbo.[LABOR_TICKET]" in out and "[TRANSACTION_ID] > :after" in out
    assert "every 20 s (sync.interval_seconds)" in out and "every 1440 min" in out
    assert "import job, every 15 min" in out
    assert "RTRIM" not in out.upper()  # no function around an indexable column

    code, out = sources_sql(tmp_path, toml, "--json")
    report = json.loads(out)
    names = [s["name"] for s in report["statements"]]
    assert names[:2] == ["runs", "latest_id"] and names[-1] == "update_ticket"
    assert all(s["sql"].lstrip().upper().startswith(("SELECT", "UPDATE")) for s in report["statements"])


def test_sources_sql_for_generic_sql_reads_the_mapped_table(tmp_path: Path) -> None:
    url = visual_db(tmp_path)
    toml = f"""
[source]
url = "{url}"
kind = "generic-sql"
[source.generic]
table = "LABOR_TICKET"
columns = {{ job = "WORKORDER_BASE_ID", operation = "OPERATION_SEQ_NO", machine = "RESOURCE_ID" }}
watermark = "TRANSACTION_ID"
[writeback]
sink = "staging"
"""
    code, out = sources_sql(tmp_path, toml)
    assert code == 0, out
    assert "-- rows (sync)" in out and "-- changed_rows (sync)" in out and "-- lookup (sync)" in out
    assert '"LABOR_TICKET"."TRANSACTION_ID" > :after' in out
    assert "-- insert_staging_row (writeback)" in out and "ERPSYNC_RUN_COUNTS" in out
