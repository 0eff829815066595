"""The simulator's HTTP front door: routing, request bodies, multipart, control endpoints.

Requests become `MMModel.call`s (erpsync/adapters/mm/simulator/model.py); replies become
responses, and a reply of None closes the connection without a byte of answer. `server.py` owns
the server's lifecycle and explains the choice of ``ThreadingHTTPServer``.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from erpsync.adapters.mm.simulator.wire import Reply, parse_timestamp
from erpsync.config import MMPaths

if TYPE_CHECKING:
    from erpsync.adapters.mm.simulator.server import MMSimulator

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


class Router:
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


def _timestamp(value: Any) -> datetime | None:
    """A control endpoint's optional time (ISO 8601 with a zone); None when not given."""
    if value is None:
        return None
    at = parse_timestamp(value) if isinstance(value, str) else None
    if at is None:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time with a zone")
    return at


def _run_id_of(document: Any) -> str | None:
    value = document.get("erpJobOperationRunId") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SimHTTPServer(ThreadingHTTPServer):
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
    server: SimHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.sim.idle_timeout_seconds)  # idle keep-alive limit
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sim.connection_changed(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim.connection_changed(self.connection, opened=False)

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
        payload = reply.content()
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
            code = "PayloadTooLarge" if exc.status == 413 else "BadRequest"
            self._send(Reply(exc.status, {"code": code, "message": str(exc), "errors": []}))
            return
        if url.path == "/_sim" or url.path.startswith("/_sim/"):
            self._send(self._control(url.path, body))
            return
        with self.server.sim.in_flight():
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
            sim.model.state.log_call(
                method=self.command,
                path=path,
                operation="unknown",
                status=miss.status,
                run_id=None,
                fault=None,
            )
            self._send(miss)
            return
        operation, path_run_id = route
        query = parse_qs(query_string, keep_blank_values=True)
        document = _json_or_invalid(body) if operation in {"start", "stop"} else INVALID_JSON
        reply = sim.model.call(
            operation,
            method=self.command,
            path=path,
            run_id=path_run_id or _first(query, "erpRunId") or _run_id_of(document),
            authorization=self.headers.get("Authorization"),
            handle=lambda: self._operation(operation, path_run_id, query, body, document),
            wait=sim.stopping.wait,
        )
        if reply is None:  # an injected drop: close without a byte of answer
            self.close_connection = True
            return
        self._send(reply)

    def _operation(
        self,
        operation: str,
        path_run_id: str | None,
        query: dict[str, list[str]],
        body: bytes,
        document: Any,
    ) -> Reply:
        state = self.server.sim.model.state
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
            if path == "/_sim/lose_run":
                sim.lose_run(data["run_id"])
                return Reply(200, {"lost": data["run_id"]})
            if path == "/_sim/end_run":
                sim.end_run(data["run_id"], _timestamp(data.get("end_at")))
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
