"""`reconcile`: the pure diff of the ERP's runs against erpsync's bindings (what we told MM), and
the rules that turn it into the actions that make MM match: tickets are placed on machines by the
multi-ticket rule (domain/shop_floor.py), then `Planner` (domain/planner.py) applies the rules
below (`resync_plan` in domain/resync.py plans with the same `Planner`). Nothing here does I/O.
Binding statuses and what each means to the rules are in domain/lifecycle.py (`BindingStatus`).

Rules (tests/unit/test_reconcile.py has one case per rule):

1. A live binding whose ERP run ended -> stop at the ERP end (``now`` if missing), within
   ``[MM start, now]``.
2. An active ERP run without a binding -> start, in setup or production. An ended run without a
   binding is skipped: history is never started-then-stopped into MM.
3. Setup -> production on a live binding -> re-start the same MM run id with
   ``startInSetup=false`` (MM's switch). Production -> setup is never sent: flagged.
4. ERP edits of a live run's job fields -> flagged once (``job_fields_changed``, the new
   fingerprint stored on the binding); MM untouched: a re-start would split the run's counts.
5. Vanished (``snapshot_complete``, a live binding absent from ``desired``, its row not ``held``
   as bad) -> policy ``"stop"``: stop at ``now``; ``"flag"``: flagged once, binding ``vanished``.
   An operation ``exclude`` now rejects is treated the same way (flag kind ``excluded``).
   A vanished or ``unconfirmed`` binding (erpsync gave up on its start and could not read MM:
   domain/give_up.py) is never started again, but it is stopped when its ERP run ends, when a new
   run takes its machine, and (unconfirmed) when the ERP loses the run, as a live one is.
6. One open run per MM machine. Tickets are first placed by the multi-ticket rule
   (domain/shop_floor.py); what still competes is decided here: the latest start wins (ties: the
   greater ``run_key``), losers are stopped or not started, flagged ``superseded``. A new start
   first stops every other run MM has open on its machine, and never starts before a run erpsync
   recorded there ended (``machine_ends``: also runs whose tickets the ERP lost).
7. Machines: ignored -> skipped; blank, or refused by MM (``rejected_machines``) -> quarantined
   with the fix in the reason. Only new starts are checked.
8. Order: by (MM machine, stops before starts, run_key); `Plan.by_machine` gives each machine's
   sequence (machines dispatched concurrently, each in order, across cycles in journal order).
9. Flags never contradict actions: a run with an action gets no ``binding_status`` from a flag,
   and a vanished flag is dropped when the run is stopped anyway.
10. Keys (`identity.idempotency_key`): ``start_run:<id>:setup|production``, ``stop_run:<id>``,
   ``@<generation>`` after a resync re-started the run: each names one action on one MM run.

The no-change path is kept cheap (100,000 runs x 100,000 bindings: see bench/bench_reconcile.py):
no per-run objects, the fingerprint only for live bindings, machine mapping cached per call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime

from erpsync.domain.lifecycle import BoundRun
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperationRun, index_runs
from erpsync.domain.plan import Plan
from erpsync.domain.planner import Planner, VanishedPolicy
from erpsync.domain.shop_floor import shop_floor

__all__ = ["Planner", "VanishedPolicy", "reconcile"]


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
    held: Collection[str] = frozenset(),
    machine_ends: Mapping[str, datetime] | None = None,
) -> Plan:
    """Diff ``desired`` (ERP runs, active and recently ended; a run_key seen twice keeps the later
    run), placed on machines by the multi-ticket rule (domain/shop_floor.py), against ``bindings``
    (by run_key, with every generation of open tickets); ``rejected_machines``: MM ids MM refused;
    ``exclude``: ERP runs that must not be in MM (e.g. excluded operations); ``held``: run keys
    whose rows turned bad this read (their bindings are kept as they are, never vanished);
    ``machine_ends``: per MM machine, the latest end of a run erpsync recorded there, read for the
    machines of new starts: no run starts before it (domain/shop_floor.py)."""
    planner = Planner(
        desired={},
        bindings=bindings,
        source=source,
        mapper=mapper,
        vanished_policy=vanished_policy,
        now=now,
        rejected=frozenset(rejected_machines),
        exclude=exclude,
        held=frozenset(held),
    )
    floor = shop_floor(
        index_runs(desired),
        bindings,
        source=source,
        machine_of=planner.placed_on,
        excluded=planner.excluded,
        now=now,
        machine_ends=machine_ends,
    )
    planner.desired, planner.mm_ids, planner.reasons = floor.runs, floor.mm_ids, floor.reasons
    planner.flags.extend(floor.flags)
    planner.stats.superseded += floor.superseded
    return planner.plan(scan_vanished=snapshot_complete)
