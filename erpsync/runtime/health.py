"""The health and metrics HTTP endpoint: /healthz, /readyz, /metrics on one small threaded server.

- ``/healthz``: the process is alive and serving (always 200 while it runs).
- ``/readyz``: JSON from the service's readiness callable; 200 when ready, 503 otherwise.
- ``/metrics``: every series of erpsync/observability/metrics.py in the Prometheus text format.

The standard library's server is enough here: a handful of requests a minute from Docker's
HEALTHCHECK and a Prometheus scraper, no framework to keep patched.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from erpsync.observability.scrub import scrub

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReadyState:
    """Whether the instance is ready, and the facts behind the answer (served as JSON)."""

    ready: bool
    detail: Mapping[str, Any] = field(default_factory=dict)


def _handler(readiness: Callable[[], ReadyState]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "erpsync-health"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                self._readyz()
            elif path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _readyz(self) -> None:
            try:
                state = readiness()
                body: dict[str, Any] = {"status": "ready" if state.ready else "not_ready", **state.detail}
                status = HTTPStatus.OK if state.ready else HTTPStatus.SERVICE_UNAVAILABLE
            except Exception as exc:  # a broken check means "not ready", never a dead endpoint
                log.exception("readiness check failed")
                body = {"status": "not_ready", "error": type(exc).__name__}
                status = HTTPStatus.SERVICE_UNAVAILABLE
            payload = json.dumps(body, default=str, sort_keys=True).encode() + b"\n"
            self._send(status, payload, "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            body = scrub(body.decode("utf-8")).encode("utf-8")  # like every other surface
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health request", request=format % args)

    return Handler


class HealthServer:
    """Serves the endpoints from a daemon thread; port 0 picks a free port (see `port`)."""

    def __init__(self, host: str, port: int, readiness: Callable[[], ReadyState]) -> None:
        self.host = host
        self._requested_port = port
        self._readiness = readiness
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the picked one when 0 was asked for); the requested one before start()."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        server = ThreadingHTTPServer((self.host, self._requested_port), _handler(self._readiness))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="erpsync-health", daemon=True
        )
        self._thread.start()
        log.info(
            "health endpoint listening", host=self.host, port=self.port, paths="/healthz /readyz /metrics"
        )

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(2)
