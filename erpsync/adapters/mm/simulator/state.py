"""What the simulated MachineMetrics knows and the rules it answers by: runs, jobs, auth.

HTTP-free and thread-safe (one lock, held only while state changes, never while sleeping). The
model (`model.py`) runs each call through faults, auth and these rules; its two front doors, the
HTTP server (`server.py`) and the in-process fake (erpsync/adapters/mm/fake.py), only translate.

Rules (the documented and the inferred ones are listed in docs/machinemetrics.md):

- Auth: ``Authorization: Bearer <key>``; unknown key -> 401 ``invalid_token``; a key without the
  operation's scope (``erp``; import also accepts ``manager``) -> 403 ``insufficient_scope``.
- Bodies are validated strictly (`wire.py`); all problems come back together as
  ``ValidationError``.
- Unknown ``erpMachineId`` (when a machine set is configured) -> 400 ValidationError
  (``MachineNotFound``).
- Start of a known id: same values -> 200, nothing changes (``startAt`` left out matches any);
  different values -> 409 ``Conflict``; except ``startInSetup`` true -> false with everything else
  equal, which switches the run from setup to production at the time of the request (setup counts
  are kept apart; metrics report production only). Repeating the switch is a no-op.
- A run started in setup with an ``expectedSetupTime`` switches to production by itself
  (`runs.py`); from then on it behaves as if the switch had been sent.
- Start of a new run on a machine with an active run ends that run at the new run's start
  (one job per machine), or, with ``reject_busy_machine``, answers 409.
- Stop: unknown run -> 404 ``NotFound``; a stopped run stays as it is (200, end unchanged);
  ``endAt`` before the run's start -> 400.
- Missing ``startAt``/``endAt`` -> the server's time. Timestamps are kept at milliseconds.
- Running runs make parts (`runs.py`), one per part time: ``expectedPartTime``, else
  ``idealPartTime``, else the imported job's times, else ``default_part_time_ms``.
"""

from __future__ import annotations

import hmac
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from erpsync.adapters.mm.simulator.jobfiles import JobFileError, JobKey, parse_mm_jobs, parse_raw_jobs
from erpsync.adapters.mm.simulator.runs import Counts, PartRules, SimRun, describe
from erpsync.adapters.mm.simulator.wire import (
    IDENTITY_EXEMPT,
    START_FIELDS,
    STOP_FIELDS,
    Reply,
    check_body,
    fmt,
    millis,
    problem,
    validation_error,
)

IMPORT_TYPES: Final = ("mm", "inforVisual", "inforLN")
ERP_SCOPE: Final = "erp"
IMPORT_SCOPES: Final = frozenset({"erp", "manager"})


def _job_record(key: JobKey, **fields: Any) -> dict[str, Any]:
    name, part, operation, lot = key
    return {"name": name, "part": part, "operation": operation, "lot": lot, "archived": False, **fields}


class SimState:
    """The simulated MM company: keys, machines, runs, jobs and the call log."""

    def __init__(
        self,
        *,
        keys: Mapping[str, Collection[str]],
        machines: Iterable[str] | None = None,
        time_scale: float = 1.0,
        scrap_share: float = 0.02,
        nonconform_share: float = 0.01,
        seed: int | None = None,
        default_part_time_ms: int = 60_000,
        reject_busy_machine: bool = False,
        raw_key_columns: int = 2,
        call_log_limit: int = 100_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = {key: frozenset(scopes) for key, scopes in keys.items()}
        self._lock = threading.Lock()
        self.machines: frozenset[str] | None = frozenset(machines) if machines is not None else None
        self.parts = PartRules(time_scale, scrap_share, nonconform_share)
        self.seed = seed
        self.default_part_time_ms = default_part_time_ms
        self.reject_busy_machine = reject_busy_machine
        self.raw_key_columns = raw_key_columns
        self._clock = clock
        self._mono = monotonic
        self._runs: dict[str, SimRun] = {}
        self._active: dict[str, str] = {}  # machine -> run id
        self._jobs: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in IMPORT_TYPES}
        self._calls: deque[dict[str, Any]] = deque(maxlen=call_log_limit)
        self._seq = 0

    # ---- auth ---------------------------------------------------------------------------------

    def authorize(self, header: str | None, operation: str) -> Reply | None:
        """None when the request may go on, else the 401/403 reply."""
        scheme, _, token = (header or "").strip().partition(" ")
        scopes = None
        if scheme.lower() == "bearer" and token.strip():
            for key, key_scopes in self._keys.items():
                if hmac.compare_digest(key.encode(), token.strip().encode()):
                    scopes = key_scopes
        if scopes is None:
            return Reply(
                401,
                {"error": "invalid_token", "error_description": "Invalid token: access token is invalid"},
                (("WWW-Authenticate", 'Bearer error="invalid_token"'),),
            )
        needed = IMPORT_SCOPES if operation == "import" else frozenset({ERP_SCOPE})
        if not scopes & needed:
            scope = " or ".join(sorted(needed))
            return Reply(
                403,
                {"error": "insufficient_scope", "error_description": f"The API key lacks the {scope} scope"},
                (("WWW-Authenticate", f'Bearer error="insufficient_scope", scope="{sorted(needed)[0]}"'),),
            )
        return None

    # ---- job runs -----------------------------------------------------------------------------

    def start(self, body: Any) -> Reply:
        values, errors = check_body(body, START_FIELDS)
        if errors:
            return validation_error(errors)
        machine: str = values["erpMachineId"]
        if self.machines is not None and machine not in self.machines:
            return validation_error(
                [problem("erpMachineId", "MachineNotFound", f"No machine has ERP machine id {machine!r}")]
            )
        with self._lock:
            now, mono = millis(self._clock()), self._mono()
            existing = self._runs.get(values["erpJobOperationRunId"])
            if existing is not None:
                return self._restart(existing, values, now, mono)
            active_id = self._active.get(machine)
            if active_id is not None and self.reject_busy_machine:
                return Reply(
                    409,
                    {
                        "code": "Conflict",
                        "message": f"Machine {machine!r} already runs job run {active_id!r}",
                        "errors": [
                            problem("erpMachineId", "MachineBusy", f"job run {active_id!r} is active")
                        ],
                    },
                )
            run = self._create(values, now, mono)
            if active_id is not None:
                previous = self._runs[active_id]
                self._end(previous, max(run.start_at, previous.start_at), mono, "superseded")
            self._runs[run.run_id] = run
            self._active[machine] = run.run_id
        return Reply(200, None)

    def _restart(self, run: SimRun, values: dict[str, Any], now: datetime, mono: float) -> Reply:
        self.parts.end_setup_if_due(run, mono)
        differing = [k for k in START_FIELDS if k not in IDENTITY_EXEMPT and values[k] != run.values[k]]
        if values["startAt"] is not None and values["startAt"] != run.start_at:
            differing.append("startAt")
        # in setup: startInSetup true repeats the start, false switches to production (if not ended);
        # in production (from the start or switched): startInSetup must be false
        switch = run.in_setup and not values["startInSetup"]
        if (values["startInSetup"] and not run.in_setup) or (switch and run.end_at is not None):
            differing.append("startInSetup")
        if differing:
            return Reply(
                409,
                {
                    "code": "Conflict",
                    "message": f"Job run {run.run_id!r} already exists with different values",
                    "errors": [
                        problem(k, "Conflict", f"{k} differs from the existing job run") for k in differing
                    ],
                },
            )
        if switch:
            self.parts.produce(run, mono)
            run.in_setup = False
            run.production_at, run.production_mono = max(now, run.start_at), mono
        return Reply(200, None)

    def _create(self, values: dict[str, Any], now: datetime, mono: float) -> SimRun:
        run_id = values["erpJobOperationRunId"]
        key: JobKey = (values["jobName"], values["partName"], values["operationName"], values["lotName"])
        job = self._jobs["mm"].get(key)
        if job is None:
            job = self._jobs["mm"][key] = _job_record(
                key,
                description=values["jobOperationDescription"],
                quantity=values["quantityRequired"],
                default_expectedcycletime=values["expectedPartTime"],
                default_idealcycletime=values["idealPartTime"],
                default_setuptime=values["expectedSetupTime"],
                workcenters={},
                created_by="start",
            )
        workcenter = job.get("workcenters", {}).get(values["erpMachineId"], {})
        candidates = (
            values["expectedPartTime"],
            values["idealPartTime"],
            workcenter.get("expectedcycletime"),
            workcenter.get("idealcycletime"),
            job.get("default_expectedcycletime"),
            job.get("default_idealcycletime"),
        )
        part_time = next((c for c in candidates if c), self.default_part_time_ms)
        in_setup = bool(values["startInSetup"])
        start_at = values["startAt"] or now
        return SimRun(
            run_id=run_id,
            machine_id=values["erpMachineId"],
            values=values,
            start_at=start_at,
            received_at=now,
            received_mono=mono,
            part_time_ms=part_time,
            rng=random.Random(f"{self.seed}/{run_id}") if self.seed is not None else random.Random(),
            in_setup=in_setup,
            production_at=None if in_setup else start_at,
            production_mono=None if in_setup else mono,
        )

    def _end(self, run: SimRun, end_at: datetime, mono: float, why: str) -> None:
        self.parts.produce(run, mono)
        run.end_at, run.ended_mono, run.ended_by = end_at, mono, why
        if self._active.get(run.machine_id) == run.run_id:
            del self._active[run.machine_id]

    def stop(self, body: Any) -> Reply:
        values, errors = check_body(body, STOP_FIELDS)
        if errors:
            return validation_error(errors)
        with self._lock:
            now, mono = millis(self._clock()), self._mono()
            run = self._runs.get(values["erpJobOperationRunId"])
            if run is None:
                return Reply(404, {"code": "NotFound", "message": "Job run not found", "errors": []})
            if run.end_at is not None:
                return Reply(200, None)
            end_at = values["endAt"]
            if end_at is not None and end_at < run.start_at:
                return validation_error(
                    [
                        problem(
                            "endAt",
                            "BeforeStartAt",
                            f"endAt is before the job run's startAt {fmt(run.start_at)}",
                        )
                    ]
                )
            self._end(run, end_at or max(now, run.start_at), mono, "stop")
        return Reply(200, None)

    def get(self, run_id: str | None) -> Reply:
        if not run_id:
            return validation_error([problem("erpRunId", "Required", "erpRunId is required")])
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return Reply(404, {"code": "NotFound", "message": "Job run not found", "errors": []})
            self.parts.produce(run, self._mono())
            return Reply(
                200, {"startAt": fmt(run.start_at), "endAt": fmt(run.end_at), "metrics": run.counts.metrics()}
            )

    # ---- what happens in MM without erpsync (tests of drift) -----------------------------------

    def lose(self, run_id: str) -> None:
        """MM forgets the run (a restore, a purge): get answers 404 from now on, a stop too."""
        with self._lock:
            run = self._runs.pop(run_id)
            if self._active.get(run.machine_id) == run_id:
                del self._active[run.machine_id]

    def end_by_hand(self, run_id: str, end_at: datetime | None = None) -> datetime:
        """A person ends the run in MM (default: now); returns its end. An ended run stays as it is."""
        with self._lock:
            run = self._runs[run_id]
            if run.end_at is None:
                now, mono = millis(self._clock()), self._mono()
                end = millis(end_at) if end_at is not None else now
                if end < run.start_at:
                    raise ValueError(f"end {fmt(end)} is before the run's start {fmt(run.start_at)}")
                self._end(run, end, mono, "hand")
            assert run.end_at is not None
            return run.end_at

    # ---- parts ---------------------------------------------------------------------------------

    def set_counts(
        self, run_id: str, *, total: int, good: int | None = None, scrap: int = 0, nonconform: int = 0
    ) -> None:
        """Set a run's production counts exactly; the run makes no more parts by itself after this."""
        good = total - scrap - nonconform if good is None else good
        if min(total, good, scrap, nonconform) < 0:
            raise ValueError("counts must not be negative")
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise KeyError(run_id)
            run.counts = Counts(total=total, good=good, scrap=scrap, nonconform=nonconform)
            run.manual_counts = True

    # ---- imports ------------------------------------------------------------------------------

    def import_jobs(self, import_type: str | None, csv_file: bytes | None, auto_archive: str | None) -> Reply:
        kind = "mm" if import_type is None else import_type
        errors = []
        if kind not in IMPORT_TYPES:
            errors.append(problem("type", "InvalidEnum", f"type must be one of {', '.join(IMPORT_TYPES)}"))
        archive = (auto_archive or "false").strip().lower()
        if archive not in {"true", "false"}:
            errors.append(problem("autoArchive", "InvalidType", "autoArchive must be true or false"))
        if csv_file is None:
            errors.append(
                problem("csvFile", "Required", "csvFile (a multipart/form-data file part) is required")
            )
        if errors:
            return validation_error(errors)
        assert csv_file is not None
        try:
            parsed: dict[Any, dict[str, Any]]
            if kind == "mm":
                parsed = parse_mm_jobs(csv_file)
            else:
                raw = parse_raw_jobs(csv_file, self.raw_key_columns)
                parsed = {key: {"key": list(key), "columns": columns} for key, columns in raw.items()}
        except JobFileError as exc:
            return validation_error([problem("csvFile", "InvalidFile", str(exc), row=exc.row)])
        with self._lock:
            jobs = self._jobs[kind]
            for key, job in parsed.items():
                jobs[key] = {**job, "archived": False}
            if archive == "true":
                for key, job in jobs.items():
                    if key not in parsed:
                        job["archived"] = True
        return Reply(200, None)

    # ---- inspection ---------------------------------------------------------------------------

    def log_call(
        self,
        *,
        method: str,
        path: str,
        operation: str,
        status: int | None,
        run_id: str | None,
        fault: str | None,
    ) -> None:
        with self._lock:
            self._seq += 1
            self._calls.append(
                {
                    "seq": self._seq,
                    "time": fmt(self._clock()),
                    "method": method,
                    "path": path,
                    "operation": operation,
                    "status": status,
                    "run_id": run_id,
                    "fault": fault,
                }
            )

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._calls)

    def runs(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            mono = self._mono()
            for run in self._runs.values():
                self.parts.produce(run, mono)
            return {run_id: describe(run) for run_id, run in self._runs.items()}

    def jobs(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {kind: [dict(job) for job in jobs.values()] for kind, jobs in self._jobs.items()}

    def reset(self) -> None:
        with self._lock:
            self._runs.clear()
            self._active.clear()
            for jobs in self._jobs.values():
                jobs.clear()
            self._calls.clear()
            self._seq = 0
