"""The simulator's HTTP server and `MMSimulator`, the object tests, the demo and the CLI use.

Server stack: the standard library's ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive,
one thread per connection. Why not an ASGI server: the faults must act on the socket itself
(close a connection with no answer, after or before the change was applied), and a blocking
thread per connection makes "sleep 50 ms, then answer" cost nothing to other connections, so 32+
concurrent keep-alive clients with injected latency are served in parallel with no event loop,
no new dependency, and full control over every byte. Sleeps happen outside the state lock;
``TCP_NODELAY`` avoids the Nagle/delayed-ACK stall that otherwise costs ~40 ms per keep-alive
request. Multipart bodies are parsed with the stdlib ``email`` package (exact bytes, defects
reported), so the simulator adds no dependency.

It is a test tool: no TLS, control endpoints without auth under ``/_sim/``, loopback by default
(a warning is logged when bound elsewhere). Control endpoints:

==========================  =====================================================================
GET  /_sim/state            runs, calls, jobs, faults and stats in one document
GET  /_sim/runs|calls|jobs  the same, one part each (also /_sim/faults, /_sim/stats)
POST /_sim/faults           ``{"faults": [{kind, operations, status, retry_after, latency_ms,
                            times, probability}], "seed": 1, "append": false}``
DELETE /_sim/faults         no more faults
POST /_sim/counts           ``{"run_id", "total", "good"?, "scrap"?, "nonconform"?}``
POST /_sim/machines         ``{"machines": ["M1", ...]}`` or ``null`` (= accept any machine)
POST /_sim/reset            forget runs, jobs, calls, faults and stats
==========================  =====================================================================
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from erpsync.adapters.mm.simulator.faults import Fault, FaultPlan
from erpsync.adapters.mm.simulator.state import ERP_SCOPE, Reply, SimState
from erpsync.config import MMPaths

log = structlog.get_logger("erpsync.mm.simulator")

_DEFAULT_PATHS: Final = MMPaths()
RUN_ID_PLACEHOLDER: Final = "{erpJobOperationRunId}"
PROBLEM_PARSING_JSON: Final = Reply(400, {"message": "Problem parsing JSON"})
NOT_FOUND: Final = Reply(404, {"code": "NotFound", "message": "Not Found", "errors": []})
METHOD_NOT_ALLOWED: Final = {"code": "MethodNotAllowed", "message": "Method Not Allowed", "errors": []}


@dataclass(frozen=True)
class SimPaths:
    """Where each operation is served. The get-by-query path is not public: an invented default."""

    start: str = _DEFAULT_PATHS.start
    stop: str = _DEFAULT_PATHS.stop
    get: str = _DEFAULT_PATHS.get
    get_by_query: str = "/erp/jobrun"
    import_jobs: str = _DEFAULT_PATHS.import_jobs


class _Router:
    def __init__(self, paths: SimPaths) -> None:
        if RUN_ID_PLACEHOLDER not in paths.get:
            raise ValueError(f"SimPaths.get must contain {RUN_ID_PLACEHOLDER}")
        before, _, after = paths.get.partition(RUN_ID_PLACEHOLDER)
        self._routes: list[tuple[str, re.Pattern[str], str]] = [
            ("POST", re.compile(re.escape(paths.start)), "start"),
            ("POST", re.compile(re.escape(paths.stop)), "stop"),
            ("GET", re.compile(re.escape(paths.get_by_query)), "get"),
            ("POST", re.compile(re.escape(paths.import_jobs)), "import"),
            ("GET", re.compile(f"{re.escape(before)}(?P<run_id>[^/]+){re.escape(after)}"), "get"),
        ]

    def match(self, method: str, path: str) -> tuple[str, str | None] | set[str] | None:
        """(operation, run id from the path), or the allowed methods (405), or None (404)."""
        allowed = set()
        for route_method, pattern, operation in self._routes:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if route_method == method:
                run_id = found.groupdict().get("run_id")
                return operation, unquote(run_id) if run_id is not None else None
            allowed.add(route_method)
        return allowed or None


def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes] | None:
    """Form fields (first value each) of a multipart/form-data body; None if it is not one."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        return None
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and name not in fields:
            fields[name] = payload if isinstance(payload, bytes) else b""
    return fields


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not JSON")


def _json(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)


INVALID_JSON: Final = object()


def _json_or_invalid(body: bytes) -> Any:
    try:
        return _json(body)
    except ValueError:  # also UnicodeDecodeError
        return INVALID_JSON


def _run_id_of(document: Any) -> str | None:
    value = document.get("erpJobOperationRunId") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], sim: MMSimulator) -> None:
        self.sim = sim
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MMSimulator/1.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.sim.idle_timeout_seconds)  # idle keep-alive limit
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sim._connection(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim._connection(self.connection, opened=False)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the call log (``/_sim/calls``) records every API call."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # ---- plumbing -----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        limit = self.server.sim.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024).split(b";")[0].strip()
                try:
                    length = int(line, 16)
                except ValueError:
                    raise _BodyError(400, "bad chunk size") from None
                if length == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return b"".join(chunks)
                size += length
                if size > limit:
                    raise _BodyError(413, f"request body larger than {limit} bytes")
                chunks.append(self.rfile.read(length))
                self.rfile.readline(8)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise _BodyError(400, "bad Content-Length") from None
        if length < 0 or length > limit:
            raise _BodyError(413, f"request body larger than {limit} bytes")
        return self.rfile.read(length)

    def _send(self, reply: Reply) -> None:
        payload = json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self._send(Reply(exc.status, {"code": "BadRequest", "message": str(exc), "errors": []}))
            return
        if url.path == "/_sim" or url.path.startswith("/_sim/"):
            self._send(self._control(url.path, body))
            return
        with self.server.sim._in_flight():
            try:
                self._api(url.path, url.query, body)
            except OSError:  # the client left first (e.g. its read timeout): nobody to answer
                self.close_connection = True
            except Exception as exc:  # a simulator bug must be loud, not a dropped connection
                log.exception("simulator.bug", path=url.path)
                self.close_connection = True
                self._send(Reply(500, {"code": "SimulatorBug", "message": repr(exc), "errors": []}))

    # ---- the API ------------------------------------------------------------------------------

    def _api(self, path: str, query_string: str, body: bytes) -> None:
        sim = self.server.sim
        route = sim.router.match(self.command, path)
        if not isinstance(route, tuple):
            allow = (("Allow", ", ".join(sorted(route))),) if route else ()
            miss = Reply(405, METHOD_NOT_ALLOWED, allow) if route else NOT_FOUND
            self._finish(path, "unknown", None, miss, None)
            return
        operation, path_run_id = route
        query = parse_qs(query_string, keep_blank_values=True)
        document = _json_or_invalid(body) if operation in {"start", "stop"} else INVALID_JSON
        run_id = path_run_id or _first(query, "erpRunId") or _run_id_of(document)
        latency, fault = sim.faults.before(operation)
        if latency:
            sim._stopping.wait(latency)
        if fault is not None:
            self._finish(path, operation, run_id, self._fault_reply(fault), fault)
            return
        reply = sim.state.authorize(self.headers.get("Authorization"), operation) or self._operation(
            operation, path_run_id, query, body, document
        )
        fault = sim.faults.after(operation) if 200 <= reply.status < 300 else None
        self._finish(path, operation, run_id, self._fault_reply(fault) if fault else reply, fault)

    def _finish(
        self, path: str, operation: str, run_id: str | None, reply: Reply | None, fault: Fault | None
    ) -> None:
        """Log the call, then answer, or (reply None) close the socket without a byte of answer."""
        self.server.sim.state.log_call(
            method=self.command,
            path=path,
            operation=operation,
            status=reply.status if reply is not None else None,
            run_id=run_id,
            fault=fault.kind if fault is not None else None,
        )
        if reply is None:
            self.close_connection = True
            return
        self._send(reply)

    @staticmethod
    def _fault_reply(fault: Fault) -> Reply | None:
        if fault.kind in {"drop", "drop_after_apply"}:
            return None
        if fault.kind == "rate_limit":
            retry_after = f"{fault.retry_after:g}"
            return Reply(
                429,
                {"code": "TooManyRequests", "message": "Rate limit exceeded", "errors": []},
                (("Retry-After", retry_after),),
            )
        status = 500 if fault.kind == "apply_then_fail" else fault.status
        return Reply(
            status, {"code": "InternalServerError", "message": f"Injected {fault.kind}", "errors": []}
        )

    def _operation(
        self,
        operation: str,
        path_run_id: str | None,
        query: dict[str, list[str]],
        body: bytes,
        document: Any,
    ) -> Reply:
        state = self.server.sim.state
        if operation == "get":
            return state.get(path_run_id if path_run_id is not None else _first(query, "erpRunId"))
        if operation == "import":
            fields = _parse_multipart(self.headers.get("Content-Type", ""), body)
            return state.import_jobs(
                _first(query, "type"),
                (fields or {}).get("csvFile"),
                (fields or {}).get("autoArchive", b"false").decode("utf-8", "replace"),
            )
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json" or document is INVALID_JSON:
            return PROBLEM_PARSING_JSON
        return state.start(document) if operation == "start" else state.stop(document)

    # ---- control ------------------------------------------------------------------------------

    def _control(self, path: str, body: bytes) -> Reply:
        sim = self.server.sim
        views = {
            "/_sim/runs": sim.runs,
            "/_sim/calls": sim.calls,
            "/_sim/jobs": sim.jobs,
            "/_sim/faults": sim.faults.snapshot,
            "/_sim/stats": sim.stats,
            "/_sim/state": sim.snapshot,
        }
        try:
            if self.command == "GET" and path in views:
                return Reply(200, views[path]())
            if self.command == "DELETE" and path == "/_sim/faults":
                sim.set_faults()
                return Reply(200, {"faults": []})
            data = _json(body) if body.strip() else {}
            if self.command != "POST" or not isinstance(data, dict):
                return Reply(404, {"error": f"no control endpoint {self.command} {path}"})
            if path == "/_sim/faults":
                sim.set_faults(
                    *data.get("faults", []), seed=data.get("seed"), append=bool(data.get("append"))
                )
                return Reply(200, {"faults": sim.faults.snapshot()})
            if path == "/_sim/counts":
                counts = {k: data[k] for k in ("good", "scrap", "nonconform") if data.get(k) is not None}
                sim.set_counts(data["run_id"], total=data["total"], **counts)
                return Reply(200, sim.runs()[data["run_id"]])
            if path == "/_sim/machines":
                sim.set_machines(data.get("machines"))
                return Reply(200, {"machines": sim.machines})
            if path == "/_sim/reset":
                sim.reset()
                return Reply(200, {"reset": True})
        except KeyError as exc:
            return Reply(400, {"error": f"missing or unknown: {exc}"})
        except (TypeError, ValueError) as exc:
            return Reply(400, {"error": str(exc)})
        return Reply(404, {"error": f"no control endpoint {self.command} {path}"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MMSimulator:
    """A strict, stateful MachineMetrics API on a real loopback HTTP port; see the package docs.

    ``machines`` = the known ERP machine ids (None: any id is accepted). ``extra_keys`` maps more
    API keys to their scopes (e.g. ``{"report-only": {"reporting"}}`` to provoke 403).
    """

    def __init__(
        self,
        api_key: str = "sim-key",
        host: str = "127.0.0.1",
        port: int = 0,
        machines: Iterable[str] | None = None,
        time_scale: float = 1.0,
        scrap_share: float = 0.02,
        nonconform_share: float = 0.01,
        seed: int | None = None,
        *,
        paths: SimPaths | None = None,
        extra_keys: Mapping[str, Collection[str]] | None = None,
        faults: Iterable[Fault] = (),
        default_part_time_ms: int = 60_000,
        reject_busy_machine: bool = False,
        raw_key_columns: int = 2,
        max_body_bytes: int = 10 * 1024 * 1024,
        idle_timeout_seconds: float = 30.0,
        call_log_limit: int = 100_000,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.paths = paths or SimPaths()
        self.router = _Router(self.paths)
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_seconds = idle_timeout_seconds
        self.state = SimState(
            keys={api_key: {ERP_SCOPE}, **(extra_keys or {})},
            machines=machines,
            time_scale=time_scale,
            scrap_share=scrap_share,
            nonconform_share=nonconform_share,
            seed=seed,
            default_part_time_ms=default_part_time_ms,
            reject_busy_machine=reject_busy_machine,
            raw_key_columns=raw_key_columns,
            call_log_limit=call_log_limit,
        )
        self.faults = FaultPlan(faults, seed=seed)
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stats = {"connections_opened": 0, "requests": 0, "in_flight": 0, "peak_in_flight": 0}

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        if not is_loopback(self.host):
            log.warning(
                "simulator.not_loopback", host=self.host, note="a test tool: no TLS, /_sim/ has no auth"
            )
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="mm-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # wake threads parked on idle keep-alive connections
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- test hooks ---------------------------------------------------------------------------

    def set_faults(
        self, *faults: Fault | Mapping[str, Any], seed: int | None = None, append: bool = False
    ) -> None:
        """Replace (or with ``append``, extend) the active faults; ``seed`` re-seeds their draws."""
        rules = [f if isinstance(f, Fault) else Fault.from_dict(f) for f in faults]
        self.faults.set(rules, seed=seed, append=append)

    def set_counts(
        self, run_id: str, *, total: int, good: int | None = None, scrap: int = 0, nonconform: int = 0
    ) -> None:
        """Set a run's production counts exactly (``good`` defaults to total - scrap - nonconform)."""
        self.state.set_counts(run_id, total=total, good=good, scrap=scrap, nonconform=nonconform)

    def set_machines(self, machines: Iterable[str] | None) -> None:
        self.state.machines = frozenset(machines) if machines is not None else None

    @property
    def machines(self) -> list[str] | None:
        return sorted(self.state.machines) if self.state.machines is not None else None

    def runs(self) -> dict[str, dict[str, Any]]:
        return self.state.runs()

    def calls(self) -> list[dict[str, Any]]:
        return self.state.calls()

    def jobs(self) -> dict[str, list[dict[str, Any]]]:
        return self.state.jobs()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "connections_open": len(self._sockets)}

    def snapshot(self) -> dict[str, Any]:
        return {
            "runs": self.runs(),
            "calls": self.calls(),
            "jobs": self.jobs(),
            "faults": self.faults.snapshot(),
            "stats": self.stats(),
        }

    def reset(self) -> None:
        self.state.reset()
        self.faults.set([])
        with self._lock:
            self._stats.update(requests=0, peak_in_flight=self._stats["in_flight"])

    # ---- bookkeeping used by the handler ------------------------------------------------------

    def _connection(self, sock: socket.socket, *, opened: bool) -> None:
        with self._lock:
            if opened:
                self._sockets.add(sock)
                self._stats["connections_opened"] += 1
            else:
                self._sockets.discard(sock)

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        with self._lock:
            self._stats["requests"] += 1
            self._stats["in_flight"] += 1
            self._stats["peak_in_flight"] = max(self._stats["peak_in_flight"], self._stats["in_flight"])
        try:
            yield
        finally:
            with self._lock:
                self._stats["in_flight"] -= 1
