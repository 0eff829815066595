"""Bad input: the CSV dirty-data corpus plus generated malformed rows, through `erpsync sync`.

Each file is the `source.csv.path` of a fresh world (state database, simulator) and goes through
one real `erpsync sync` process. Checked: the process exits 0 without a traceback; every bad row
(corpus: `bad` in its `.expected.json`; generated: the rows broken on purpose) is quarantined with
its file, line, field and a reason; a file that cannot be read is quarantined whole with the
reason; nothing else is quarantined; every good generated row is started in MM on its machine.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.tables import QuarantineEntry
from tests.campaign.world import migrated_store
from tests.fixtures_mm import FAST_RETRIES
from tests.sync_helpers import ERP_TZ

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "csv"

VISUAL_HEADER = [
    "WORKORDER_TYPE", "WORKORDER_BASE_ID", "WORKORDER_LOT_ID", "WORKORDER_SPLIT_ID", "WORKORDER_SUB_ID",
    "SEQUENCE_NO", "RESOURCE_ID", "DESCRIPTION", "CALC_END_QTY", "DESIRED_QTY", "QTY_GOOD", "SETUP_HRS",
    "RUN", "RUN_TYPE", "STATUS", "SETUP_COMPLETED", "Run_Complete", "ACT_SETUP_HRS", "ACT_RUN_HRS",
    "ACT_START_DATE", "CLOSE_DATE", "DESIRED_WANT_DATE",
]  # fmt: skip
# kind -> (cells to change, header of the field the row must be quarantined for)
VISUAL_BAD: dict[str, tuple[dict[str, str], str]] = {
    "empty work order id": ({"WORKORDER_BASE_ID": ""}, "WORKORDER_BASE_ID"),
    "sequence not a number": ({"SEQUENCE_NO": "ten"}, "SEQUENCE_NO"),
    "fractional sequence": ({"SEQUENCE_NO": "10.5"}, "SEQUENCE_NO"),
    "negative sequence": ({"SEQUENCE_NO": "-10"}, "SEQUENCE_NO"),
    "empty machine": ({"RESOURCE_ID": ""}, "RESOURCE_ID"),
    "blank machine": ({"RESOURCE_ID": "   "}, "RESOURCE_ID"),
    "quantity not a number": ({"CALC_END_QTY": "abc"}, "CALC_END_QTY"),
    "negative quantity": ({"CALC_END_QTY": "-5"}, "CALC_END_QTY"),
    "quantity NaN": ({"CALC_END_QTY": "NaN"}, "CALC_END_QTY"),
    "quantity Infinity": ({"CALC_END_QTY": "Infinity"}, "CALC_END_QTY"),
    "fallback quantity not a number": ({"CALC_END_QTY": "", "DESIRED_QTY": "x"}, "DESIRED_QTY"),
    "run standard not a number": ({"RUN": "fast"}, "RUN"),
    "negative run standard": ({"RUN": "-2"}, "RUN"),
    "unknown run unit": ({"RUN_TYPE": "BANANAS/HR"}, "RUN_TYPE"),
    "run standard without a unit": ({"RUN_TYPE": ""}, "RUN"),
    "setup hours not a number": ({"SETUP_HRS": "x"}, "SETUP_HRS"),
    "negative setup hours": ({"SETUP_HRS": "-1"}, "SETUP_HRS"),
    "unknown status": ({"STATUS": "Q"}, "STATUS"),
    "impossible close date": ({"CLOSE_DATE": "2024-02-30"}, "CLOSE_DATE"),
    "close date not a date": ({"CLOSE_DATE": "yesterday"}, "CLOSE_DATE"),
    "start date month 13": ({"ACT_START_DATE": "13/45/2024"}, "ACT_START_DATE"),
    "start hour 25": ({"ACT_START_DATE": "2024-03-10 25:00"}, "ACT_START_DATE"),
    "hour 13 PM": ({"ACT_START_DATE": "10/3/2024 13:00 PM"}, "ACT_START_DATE"),
    "run-complete flag not yes/no": ({"Run_Complete": "maybe"}, "Run_Complete"),
    "setup-completed flag not yes/no": ({"SETUP_COMPLETED": "perhaps"}, "SETUP_COMPLETED"),
    "completed quantity not a number": ({"QTY_GOOD": "lots"}, "QTY_GOOD"),
    "actual run hours not a number": ({"QTY_GOOD": "0", "ACT_RUN_HRS": "?"}, "ACT_RUN_HRS"),
    "actual setup hours a lone dash": ({"ACT_SETUP_HRS": "-"}, "ACT_SETUP_HRS"),
    "impossible due date": ({"DESIRED_WANT_DATE": "31.02.2024"}, "DESIRED_WANT_DATE"),
    "short row": ({"__truncate__": "4"}, "SEQUENCE_NO"),
}

LN_HEADER = [
    "pdno",
    "opno",
    "mcno",
    "cwoc",
    "mitm",
    "qplo",
    "qcmp",
    "prtm",
    "sutm",
    "opst",
    "osta",
    "cmdt",
    "subcontracted",
]
LN_BAD: dict[str, tuple[dict[str, str], str]] = {
    "LN empty order": ({"pdno": ""}, "pdno"),
    "LN operation not a number": ({"opno": "abc"}, "opno"),
    "LN no machine nor work center": ({"mcno": "", "cwoc": ""}, "mcno"),
    "LN planned quantity not a number": ({"qplo": "many"}, "qplo"),
    "LN completed quantity not a number": ({"qcmp": "x"}, "qcmp"),
    "LN production time not a number": ({"prtm": "slow"}, "prtm"),
    "LN production time without a unit": ({"prtm": "5"}, "prtm"),
    "LN setup time without a unit": ({"sutm": "2"}, "sutm"),
    "LN unknown operation status": ({"opst": "Bogus"}, "opst"),
    "LN unknown order status": ({"osta": "Weird"}, "osta"),
    "LN impossible completion date": ({"cmdt": "2024-13-45"}, "cmdt"),
    "LN subcontracted flag not yes/no": ({"subcontracted": "perhaps"}, "subcontracted"),
}


@dataclass
class FileCase:
    """One CSV file and what erpsync must make of it."""

    name: str
    path: Path
    kind: str
    csv: dict[str, Any] = field(default_factory=dict)
    visual: dict[str, Any] = field(default_factory=dict)
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # line, field header, reason part
    unreadable: str | None = None
    good_machines: set[str] | None = None  # generated files: every good row starts on its machine
    kinds: dict[int, str] = field(default_factory=dict)  # line -> kind of breakage


@dataclass
class FileResult:
    name: str
    exit_code: int
    bad_rows: int
    quarantined: int
    violations: list[str]


def corpus_cases() -> list[FileCase]:
    cases = []
    for expected_file in sorted(CORPUS.glob("*.expected.json")):
        expected = json.loads(expected_file.read_text(encoding="utf-8"))
        csv_file = expected_file.with_name(expected_file.name.replace(".expected.json", ".csv"))
        cases.append(
            FileCase(
                name=csv_file.name,
                path=csv_file,
                kind=expected["kind"],
                csv=expected.get("csv", {}),
                visual=expected.get("visual", {}),
                bad=[(b["line"], b["field"], b["reason"]) for b in expected.get("bad", [])],
                unreadable=expected.get("unreadable"),
            )
        )
    return cases


def _generate(
    folder: Path,
    name: str,
    header: list[str],
    good: dict[str, str],
    bad: dict[str, tuple[dict[str, str], str]],
    machine_col: str,
    key_col: str,
    prefix: str,
) -> FileCase:
    """Two rows of every bad kind, each after a good row; every row on a machine of its own."""
    case = FileCase(name=name, path=folder / name, kind="", good_machines=set())
    rows: list[list[str]] = []

    def fresh(serial: int) -> dict[str, str]:
        return {**good, key_col: f"{prefix}{serial:04d}", machine_col: f"{prefix}M-{serial}"}

    for serial, kind in enumerate((k for k in bad for _ in range(2)), start=1):
        ok = fresh(2 * serial - 1)
        rows.append([ok[h] for h in header])
        case.good_machines.add(ok[machine_col])  # type: ignore[union-attr]
        changes, field_header = bad[kind]
        broken = {**fresh(2 * serial), **changes}
        cells = [broken[h] for h in header]
        if "__truncate__" in changes:
            cells = cells[: int(changes["__truncate__"])]
        rows.append(cells)
        line = len(rows) + 1  # the header is line 1
        case.bad.append((line, field_header, ""))
        case.kinds[line] = kind
    with case.path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return case


def generated_cases(folder: Path) -> list[FileCase]:
    folder.mkdir(parents=True, exist_ok=True)
    visual_good = dict.fromkeys(VISUAL_HEADER, "")
    visual_good.update(
        WORKORDER_TYPE="W", WORKORDER_LOT_ID="1", WORKORDER_SPLIT_ID="0", WORKORDER_SUB_ID="0",
        SEQUENCE_NO="10", DESCRIPTION="Bracket", CALC_END_QTY="100", QTY_GOOD="5", SETUP_HRS="0.5",
        RUN="0.25", RUN_TYPE="MIN/PC", STATUS="R", SETUP_COMPLETED="N", Run_Complete="No",
    )  # fmt: skip
    visual = _generate(
        folder,
        "generated_visual.csv",
        VISUAL_HEADER,
        visual_good,
        VISUAL_BAD,
        "RESOURCE_ID",
        "WORKORDER_BASE_ID",
        "V",
    )
    visual.kind = "infor-visual-csv"
    ln_good = dict.fromkeys(LN_HEADER, "")
    ln_good.update(
        opno="10", mitm="ITEM-1", qplo="100", qcmp="5", opst="Active", osta="Active", subcontracted="No"
    )
    ln = _generate(folder, "generated_ln.csv", LN_HEADER, ln_good, LN_BAD, "mcno", "pdno", "L")
    ln.kind = "infor-ln-csv"
    return [visual, ln]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def run_case(case: FileCase, folder: Path, sim: MMSimulator) -> FileResult:
    """One real `erpsync sync` over the file, then the checks."""
    folder.mkdir(parents=True, exist_ok=True)
    state_url = f"sqlite:///{folder / 'state.db'}"
    store = migrated_store(state_url)
    csv_settings = {"path": str(case.path), "settle_seconds": 0, **case.csv}
    lines = [
        "[state]", f"url = {_toml(state_url)}",
        "[mm]", f"base_url = {_toml(sim.base_url)}", f"api_key = {_toml(sim.api_key)}",
        *[f"{k} = {_toml(v)}" for k, v in FAST_RETRIES.items()],
        "[source]", f"kind = {_toml(case.kind)}", 'name = "erp"', f"timezone = {_toml(ERP_TZ)}",
        "[source.csv]", *[f"{k} = {_toml(v)}" for k, v in csv_settings.items()],
        "[source.visual]", *[f"{k} = {_toml(v)}" for k, v in case.visual.items()],
        "[logging]", 'level = "WARNING"', 'format = "json"',
    ]  # fmt: skip
    config = folder / "erpsync.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPSYNC_")}
    done = subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(config), "sync"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    found: list[str] = []
    if done.returncode != 0 or "Traceback" in done.stderr + done.stdout:
        found.append(f"erpsync sync exited {done.returncode}: {(done.stderr or done.stdout)[-500:]}")
    with store.session() as session:
        entries = session.scalars(select(QuarantineEntry).where(QuarantineEntry.status == "open")).all()
        got = [(e.file_name, e.line_number, e.field, e.message, e.error_class) for e in entries]
    store.dispose()
    name = case.path.name
    if case.unreadable is not None:
        whole = [
            g for g in got if g[4] == "unreadable_file" and g[0] == name and case.unreadable in (g[3] or "")
        ]
        if len(whole) != 1 or len(got) != 1:
            found.append(f"{name}: expected the file quarantined whole ({case.unreadable!r}), got {got}")
    else:
        by_line = {g[1]: g for g in got}
        for line, field_header, reason in case.bad:
            entry = by_line.get(line)
            kind = case.kinds.get(line, "corpus")
            if entry is None:
                found.append(f"{name}:{line} ({kind}) not quarantined")
            elif entry[0] != name or entry[2] != field_header or not entry[3] or reason not in entry[3]:
                found.append(
                    f"{name}:{line} ({kind}) quarantined as {entry[:4]}, expected field {field_header!r}"
                )
        extra = sorted(set(by_line) - {line for line, _, _ in case.bad}, key=lambda x: x or 0)
        if extra:
            found.append(
                f"{name}: unexpected quarantine entries at lines {extra}: {[by_line[x] for x in extra]}"
            )
    if case.good_machines is not None:
        started = {r["machine_id"] for r in sim.runs().values()}
        missing = case.good_machines - started
        if missing or len(started) != len(case.good_machines):
            found.append(
                f"{name}: good rows not started exactly once per machine (missing {sorted(missing)})"
            )
    return FileResult(name, done.returncode, len(case.bad) + (1 if case.unreadable else 0), len(got), found)


def run_bad_input(folder: Path, workers: int = 2) -> dict[str, Any]:
    cases = [*corpus_cases(), *generated_cases(folder / "generated")]

    def one(item: tuple[int, FileCase]) -> FileResult:
        index, case = item
        with MMSimulator(seed=index, time_scale=0.001) as sim:
            return run_case(case, folder / f"case{index:02d}", sim)

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, enumerate(cases)))
    generated = {c.name: sorted(set(c.kinds.values())) for c in cases if c.kinds}
    return {
        "files": len(cases),
        "corpus_files": len(cases) - len(generated),
        "generated_kinds": {name: len(kinds) for name, kinds in generated.items()},
        "kinds": [k for kinds in generated.values() for k in kinds],
        "bad_rows": sum(r.bad_rows for r in results),
        "quarantined": sum(r.quarantined for r in results),
        "results": [asdict(r) for r in results],
    }
