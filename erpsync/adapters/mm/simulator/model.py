"""`MMModel`: the one model of MachineMetrics, behind two front doors.

A call meets, in order: injected faults before handling (latency, error, rate limit, drop), auth,
the rules of `state.SimState`, injected faults after a successful handling (apply-then-fail,
drop-after-apply), and the call log. The HTTP server (`server.py`) and the in-process fake
(erpsync/adapters/mm/fake.py) both call `MMModel.call`; they differ only in how a request arrives
and how the `Reply` leaves (bytes on a socket, or a return value and MMClient's exceptions), so a
test against the fake sees what a test against the simulator sees.

`ModelHelpers` is the test API both front doors share: faults, counts, machines, what MM holds, and
what happens in MM without erpsync (a run lost, a run ended by hand).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, TypedDict, Unpack

from erpsync.adapters.mm.simulator.faults import Fault, FaultPlan
from erpsync.adapters.mm.simulator.state import ERP_SCOPE, SimState
from erpsync.adapters.mm.simulator.wire import Reply

DEFAULT_API_KEY: Final = "sim-key"


def fault_reply(fault: Fault) -> Reply | None:
    """What an injected fault answers; None: the connection closes without an answer."""
    if fault.kind in {"drop", "drop_after_apply"}:
        return None
    if fault.kind == "rate_limit":
        return Reply(
            429,
            {"code": "TooManyRequests", "message": "Rate limit exceeded", "errors": []},
            (("Retry-After", f"{fault.retry_after:g}"),),
        )
    status = 500 if fault.kind == "apply_then_fail" else fault.status
    return Reply(status, {"code": "InternalServerError", "message": f"Injected {fault.kind}", "errors": []})


class ModelOptions(TypedDict, total=False):
    """How the simulated company behaves (`SimState`'s options; its defaults apply)."""

    machines: Iterable[str] | None
    time_scale: float
    scrap_share: float
    nonconform_share: float
    seed: int | None
    default_part_time_ms: int
    reject_busy_machine: bool
    raw_key_columns: int
    call_log_limit: int


class MMModel:
    """The simulated MM company (`state`) and the faults injected between it and erpsync.

    ``machines`` = the known ERP machine ids (None: any id is accepted). ``extra_keys`` maps more
    API keys to their scopes (e.g. ``{"report-only": {"reporting"}}`` to provoke 403).
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        extra_keys: Mapping[str, Collection[str]] | None = None,
        faults: Iterable[Fault] = (),
        **options: Unpack[ModelOptions],
    ) -> None:
        self.api_key = api_key
        self.state = SimState(keys={api_key: {ERP_SCOPE}, **(extra_keys or {})}, **options)
        self.faults = FaultPlan(faults, seed=options.get("seed"))

    def call(
        self,
        operation: str,
        *,
        method: str,
        path: str,
        run_id: str | None,
        authorization: str | None,
        handle: Callable[[], Reply],
        wait: Callable[[float], object],
    ) -> Reply | None:
        """One API call through faults, auth and `handle` (the rule), logged; None = no answer.

        ``wait`` takes injected latency (the server's wait wakes up when it stops).
        """
        latency, fault = self.faults.before(operation)
        if latency:
            wait(latency)
        if fault is None:
            reply = self.state.authorize(authorization, operation) or handle()
            fault = self.faults.after(operation) if 200 <= reply.status < 300 else None
        answer = fault_reply(fault) if fault is not None else reply
        self.state.log_call(
            method=method,
            path=path,
            operation=operation,
            status=answer.status if answer is not None else None,
            run_id=run_id,
            fault=fault.kind if fault is not None else None,
        )
        return answer


class ModelHelpers:
    """The test API of a front door to an `MMModel`: set faults, counts, machines; read runs, calls."""

    model: MMModel

    @property
    def api_key(self) -> str:
        """The key the model accepts with the erp scope."""
        return self.model.api_key

    @property
    def faults(self) -> FaultPlan:
        return self.model.faults

    def set_faults(
        self, *faults: Fault | Mapping[str, Any], seed: int | None = None, append: bool = False
    ) -> None:
        """Replace (or with ``append``, extend) the active faults; ``seed`` re-seeds their draws."""
        rules = [f if isinstance(f, Fault) else Fault.from_dict(f) for f in faults]
        self.model.faults.set(rules, seed=seed, append=append)

    def set_counts(
        self, run_id: str, *, total: int, good: int | None = None, scrap: int = 0, nonconform: int = 0
    ) -> None:
        """Set a run's production counts exactly (``good`` defaults to total - scrap - nonconform)."""
        self.model.state.set_counts(run_id, total=total, good=good, scrap=scrap, nonconform=nonconform)

    def lose_run(self, run_id: str) -> None:
        """MM loses the run (a restore, a purge): it answers 404 for it from now on."""
        self.model.state.lose(run_id)

    def end_run(self, run_id: str, end_at: datetime | None = None) -> datetime:
        """A person ends the run by hand in MM (at `end_at`, default now); returns its end."""
        return self.model.state.end_by_hand(run_id, end_at)

    def set_machines(self, machines: Iterable[str] | None) -> None:
        """The known ERP machine ids; None accepts any."""
        self.model.state.machines = frozenset(machines) if machines is not None else None

    @property
    def machines(self) -> list[str] | None:
        machines = self.model.state.machines
        return sorted(machines) if machines is not None else None

    def runs(self) -> dict[str, dict[str, Any]]:
        return self.model.state.runs()

    def calls(self) -> list[dict[str, Any]]:
        return self.model.state.calls()

    def jobs(self) -> dict[str, list[dict[str, Any]]]:
        return self.model.state.jobs()

    def reset(self) -> None:
        """Forget runs, jobs, calls and faults."""
        self.model.state.reset()
        self.model.faults.set([])
