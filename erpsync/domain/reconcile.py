"""`reconcile`: one sync cycle's diff of the ERP's runs against erpsync's bindings.

The rules it applies are listed, and implemented, in domain/planner.py; what it returns is a
`Plan` (domain/plan.py). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime

from erpsync.domain.lifecycle import BoundRun
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperationRun
from erpsync.domain.plan import Plan
from erpsync.domain.planner import Planner, VanishedPolicy, index_runs


def reconcile(
    desired: Iterable[JobOperationRun],
    bindings: Mapping[str, BoundRun],
    *,
    source: str,
    mapper: MachineMapper,
    snapshot_complete: bool,
    vanished_policy: VanishedPolicy,
    now: datetime,
    rejected_machines: Collection[str] = (),
    exclude: Callable[[JobOperationRun], bool] | None = None,
) -> Plan:
    """Diff ``desired`` (ERP runs, active and recently ended) against ``bindings`` (by run_key).

    ``rejected_machines`` are MM machine ids MM refused (unknown ``erpMachineId``); ``exclude``
    says which ERP runs must not be in MM (e.g. excluded operations). If a run_key occurs twice in
    ``desired`` the later one wins (the service appends lookups after the snapshot).
    """
    planner = Planner(
        desired=index_runs(desired),
        bindings=bindings,
        source=source,
        mapper=mapper,
        vanished_policy=vanished_policy,
        now=now,
        rejected=rejected_machines,
        exclude=exclude,
    )
    return planner.plan(scan_vanished=snapshot_complete)
