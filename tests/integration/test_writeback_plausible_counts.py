"""Implausible part counts are quarantined, never written (issue #15, case 6), end to end.

MM is the simulator over loopback HTTP behind the misbehaving proxy (tests/mm_proxy.py): the
simulator itself answers 10^30 parts or more good parts than parts (its `set_counts` allows
both); what it refuses to hold (-5, 12.5, 1e30 as a float) the proxy answers instead of it, for
one run only, as MM-shaped JSON. The ERP's staging table and erpsync's state share one database
on SQLite, PostgreSQL and MariaDB: BIGINT overflow on those columns is what used to fail every
cycle's state commit after the ERP write.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine, select

from erpsync.adapters.erp.sinks.staging import StagingSink, install_staging
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.schemas import StopJobRun
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Cycle, QuarantineEntry, RunBinding
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import Settings
from erpsync.domain.model import PartCounts
from erpsync.domain.plausible_counts import IMPLAUSIBLE_CLASS
from erpsync.domain.writeback_rules import FINAL_COUNTS_CLASS
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.fixtures_mm import fast_mm_settings
from tests.integration.writeback_support import (
    TABLE,
    audits,
    bind_run,
    last_written,
    quarantine,
    settings_for,
    staging_counts,
    start_run,
)
from tests.mm_proxy import JSON, MisbehavingProxy, Operation, Rule

BOUND = 1_000_000  # writeback.max_part_count in these tests


class RunProxy(MisbehavingProxy):
    """The misbehaving proxy with rules for one run's get only (`arm_run`): the other runs' reads
    reach the simulator. The request's path is per handler thread, so concurrent reads are safe."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._path = threading.local()
        self._by_run: dict[str, Rule] = {}

    def arm_run(self, run_id: str, rule: Rule) -> None:
        with self._lock:
            self._by_run[run_id] = rule

    def clear(self) -> None:
        super().clear()
        with self._lock:
            self._by_run.clear()

    def _handle(self, request: Any) -> None:
        self._path.value = unquote(request.path)
        super()._handle(request)

    def _take_rule(self, operation: Operation, body: bytes = b"") -> Rule | None:
        path = getattr(self._path, "value", "")
        with self._lock:
            for run_id, rule in self._by_run.items():
                if (
                    operation == "get"
                    and path.split("?")[0].endswith(run_id)
                    and rule.matches(operation, body)
                ):
                    rule.fired += 1
                    return rule
        return super()._take_rule(operation, body)


def job_run_body(total: Any, good: Any, scrap: Any = 0, nonconform: Any = 0) -> bytes:
    """A get-job-run answer shaped as MM's (numbers written as given, e.g. `12.5`, `1e30`)."""
    metrics = (
        f'"totalParts": {total}, "goodParts": {good}, "scrapParts": {scrap}, "nonconformParts": {nonconform}'
    )
    return f'{{"startAt": "2024-05-06T07:00:00.000Z", "endAt": null, "metrics": {{{metrics}}}}}'.encode()


@dataclass(frozen=True)
class Bad:
    """One implausible answer: from the simulator's counts, or a body the proxy answers instead."""

    sim: dict[str, int] | None  # set_counts arguments
    body: bytes | None  # the proxy's answer instead of MM's
    sent: dict[str, Any]  # the values MM sent, as the audit row holds them
    rule: str  # the rule broken, as the message says it


CASES = {
    "10^30": Bad(
        {"total": 10**30, "good": 10**30},
        None,
        {"totalParts": 10**30, "goodParts": 10**30, "scrapParts": 0, "nonconformParts": 0},
        f"totalParts ({10**30}) is above writeback.max_part_count ({BOUND})",
    ),
    "1e30 float": Bad(
        None,
        job_run_body("1e30", "1e30"),
        {"totalParts": 1e30, "goodParts": 1e30, "scrapParts": 0, "nonconformParts": 0},
        "totalParts (1e+30) is above writeback.max_part_count",
    ),
    "negative": Bad(
        None,
        job_run_body(10, -5),
        {"totalParts": 10, "goodParts": -5, "scrapParts": 0, "nonconformParts": 0},
        "goodParts is negative (-5)",
    ),
    "fraction": Bad(
        None,
        job_run_body(12.5, 12),
        {"totalParts": 12.5, "goodParts": 12, "scrapParts": 0, "nonconformParts": 0},
        "totalParts is not a whole number (12.5)",
    ),
    "good > total": Bad(
        {"total": 10, "good": 15},
        None,
        {"totalParts": 10, "goodParts": 15, "scrapParts": 0, "nonconformParts": 0},
        "goodParts (15) is more than totalParts (10)",
    ),
    "judged > total": Bad(
        {"total": 10, "good": 8, "scrap": 2, "nonconform": 1},
        None,
        {"totalParts": 10, "goodParts": 8, "scrapParts": 2, "nonconformParts": 1},
        "goodParts + scrapParts + nonconformParts (11) is more than totalParts (10)",
    ),
}


class Rig:
    """Simulator, proxy, ERP staging table and state on one backend, and one write-back cycle."""

    def __init__(self, url: str, sim: MMSimulator, proxy: RunProxy, store: StateStore) -> None:
        self.sim, self.proxy, self.store = sim, proxy, store
        self.erp: Engine = create_db_engine(url)
        install_staging(self.erp, TABLE)
        self.sink = StagingSink(self.erp, TABLE)
        mm = fast_mm_settings(proxy.url, sim.api_key, max_concurrency=4)
        self.settings: Settings = settings_for(url, mm, max_part_count=BOUND)
        self.client = MMClient(self.settings.mm)

    def cycle(self, *, at: datetime | None = None, **kw: Any) -> WritebackSummary:
        policy = WritebackPolicy.from_settings(self.settings)
        return run_writeback(SqlUnitOfWorkFactory(self.store), self.client, self.sink, policy, now=at, **kw)

    def answer(self, run_id: str, bad: Bad) -> None:
        """MM's next answers for `run_id` are `bad` until `plausible`."""
        if bad.sim is not None:
            self.sim.set_counts(run_id, **bad.sim)
        else:
            assert bad.body is not None
            self.proxy.arm_run(run_id, Rule("get", body=bad.body, content_type=JSON))

    def plausible(self, run_id: str, total: int, scrap: int = 0) -> None:
        self.proxy.clear()
        self.sim.set_counts(run_id, total=total, scrap=scrap)

    def cycles(self) -> list[Cycle]:
        with self.store.session() as session:
            return list(session.scalars(select(Cycle).where(Cycle.kind == "writeback").order_by(Cycle.id)))

    def close(self) -> None:
        self.client.close()
        self.sink.close()
        self.erp.dispose()


@pytest.fixture
def rig(database_url: str, state_store: StateStore, mm_simulator: MMSimulator) -> Iterator[Rig]:
    with RunProxy(mm_simulator.base_url) as proxy:
        r = Rig(database_url, mm_simulator, proxy, state_store)
        yield r
        r.close()


def entries(store: StateStore) -> dict[str, Any]:
    return {e.record_key: e for e in quarantine(store) if e.error_class == IMPLAUSIBLE_CLASS}


def implausible_audits(store: StateStore) -> list[Any]:
    return audits(store, outcome="implausible")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"], indirect=True)
@pytest.mark.parametrize("case", list(CASES))
def test_implausible_counts_are_quarantined_never_written_and_heal(rig: Rig, case: str) -> None:
    bad = CASES[case]
    for run_id in ("A", "B"):
        start_run(rig.client, run_id)
        bind_run(rig.store, run_id)
    rig.sim.set_counts("A", total=20, scrap=2)
    rig.sim.set_counts("B", total=30, scrap=1)
    first = rig.cycle()
    assert (first.written, first.implausible) == (2, 0)

    # A (written before) and D (a new run) answer implausible counts; B counts on
    start_run(rig.client, "D")
    bind_run(rig.store, "D")
    rig.answer("A", bad)
    rig.answer("D", bad)
    rig.sim.set_counts("B", total=40, scrap=1)

    bad_cycle = rig.cycle()
    assert (bad_cycle.implausible, bad_cycle.written, bad_cycle.outcome) == (2, 1, "ok")
    assert sorted(row.mm_run_id for row in bad_cycle.implausible_runs()) == ["A", "D"]
    assert all(bad.rule in (row.message or "") for row in bad_cycle.implausible_runs())
    assert staging_counts(rig.erp) == {"A": (20, 18, 2, 0), "B": (40, 39, 1, 0)}  # nothing of A's, D's
    assert last_written(rig.store) == {"A": (20, 18, 2, 0), "B": (40, 39, 1, 0), "D": None}
    found = entries(rig.store)
    assert sorted(found) == ["A", "D"]
    for run_id, entry in found.items():
        assert entry.status == "open" and entry.source == "erp"
        assert bad.rule in entry.message and "Not written to the ERP" in entry.message
        assert f"MM run {run_id}" in entry.message and "writeback.max_part_count" in entry.message
        assert json.loads(entry.raw_payload or "{}")["mm_counts"] == bad.sent
    rows = implausible_audits(rig.store)
    assert sorted(a.mm_run_id for a in rows) == ["A", "D"]
    for row in rows:
        assert row.error_class == IMPLAUSIBLE_CLASS and bad.rule in (row.error_message or "")
        assert json.loads(row.after_json or "{}") == bad.sent
    assert json.loads(next(a for a in rows if a.mm_run_id == "A").before_json or "{}")["total"] == 20

    # the same answer again: the cycle goes on, nothing new audited, still nothing written
    rig.sim.set_counts("B", total=45, scrap=1)
    again = rig.cycle()
    assert (again.implausible, again.written, again.outcome) == (2, 1, "ok")
    assert len(implausible_audits(rig.store)) == 2
    assert {run: e.attempts for run, e in entries(rig.store).items()} == {"A": 2, "D": 2}
    assert staging_counts(rig.erp) == {"A": (20, 18, 2, 0), "B": (45, 44, 1, 0)}
    assert [c.outcome for c in rig.cycles()] == ["ok", "ok", "ok"]

    # MM answers plausible counts: written normally, the entries resolve
    rig.plausible("A", total=50, scrap=3)
    rig.plausible("D", total=5)
    healed = rig.cycle()
    assert (healed.implausible, healed.written) == (0, 2)
    assert staging_counts(rig.erp) == {"A": (50, 47, 3, 0), "B": (45, 44, 1, 0), "D": (5, 5, 0, 0)}
    assert last_written(rig.store) == {"A": (50, 47, 3, 0), "B": (45, 44, 1, 0), "D": (5, 5, 0, 0)}
    assert {run: e.status for run, e in entries(rig.store).items()} == {"A": "resolved", "D": "resolved"}
    assert rig.sim.runs()["A"]["end_at"] is None  # write-back never touches MM's runs


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_each_distinct_bad_answer_is_audited_once_and_unchanged_plausible_counts_heal(rig: Rig) -> None:
    start_run(rig.client, "A")
    bind_run(rig.store, "A")
    rig.sim.set_counts("A", total=20, scrap=2)
    assert rig.cycle().written == 1
    rig.answer("A", CASES["negative"])
    rig.cycle()
    rig.cycle()
    rig.answer("A", CASES["10^30"])  # a different bad answer: audited again, entry updated
    rig.proxy.clear()
    rig.cycle()
    rig.cycle()
    assert [json.loads(a.after_json or "{}")["goodParts"] for a in implausible_audits(rig.store)] == [
        -5,
        10**30,
    ]
    [entry] = entries(rig.store).values()
    assert entry.attempts == 4 and str(10**30) in entry.message

    # a person sends the entry back for retry while MM still answers the same: re-opened and audited
    with rig.store.session() as session:
        session.execute(QuarantineEntry.__table__.update().values(status="retry"))  # type: ignore[attr-defined]
        session.commit()
    rig.cycle()
    assert entries(rig.store)["A"].status == "open" and len(implausible_audits(rig.store)) == 3

    # MM goes back to exactly what the ERP holds: nothing to write, but the entry resolves
    rig.sim.set_counts("A", total=20, scrap=2)
    back = rig.cycle()
    assert (back.unchanged, back.implausible) == (1, 0)
    assert entries(rig.store)["A"].status == "resolved"
    assert staging_counts(rig.erp) == {"A": (20, 18, 2, 0)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_stopped_run_with_implausible_final_counts_stays_due_then_gives_up_visibly(rig: Rig) -> None:
    """Implausible final counts are a failed final read: the run is read again every cycle (never
    marked done), and only after writeback.final_counts_max_hours is it quarantined as
    writeback_final_counts too; `writeback --run` then writes MM's corrected counts and resolves both."""
    now = datetime.now(UTC)
    start_run(rig.client, "S")
    rig.client.stop_job_run(StopJobRun(erp_job_operation_run_id="S"))  # MM ended it
    bind_run(rig.store, "S", status="stopped", last=PartCounts(20, 18, 2, 0), final_since=now)
    rig.answer("S", CASES["good > total"])

    def final_since() -> datetime | None:
        with rig.store.session() as session:
            return session.scalars(select(RunBinding.final_counts_since)).one()

    later = rig.cycle(at=now + timedelta(hours=1))  # past the settle window: would be done if plausible
    assert later.implausible == 1 and final_since() is not None
    assert staging_counts(rig.erp) == {}
    given_up = rig.cycle(at=now + timedelta(hours=73))
    assert given_up.final_quarantined == 1 and final_since() is None
    classes = {(e.error_class, e.status) for e in quarantine(rig.store)}
    assert classes == {(IMPLAUSIBLE_CLASS, "open"), (FINAL_COUNTS_CLASS, "open")}
    final = next(e for e in quarantine(rig.store) if e.error_class == FINAL_COUNTS_CLASS)
    assert "goodParts (15) is more than totalParts (10)" in final.message

    rig.plausible("S", total=25, scrap=2)
    fixed = rig.cycle(run_id="S")
    assert fixed.written == 1 and staging_counts(rig.erp) == {"S": (25, 23, 2, 0)}
    assert {e.status for e in quarantine(rig.store)} == {"resolved"}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_dry_run_lists_implausible_runs_and_changes_nothing(rig: Rig) -> None:
    start_run(rig.client, "A")
    bind_run(rig.store, "A")
    rig.answer("A", CASES["fraction"])
    dry = rig.cycle(dry_run=True)
    assert dry.implausible == 1 and [r.mm_run_id for r in dry.implausible_runs()] == ["A"]
    assert quarantine(rig.store) == [] and audits(rig.store) == [] and staging_counts(rig.erp) == {}
