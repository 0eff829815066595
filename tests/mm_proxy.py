"""A misbehaving loopback HTTP proxy in front of the MM simulator: what a wrong host, a captive
portal, a gateway or a slow link answers instead of MachineMetrics.

It is a real HTTP server (erpsync talks to it over loopback like to MM); by default it forwards
every request to the simulator unchanged. Armed `Rule`s change what comes back:

- ``when="instead"``: answer without forwarding (MM never sees the request), e.g. an HTML 200 from
  a web app on the wrong host, or a gateway's HTML 404;
- ``when="after"``: forward (MM applies the request), then replace its answer: the "MM did it but
  the answer was lost or mangled" cases (ghost start, a 409 after a switch MM may have taken);
- ``trickle_seconds``: send the answer (status line, headers and body) one byte every that many
  seconds, a slow link or a stuck proxy; combined with either mode. ``trickle_body_only``: the
  status line and headers at once, then the body a byte at a time.

Rules match an operation (``start``, ``stop``, ``get``, ``import``, told by method and path, or
None for every one), optionally only requests their ``predicate`` accepts (the operation and the
request body: e.g. only the setup -> production switch of a run), and fire for the next ``times``
matching calls (None: until cleared). ``passthrough`` with ``when="after"`` keeps MM's own answer
(a slow link trickling the real thing). What
the proxy did is kept in ``calls`` so tests can assert what MM did or did not receive.

Used by the MM-answers tests (issue #15) and the reliability campaign; never a mock of erpsync's
own modules.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

Operation = Literal["start", "stop", "get", "import"]

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Welcome</title></head>"
    b"<body><h1>It works!</h1><p>This is not the API you are looking for.</p></body></html>"
)
HTML = "text/html; charset=utf-8"
JSON = "application/json"


@dataclass
class Rule:
    """One armed misbehaviour; see the module docstring."""

    operation: Operation | None = None
    when: Literal["instead", "after"] = "instead"
    status: int = 200
    body: bytes = HTML_PAGE
    content_type: str | None = HTML
    times: int | None = None
    trickle_seconds: float = 0.0
    trickle_body_only: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # more headers, e.g. a redirect's Location
    predicate: Callable[[Operation, bytes], bool] | None = None  # also judged by the request body
    passthrough: bool = False  # when="after": MM's own status, headers and body (trickled if asked)
    fired: int = field(default=0, compare=False)

    def matches(self, operation: Operation, body: bytes = b"") -> bool:
        return (
            (self.operation is None or self.operation == operation)
            and (self.times is None or self.fired < self.times)
            and (self.predicate is None or self.predicate(operation, body))
        )


@dataclass(frozen=True)
class ProxyCall:
    """One request the proxy saw: its operation, whether MM got it, and the status answered."""

    operation: Operation
    path: str
    forwarded: bool
    status: int
    rule: Rule | None


def operation_of(method: str, path: str) -> Operation:
    """The MM operation of a request, from its method and path (default and custom path tables)."""
    if method == "GET":
        return "get"
    tail = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()
    if "stop" in tail:
        return "stop"
    if "import" in tail:
        return "import"
    return "start"


class MisbehavingProxy:
    """Start with ``with MisbehavingProxy(sim.base_url) as proxy:``; point mm.base_url at ``proxy.url``."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream_host = parts.hostname or "127.0.0.1"
        self._upstream_port = parts.port or 80
        self._upstream_prefix = parts.path.rstrip("/")
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.calls: list[ProxyCall] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

            def do_DELETE(self) -> None:
                proxy._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mm-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self._upstream_prefix}"

    def arm(self, *rules: Rule) -> None:
        """Add rules (checked in order; the first that matches answers)."""
        with self._lock:
            self._rules.extend(rules)

    def clear(self) -> None:
        """Back to a faithful proxy: every request forwarded, every answer passed on."""
        with self._lock:
            self._rules.clear()

    def seen(self, operation: Operation) -> list[ProxyCall]:
        with self._lock:
            return [c for c in self.calls if c.operation == operation]

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- machinery --------------------------------------------------------------------------

    def _take_rule(self, operation: Operation, body: bytes) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(operation, body):
                    rule.fired += 1
                    return rule
            return None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        operation = operation_of(request.command, request.path)
        rule = self._take_rule(operation, body)
        forwarded = rule is None or rule.when == "after"
        status, headers, answer = 0, [("Content-Type", JSON)], b""
        if forwarded:
            try:
                status, headers, answer = self._forward(request, body)
            except (OSError, http.client.HTTPException):  # MM dropped it: so does the proxy
                with self._lock:
                    self.calls.append(ProxyCall(operation, request.path, True, 0, rule))
                request.close_connection = True
                return
        if rule is not None and not (forwarded and rule.passthrough):
            status, answer = rule.status, rule.body
            headers = [("Content-Type", rule.content_type)] if rule.content_type else []
            headers += list(rule.headers)
        with self._lock:
            self.calls.append(ProxyCall(operation, request.path, forwarded, status, rule))
        self._answer(request, status, headers, answer, rule)

    def _forward(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection(self._upstream_host, self._upstream_port, timeout=30)
        try:
            passed = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")
            }
            upstream.request(request.command, request.path, body=body, headers=passed)
            response = upstream.getresponse()
            data = response.read()
            keep = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server")
            ]
            return response.status, keep, data
        finally:
            upstream.close()

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        rule: Rule | None,
    ) -> None:
        head = [f"HTTP/1.1 {status} {http.client.responses.get(status, 'Status')}"]
        head += [f"{k}: {v}" for k, v in headers]
        head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        data = "\r\n".join(head).encode("latin-1") + body
        request.close_connection = True
        trickle_seconds = rule.trickle_seconds if rule else 0.0
        at_once = len(data) - len(body) if rule and rule.trickle_body_only else 0
        try:
            if trickle_seconds <= 0:
                request.wfile.write(data)
                request.wfile.flush()
                return
            request.wfile.write(data[:at_once])
            for index in range(at_once, len(data)):
                request.wfile.write(data[index : index + 1])
                request.wfile.flush()
                time.sleep(trickle_seconds)
        except OSError:  # the client gave up (its deadline): nothing more to send
            return
