"""The MachineMetrics API client: every effect erpsync has on MM goes through `MMClient`.

One call = validate the request, then up to ``max_attempts`` attempts within
``retry_deadline_seconds``. Each attempt takes a concurrency slot (``max_concurrency``) and a
rate-limit slot (``rate_limit_per_second``), passes the circuit breaker, and sends with connect and
read timeouts per socket operation and a wall-clock limit for the whole attempt
(``connect_timeout_seconds + read_timeout_seconds``, never longer than what is left of the
deadline): deadline.py bounds connecting, sending, the status line, the headers and every byte of
the body, so an answer trickled a byte at a time cannot hold a call (code ``Deadline``).

The answer is judged before its status is read (answer_shape.py): only MM's own answer counts.
A response that is not MM's (HTML, a wrong content type, a body that is not JSON, a redirect, a
2xx get that is not a job run) is `MMUnexpectedAnswerError`, retryable, whatever its status: never
a success, a "not found" or a conflict. MM's own answers are classified by the one table in
`errors.STATUS_RESOLUTION`:

- 2xx: done (start/stop/import answer ``null``, an empty body or any JSON; a get, the job run);
- config (401/403/405 with MM's JSON error): `MMConfigError` at once, never retried;
- record (400/404/409/422...): `MMRecordError` / `MMNotFoundError` / `MMConflictError` at once;
- retry (408/429/5xx, connect/read errors, timeouts, the deadline, dropped connections, unexpected
  answers): wait and try again: ``Retry-After`` when the server sends one, else exponential
  backoff with equal jitter (``backoff_initial_seconds`` doubling up to ``backoff_max_seconds``,
  each wait between half and all of that). A wait that would pass the deadline is not taken: the
  call ends with `MMRetryableError` at once, ``retry_after`` set, and a later cycle tries again.

Retrying a start or stop is safe because MM treats a repeated start (same id, same values) and a
repeated stop as no-ops; so an attempt that was applied but whose answer was lost ("apply then
fail") converges on a retry instead of duplicating the run.

The breaker counts consecutive failed attempts (5xx/408/network/deadline/unexpected answers; 429
is neutral, any other answer of MM's means MM is up and resets it); once open, calls fail fast with
`MMCircuitOpenError`, whose message keeps the last failure and where it happened, until
``breaker_reset_seconds`` passed, then one probe decides.

The loop is stamina's (``stamina.retry_context``) with the wait chosen by our hook, so
``stamina.set_testing(True, attempts=n)`` makes waits zero in tests, and stamina's Prometheus
counter (``stamina_retries_total``) sees every retry too. Its structlog hook is switched off: each
retry is logged once, as ``mm.retry`` (operation, run id, error, wait), not twice.

The API key lives in a `SecretStr`, goes on the wire only through `_BearerAuth`, is registered with
the logging scrubber, and appears in no repr, log line or exception.

Per-call CPU matters: a first sync starts thousands of runs from one process, and every
microsecond a call spends on the CPU holds the GIL the other senders wait for (bench/campaign.py,
new-runs). So the fixed URLs are merged with ``base_url`` once, bodies are serialised to JSON bytes
by pydantic in one pass, and requests go straight to the httpx transport (the connection pool):
``httpx.Client.send``'s cookie jar, auth and redirect machinery cost about a quarter of a call's
CPU and MM needs none of it (bearer auth, no cookies, redirects refused). When the environment
names a proxy (``HTTP(S)_PROXY``, ``ALL_PROXY``), every request goes through ``httpx.Client``
instead, which routes it as httpx always does. Judging an answer costs a media-type match (and
nothing more for ``null``), the deadline one clock read per socket operation: about 2 us a call.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import quote
from urllib.request import getproxies

import httpx
import stamina
import structlog
from pydantic import SecretStr

from erpsync import __version__
from erpsync.adapters.mm.answer_shape import ack_problem, error_problem, read_job_run
from erpsync.adapters.mm.deadline import DeadlinePassed, bound, set_attempt_deadline
from erpsync.adapters.mm.errors import (
    MMCircuitOpenError,
    MMConfigError,
    MMError,
    MMNotFoundError,
    MMRetryableError,
    Resolution,
    error_from_response,
    resolve,
    unexpected_answer,
)
from erpsync.adapters.mm.outgoing import check_import, check_run_id, request_body
from erpsync.adapters.mm.resilience import BreakerState, CircuitBreaker, CircuitOpen, RateLimiter
from erpsync.adapters.mm.schemas import JobFile, JobRun, StartJobRun, StopJobRun
from erpsync.config import MMSettings
from erpsync.observability.metrics import CIRCUIT_OPEN, MM_REQUEST_SECONDS, MM_RETRIES
from erpsync.observability.scrub import register_secret

Operation = Literal["start", "stop", "get", "import"]
RUN_ID_PLACEHOLDER: Final = "{erpJobOperationRunId}"
MIN_ATTEMPT_TIMEOUT: Final = 0.05
JSON_BODY: Final = {"Content-Type": "application/json"}

log = structlog.get_logger("erpsync.mm")
_stdlib_log = logging.getLogger("erpsync.mm")  # its level check is cached; a structlog call binds first


@dataclass(frozen=True, slots=True)
class _Call:
    """One call's request and its deadline, as every attempt at it sends them."""

    operation: Operation
    method: str
    url: httpx.URL
    deadline: float  # time.monotonic() by which the call, retries included, gives up
    run_id: str | None
    kwargs: dict[str, Any]  # httpx request arguments: json / content, params, files, headers


class _BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <key>`` to each request; the key never leaves this object."""

    __slots__ = ("_key",)

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def apply(self, request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        return request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self.apply(request)

    def __repr__(self) -> str:
        return "_BearerAuth(**********)"


# one log line per retry (see the module docstring): stamina keeps only its Prometheus counter
stamina.instrumentation.set_on_retry_hooks([stamina.instrumentation.PrometheusOnRetryHook])


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class MMClient:
    """Start, stop and read job runs and import jobs on MachineMetrics. Thread-safe."""

    def __init__(self, settings: MMSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        if settings.api_key is None or not settings.api_key.get_secret_value().strip():
            raise MMConfigError(
                "mm.api_key is not set; set it in the config file, as ERPSYNC_MM__API_KEY, "
                "or point mm.api_key_file at a secret file",
                operation="configure",
            )
        register_secret(settings.api_key.get_secret_value())
        self._settings = settings
        self._auth = _BearerAuth(settings.api_key)
        self._headers = {"User-Agent": f"erpsync/{__version__}", "Accept": "application/json"}
        limits = httpx.Limits(
            max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency
        )
        if transport is None and not any(getproxies().get(s) for s in ("http", "https", "all")):
            transport = httpx.HTTPTransport(limits=limits)  # what httpx.Client would build itself
        # every attempt: connect + send + the whole answer within this (and the call's deadline)
        self._attempt_limit = settings.connect_timeout_seconds + settings.read_timeout_seconds
        # None: the environment names a proxy; httpx.Client applies it (given a transport, it would
        # not) and every request goes through the client
        self._transport = transport
        self._http = httpx.Client(
            base_url=settings.base_url,
            auth=self._auth,
            headers=self._headers,
            timeout=self._timeout(math.inf),
            limits=limits,
            follow_redirects=False,
            transport=transport,
        )
        for used in (transport, self._http._transport, *self._http._mounts.values()):
            bound(used)  # the wall-clock limit under every pool, the environment's proxies' too
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._limiter = RateLimiter(settings.rate_limit_per_second)
        self._breaker = CircuitBreaker(
            settings.breaker_failure_threshold,
            settings.breaker_reset_seconds,
            on_change=lambda is_open: CIRCUIT_OPEN.set(1 if is_open else 0),
        )
        paths = settings.paths
        fixed = [paths.start, paths.stop, paths.import_jobs]
        if RUN_ID_PLACEHOLDER not in paths.get:
            fixed.append(paths.get)
        self._urls = {path: self._absolute(path) for path in fixed}  # merged once

    def __repr__(self) -> str:
        return f"MMClient(base_url={self._settings.base_url!r}, breaker={self.breaker_state!r})"

    # ---- operations -------------------------------------------------------------------------

    def start_job_run(self, request: StartJobRun) -> None:
        """Start a job run; repeating it with the same values is a no-op, so it is safe to retry.

        Raises MMConflictError if MM has the id with other values, MMRecordError (e.g. unknown
        machine) for a bad record, MMConfigError, MMRetryableError.
        """
        body = request_body(request, "start")
        run_id = request.erp_job_operation_run_id
        url = self._url(self._settings.paths.start)
        self._call("start", "POST", url, run_id=run_id, content=body, headers=JSON_BODY)

    def stop_job_run(self, request: StopJobRun) -> None:
        """Stop a job run; stopping a stopped run is a no-op (its end time stays). 404: MMNotFoundError."""
        body = request_body(request, "stop")
        run_id = request.erp_job_operation_run_id
        url = self._url(self._settings.paths.stop)
        self._call("stop", "POST", url, run_id=run_id, content=body, headers=JSON_BODY)

    def get_job_run(self, run_id: str) -> JobRun | None:
        """The run's times and part counts, or None when MM does not have it (404).

        ``mm.paths.get`` either contains ``{erpJobOperationRunId}`` (legacy form, the id goes into
        the path, percent-encoded) or not (current-docs form, the id goes in query ``erpRunId``).
        """
        check_run_id(run_id)
        template = self._settings.paths.get
        if RUN_ID_PLACEHOLDER in template:
            url, params = self._url(template.replace(RUN_ID_PLACEHOLDER, quote(run_id, safe=""))), None
        else:
            url, params = self._url(template), {"erpRunId": run_id}
        try:
            run = self._call("get", "GET", url, run_id=run_id, params=params)
        except MMNotFoundError:
            return None
        assert run is not None  # a 2xx to get is a job run, or MMUnexpectedAnswerError
        return run

    def import_jobs(self, job_file: JobFile) -> None:
        """Upload a job file (multipart ``csvFile``); ``auto_archive`` archives jobs not in it."""
        check_import(job_file)
        self._call(
            "import",
            "POST",
            self._url(self._settings.paths.import_jobs),
            params={"type": job_file.import_type},
            files={"csvFile": (job_file.filename, job_file.content, "text/csv")},
            data={"autoArchive": "true" if job_file.auto_archive else "false"},
        )

    @property
    def breaker_state(self) -> BreakerState:
        return self._breaker.state

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- machinery --------------------------------------------------------------------------

    def _absolute(self, path: str) -> httpx.URL:
        """`path` under ``base_url``, merged exactly as httpx.Client merges a relative URL."""
        base = self._http.base_url
        return base.copy_with(raw_path=base.raw_path + httpx.URL(path).raw_path.lstrip(b"/"))

    def _url(self, path: str) -> httpx.URL:
        return self._urls.get(path) or self._absolute(path)

    def _timeout(self, remaining: float) -> httpx.Timeout:
        s = self._settings
        connect = max(MIN_ATTEMPT_TIMEOUT, min(s.connect_timeout_seconds, remaining))
        read = max(MIN_ATTEMPT_TIMEOUT, min(s.read_timeout_seconds, remaining))
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _backoff(self, retry: int) -> float:
        s = self._settings
        ceiling = min(s.backoff_max_seconds, s.backoff_initial_seconds * 2.0 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _call(
        self,
        operation: Operation,
        method: str,
        url: httpx.URL,
        *,
        run_id: str | None = None,
        **kwargs: Any,
    ) -> JobRun | None:
        """The call, retried as the module docstring says: MM's job run for a get, else None."""
        deadline = time.monotonic() + self._settings.retry_deadline_seconds
        call = _Call(operation, method, url, deadline, run_id, kwargs)
        retries = 0

        def wait_before_retry(exc: Exception) -> bool | float:
            nonlocal retries
            if not isinstance(exc, MMRetryableError) or isinstance(exc, MMCircuitOpenError):
                return False
            if retries + 1 >= self._settings.max_attempts:
                return False
            wait = exc.retry_after if exc.retry_after is not None else self._backoff(retries + 1)
            if time.monotonic() + wait >= deadline:
                log.warning(
                    "mm.giving_up", operation=operation, run_id=run_id, error=str(exc), wait_needed=wait
                )
                return False
            retries += 1
            MM_RETRIES.labels(operation).inc()
            log.info("mm.retry", operation=operation, run_id=run_id, error=str(exc), wait=round(wait, 3))
            return wait

        for attempt in stamina.retry_context(
            on=wait_before_retry, attempts=self._settings.max_attempts, timeout=None
        ):
            with attempt:
                return self._attempt(call)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _attempt(self, call: _Call) -> JobRun | None:
        operation, run_id = call.operation, call.run_id
        remaining = call.deadline - time.monotonic()
        if not self._slots.acquire(timeout=max(0.0, remaining)):
            raise MMRetryableError(
                f"MachineMetrics {operation}: all {self._settings.max_concurrency} connections stayed "
                "busy until the deadline",
                operation=operation,
                code="ClientBusy",
                run_id=run_id,
            )
        try:
            if not self._limiter.acquire(timeout=max(0.0, call.deadline - time.monotonic())):
                raise MMRetryableError(
                    f"MachineMetrics {operation}: client rate limit (mm.rate_limit_per_second = "
                    f"{self._settings.rate_limit_per_second}) leaves no slot before the deadline",
                    operation=operation,
                    code="ClientRateLimited",
                    run_id=run_id,
                )
            response = self._send(call)
        finally:
            self._slots.release()
        return self._settle(call, response)

    def _send(self, call: _Call) -> httpx.Response:
        operation, run_id = call.operation, call.run_id
        try:
            self._breaker.before_call()
        except CircuitOpen as exc:
            raise MMCircuitOpenError(
                f"MachineMetrics {operation}: calls paused for another {exc.retry_in:.1f}s after "
                f"{exc.failures} consecutive failures (a probe is let through after "
                f"mm.breaker_reset_seconds); last: {exc.last or 'not recorded'}",
                operation=operation,
                code="CircuitOpen",
                run_id=run_id,
                retry_after=exc.retry_in,
            ) from None
        started = time.perf_counter()
        now = time.monotonic()
        limit = max(MIN_ATTEMPT_TIMEOUT, min(call.deadline - now, self._attempt_limit))
        try:
            set_attempt_deadline(now + limit)
            response = self._exchange(call.method, call.url, self._timeout(limit), call.kwargs)
        except httpx.RequestError as exc:
            MM_REQUEST_SECONDS.labels(operation, "network").observe(time.perf_counter() - started)
            error = self._network_error(call, exc, limit)
            self._breaker.record_failure(error.cause)
            raise error from exc
        except BaseException:
            self._breaker.record_neutral()
            raise
        finally:
            set_attempt_deadline(None)
        MM_REQUEST_SECONDS.labels(operation, _status_class(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response

    def _network_error(self, call: _Call, exc: httpx.RequestError, limit: float) -> MMRetryableError:
        """No answer: refused, reset, a timeout, or the attempt's wall-clock limit passed."""
        s = self._settings
        if isinstance(exc.__cause__, DeadlinePassed):
            code, cause = (
                "Deadline",
                (
                    f"no complete answer within {limit:.1f}s, the attempt's wall-clock limit ({exc}; "
                    "mm.connect_timeout_seconds + mm.read_timeout_seconds, at most what is left of "
                    f"mm.retry_deadline_seconds = {s.retry_deadline_seconds:g}s) talking to {s.base_url}"
                ),
            )
        else:
            timed_out = isinstance(exc, httpx.TimeoutException)
            code = "Timeout" if timed_out else "Network"
            kind = "timed out" if timed_out else "network error"
            cause = f"{kind} ({type(exc).__name__}: {exc or 'no detail'}) talking to {s.base_url}"
        return MMRetryableError(
            f"MachineMetrics {call.operation}: {cause}",
            operation=call.operation,
            code=code,
            run_id=call.run_id,
            cause=cause,
        )

    def _exchange(
        self, method: str, url: httpx.URL, timeout: httpx.Timeout, kwargs: dict[str, Any]
    ) -> httpx.Response:
        """One request and its whole answer (body read, connection back in the pool)."""
        if self._transport is None:
            return self._http.request(method, url, timeout=timeout, **kwargs)
        extra = kwargs.get("headers")
        request = httpx.Request(
            method,
            url,
            **{**kwargs, "headers": {**self._headers, **extra} if extra else self._headers},
            extensions={"timeout": timeout.as_dict()},
        )
        response = self._transport.handle_request(self._auth.apply(request))
        response.request = request
        try:
            response.read()
        finally:
            response.close()
        return response

    def _settle(self, call: _Call, response: httpx.Response) -> JobRun | None:
        """MM's answer, judged (answer_shape.py) before its status is read: what is not MM's own
        answer is `MMUnexpectedAnswerError`, never a success, a "not found" or a conflict."""
        operation, run_id, status = call.operation, call.run_id, response.status_code
        content_type = response.headers.get("content-type", "")
        if 200 <= status < 300:
            run: JobRun | str | None = None
            if operation == "get":
                run = read_job_run(content_type, response.content)
                why = run if isinstance(run, str) else None
            else:
                why = ack_problem(content_type, response.content)
            if why is None:
                self._breaker.record_success()
                if _stdlib_log.isEnabledFor(logging.DEBUG):  # once per call: skip even the binding
                    log.debug("mm.ok", operation=operation, run_id=run_id, status=status)
                return run if isinstance(run, JobRun) else None
        else:
            why = error_problem(status, content_type, response.content)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if why is not None:
            error: MMError = unexpected_answer(
                operation=operation,
                status=status,
                content_type=content_type,
                body=response.content,
                url=str(call.url.copy_with(query=None)),
                why=why,
                run_id=run_id,
                location=response.headers.get("location") if 300 <= status < 400 else None,
                retry_after=retry_after,
            )
            self._breaker.record_failure(error.cause)
            log.warning("mm.unexpected_answer", operation=operation, status=status, error=str(error))
            raise error
        error = error_from_response(
            operation=operation,
            status=status,
            body=response.content,
            content_type=content_type,
            run_id=run_id,
            retry_after=retry_after,
        )
        resolution = resolve(status)
        if resolution is not Resolution.RETRY:
            self._breaker.record_success()  # MM is up and answering; the record or the setup is wrong
        elif status == 429:
            self._breaker.record_neutral()
        else:
            code = f" {error.code}" if error.code else ""
            self._breaker.record_failure(f"HTTP {status}{code} from {call.url.copy_with(query=None)}")
        if resolution is Resolution.CONFIG:
            log.error("mm.config_error", operation=operation, status=status, error=str(error))
        raise error
