"""The CSV trials' own machinery, fast and without erpsync processes (part of the default run):
the oracle's rules, and the renderer's line numbers and cuts as erpsync's reader sees them, so a
violation the trials report is erpsync's and not the generator's."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from erpsync.adapters.erp.csv_file import inspect_file, iter_records
from tests.campaign.csv_oracle import FileView, RowView, ShopState
from tests.campaign.csv_render import Format, cut, render
from tests.campaign.csv_scenarios import LN, VISUAL, TrialParams, trial_files

AT = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _row(key: str, state: str = "production", machine: str = "") -> RowView:
    return RowView(key, key, f"{key}|10", machine or f"M-{key}", "P", state, AT, None, 15_000)  # type: ignore[arg-type]


def _file(*rows: RowView, suspect: bool = False, held: frozenset[str] = frozenset()) -> FileView:
    return FileView({r.key: r for r in rows}, held, suspect)


def test_a_suspect_file_holds_missing_rows_and_a_trusted_one_lets_them_vanish() -> None:
    for policy, after in (("flag", ("open", True)), ("stop", ("closed", False))):
        state = ShopState(policy)
        assert state.apply(0, _file(_row("A"), _row("B"), _row("C")))
        assert not state.apply(1, _file(_row("A"), suspect=True))  # cut: held, not acknowledged
        assert [e.status for e in state.rows.values()] == ["open"] * 3
        assert state.apply(2, _file(_row("A"), _row("B")))  # C gone from a good file
        assert (state.rows["C"].status, state.rows["C"].flagged) == after


def test_a_mass_vanish_under_stop_stops_nothing_and_a_bad_row_holds_its_run() -> None:
    state = ShopState("stop")
    state.apply(0, _file(*(_row(k) for k in "ABCD")))
    assert not state.apply(1, _file(_row("A")))  # B, C, D: 3 of 4 at once, more than half
    assert [state.rows[k].status for k in "ABCD"] == ["open", "open", "open", "open"]
    state = ShopState("stop")
    state.apply(0, _file(*(_row(k) for k in "ABCD")))
    assert state.apply(1, _file(_row("A"), _row("B"), held=frozenset({"C"})))  # D alone vanishes
    assert [state.rows[k].status for k in "ABCD"] == ["open", "open", "open", "closed"]


def test_ended_rows_stop_switches_happen_and_a_stopped_row_back_is_its_next_generation() -> None:
    state = ShopState("stop")
    state.apply(0, _file(_row("A", "setup"), _row("B", "ended"), _row("C")))
    assert (state.rows["A"].phase, state.rows["B"].status) == ("setup", "none")  # never started
    state.apply(1, _file(_row("A", "production")))  # C vanished (1 of 2): stopped
    assert (state.rows["A"].phase, state.rows["C"].status) == ("production", "closed")
    state.apply(2, _file(_row("A", "ended"), _row("C")))
    assert (state.rows["A"].status, state.rows["C"].status, state.rows["C"].generations) == (
        "closed",
        "open",
        2,
    )


def test_rendered_lines_and_cuts_are_what_erpsyncs_reader_sees(tmp_path: Path) -> None:
    rng = random.Random(5)
    header = ["A", "B", "C", "D"]
    records = [["1", "two\nlines", "x", "y"], ["2", "b", 'say "hi"', ""], ["3", "Ø µ é", "z", "w"]]
    for encoding in ("utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16"):
        fmt = Format(encoding, "\r\n", "\t" if encoding == "utf-16" else ",", ".", "iso", (2, 0, 3, 1))
        rendered = render(header, records, fmt)
        path = tmp_path / f"f.{encoding}.csv"
        path.write_bytes(rendered.data)
        read = list(iter_records(inspect_file(path)))
        assert [r.line for r in read] == rendered.lines
        assert [r.cells for r in read[1:]] == [[c[i] for i in fmt.order] for c in records]
        if encoding == "utf-16":
            continue  # erpsync does not see cuts in UTF-16 (FINDINGS_CSV.md, F-CSV-2)
        for _ in range(5):
            path.write_bytes(cut(rendered, 3, rng))
            last = list(iter_records(inspect_file(path)))[-1]
            assert last.line == rendered.lines[3] and last.truncated, (encoding, last)


def test_trials_are_drawn_from_the_seed_alone() -> None:
    for kind in (VISUAL.kind, LN.kind):
        p = TrialParams(11, "sqlite", "stop", "inbox", "sync", 5, kind)
        first, again = trial_files(p), trial_files(replace(p))
        assert [(f.name, f.kinds, f.bad) for f in first] == [(f.name, f.kinds, f.bad) for f in again]
        assert all(f.expect.steps == f.step + 1 for f in first)
