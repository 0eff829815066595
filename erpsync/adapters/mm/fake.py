"""`FakeMachineMetrics`: the simulator's model of MachineMetrics, called in process.

One model of MM, two front doors: the HTTP simulator (erpsync/adapters/mm/simulator/server.py)
and this fake both call `MMModel.call`, so they share the rules (validation, unknown machine,
duplicate start, conflicts, stops, part counts) and the injected faults. What differs is the
door: no socket, no JSON on a wire; a refusal becomes exactly the exception `MMClient` raises for
the same HTTP answer, built by the same table (`errors.error_from_response`).

Not modelled: the client's retries and circuit breaker. A transient answer (5xx, 429, a dropped
connection) is `MMRetryableError` at once, as `MMClient` raises once its retries are used up.
Injected latency is slept for real. Thread-safe: the model locks its state and its fault plan, and
this door keeps no state of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import quote

from erpsync.adapters.mm.client import RUN_ID_PLACEHOLDER, Operation, parse_retry_after
from erpsync.adapters.mm.errors import MMNotFoundError, MMRetryableError, error_from_response
from erpsync.adapters.mm.outgoing import check_import, check_run_id, request_body
from erpsync.adapters.mm.schemas import JobFile, JobRun, StartJobRun, StopJobRun
from erpsync.adapters.mm.simulator.model import MMModel, ModelHelpers
from erpsync.adapters.mm.simulator.wire import Reply
from erpsync.config import MMPaths


class FakeMachineMetrics(ModelHelpers):
    """The `MachineMetrics` port (erpsync/service/ports.py) on an `MMModel`, without HTTP.

    The call log records the method and path `MMClient` would use with ``paths`` (the legacy get
    path, with the run id in it, unless ``paths.get`` has no placeholder).
    """

    def __init__(
        self,
        model: MMModel | None = None,
        *,
        api_key: str | None = None,
        paths: MMPaths | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.model = model or MMModel()
        self._authorization = f"Bearer {self.model.api_key if api_key is None else api_key}"
        self._paths = paths or MMPaths()
        self._sleep = sleep

    def start_job_run(self, request: StartJobRun) -> None:
        """Start a job run; repeating it with the same values is a no-op (see MMClient)."""
        document = json.loads(request_body(request, "start"))
        run_id = request.erp_job_operation_run_id
        state = self.model.state
        self._call("start", "POST", self._paths.start, run_id, lambda: state.start(document))

    def stop_job_run(self, request: StopJobRun) -> None:
        """Stop a job run; stopping a stopped run is a no-op. 404: MMNotFoundError."""
        document = json.loads(request_body(request, "stop"))
        run_id = request.erp_job_operation_run_id
        state = self.model.state
        self._call("stop", "POST", self._paths.stop, run_id, lambda: state.stop(document))

    def get_job_run(self, run_id: str) -> JobRun | None:
        """The run's times and part counts, or None when MM does not have it (404)."""
        check_run_id(run_id)
        template = self._paths.get
        path = (
            template.replace(RUN_ID_PLACEHOLDER, quote(run_id, safe=""))
            if RUN_ID_PLACEHOLDER in template
            else template
        )
        try:
            reply = self._call("get", "GET", path, run_id, lambda: self.model.state.get(run_id))
        except MMNotFoundError:
            return None
        return JobRun.model_validate_json(reply.content())

    def import_jobs(self, job_file: JobFile) -> None:
        """Import a job file; ``auto_archive`` archives jobs not in it. ``filename`` is not kept."""
        check_import(job_file)
        archive = "true" if job_file.auto_archive else "false"
        state = self.model.state
        self._call(
            "import",
            "POST",
            self._paths.import_jobs,
            None,
            lambda: state.import_jobs(job_file.import_type, job_file.content, archive),
        )

    def _call(
        self, operation: Operation, method: str, path: str, run_id: str | None, handle: Callable[[], Reply]
    ) -> Reply:
        """One call through the model; a refusal raised as MMClient raises it for that answer."""
        reply = self.model.call(
            operation,
            method=method,
            path=path,
            run_id=run_id,
            authorization=self._authorization,
            handle=handle,
            wait=self._sleep,
        )
        if reply is None:
            raise MMRetryableError(
                f"MachineMetrics {operation}: the connection closed without an answer",
                operation=operation,
                code="Network",
                run_id=run_id,
            )
        if 200 <= reply.status < 300:
            return reply
        raise error_from_response(
            operation=operation,
            status=reply.status,
            body=reply.content(),
            content_type="application/json; charset=utf-8",
            run_id=run_id,
            retry_after=parse_retry_after(reply.header("Retry-After")),
        )
