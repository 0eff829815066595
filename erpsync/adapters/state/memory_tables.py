"""erpsync's state tables in memory: the store behind the in-memory unit of work (the fake).

Rows are plain dicts keyed by the SQL column names of adapters/state/tables.py, so a fake
repository reads like its SQL twin and a test can assert on the same column names. One lock
serialises units of work (SQLite's one-writer rule); a unit of work that fails restores the
snapshot it started from, so a rollback leaves nothing behind.
"""

from __future__ import annotations

import copy
import enum
import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table

from erpsync.adapters.state.tables import Base, utcnow

Row = dict[str, Any]


def new_row(model: type[Base], values: Mapping[str, Any]) -> Row:
    """A row of `model`'s table: every column, its default where `values` has none, as SQL would.

    Enum members are stored as their plain string values, as a SQL column hands them back.
    """
    row: Row = {}
    for column in cast(Table, model.__table__).c:
        default = column.default
        if column.key in values:
            value = values[column.key]
            row[column.key] = str(value) if isinstance(value, enum.Enum) else value
        elif default is not None and getattr(default, "is_callable", False):
            row[column.key] = utcnow()  # the tables' only callable default
        else:
            row[column.key] = getattr(default, "arg", None)
    return row


_TABLES = ("actions", "bindings", "quarantine", "audit", "machines", "cycles", "checkpoints", "sink_counts")


@dataclass
class MemoryTables:
    """Every state table, keyed the way its SQL twin is looked up."""

    actions: dict[int, Row] = field(default_factory=dict)  # erpsync_action by id
    bindings: dict[str, Row] = field(default_factory=dict)  # erpsync_run_binding by mm_run_id
    quarantine: dict[int, Row] = field(default_factory=dict)  # erpsync_quarantine by id
    audit: list[Row] = field(default_factory=list)  # erpsync_audit in id order
    machines: dict[str, Row] = field(default_factory=dict)  # erpsync_machine by erp_machine
    cycles: dict[int, Row] = field(default_factory=dict)  # erpsync_cycle by id
    checkpoints: dict[tuple[str, str], Row] = field(default_factory=dict)  # by (source, stream)
    sink_counts: dict[tuple[int, str], Row] = field(default_factory=dict)  # by (binding_id, sink)
    lease_token: int | None = None  # the live leader term's fencing token
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def next_id(self) -> int:
        """A fresh id for any table (ids are unique across tables, which no test may rely on)."""
        return next(self._ids)

    def snapshot(self) -> dict[str, Any]:
        """The tables' rows; not the lease, which the leader changes in transactions of its own."""
        return {name: copy.deepcopy(getattr(self, name)) for name in _TABLES}

    def restore(self, snapshot: dict[str, Any]) -> None:
        for name, value in snapshot.items():
            setattr(self, name, value)
