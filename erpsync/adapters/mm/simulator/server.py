"""`MMSimulator`: the model of MM (`model.py`) served over HTTP; what tests, the demo and the CLI use.

Server stack: the standard library's ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive,
one thread per connection. Why not an ASGI server: the faults must act on the socket itself
(close a connection with no answer, after or before the change was applied), and a blocking
thread per connection makes "sleep 50 ms, then answer" cost nothing to other connections, so 32+
concurrent keep-alive clients with injected latency are served in parallel with no event loop,
no new dependency, and full control over every byte. Sleeps happen outside the state lock;
``TCP_NODELAY`` avoids the Nagle/delayed-ACK stall that otherwise costs ~40 ms per keep-alive
request. Multipart bodies are parsed with the stdlib ``email`` package (exact bytes, defects
reported), so the simulator adds no dependency. Request handling is in `handler.py`.

It is a test tool: no TLS, control endpoints without auth under ``/_sim/``, loopback by default
(a warning is logged when bound elsewhere). Control endpoints:

==========================  =====================================================================
GET  /_sim/state            runs, calls, jobs, faults and stats in one document
GET  /_sim/runs|calls|jobs  the same, one part each (also /_sim/faults, /_sim/stats)
POST /_sim/faults           ``{"faults": [{kind, operations, status, retry_after, latency_ms,
                            times, probability}], "seed": 1, "append": false}``
DELETE /_sim/faults         no more faults
POST /_sim/counts           ``{"run_id", "total", "good"?, "scrap"?, "nonconform"?}``
POST /_sim/lose_run         ``{"run_id"}``: MM loses the run (404 from now on), as after a restore
POST /_sim/end_run          ``{"run_id", "end_at"?}``: a person ends the run by hand in MM (default
                            now; an ended run stays as it is)
POST /_sim/machines         ``{"machines": ["M1", ...]}`` or ``null`` (= accept any machine)
POST /_sim/reset            forget runs, jobs, calls, faults and stats
==========================  =====================================================================
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, Self, Unpack

import structlog

from erpsync.adapters.mm.simulator.faults import Fault
from erpsync.adapters.mm.simulator.handler import Router, SimHTTPServer, SimPaths
from erpsync.adapters.mm.simulator.model import DEFAULT_API_KEY, MMModel, ModelHelpers, ModelOptions

log = structlog.get_logger("erpsync.mm.simulator")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MMSimulator(ModelHelpers):
    """A strict, stateful MachineMetrics API on a real loopback HTTP port; see the package docs.

    The model's options (machines, keys, time scale, faults...) are `MMModel`'s; ``model`` is the
    model itself: given as ``model``, it is served as it is (the model options are then unused), so
    the simulator and a `FakeMachineMetrics` (erpsync/adapters/mm/fake.py) can share one.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        paths: SimPaths | None = None,
        extra_keys: Mapping[str, Collection[str]] | None = None,
        faults: Iterable[Fault] = (),
        max_body_bytes: int = 10 * 1024 * 1024,
        idle_timeout_seconds: float = 30.0,
        model: MMModel | None = None,
        **options: Unpack[ModelOptions],
    ) -> None:
        self.model = model or MMModel(api_key, extra_keys=extra_keys, faults=faults, **options)
        self.host = host
        self.paths = paths or SimPaths()
        self.router = Router(self.paths)
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_seconds = idle_timeout_seconds
        self.stopping = threading.Event()  # set while stopping: wakes injected latency up
        self._requested_port = port
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
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
        self.stopping.clear()
        self._server = SimHTTPServer((self.host, self._requested_port), self)
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
        self.stopping.set()
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

    # ---- test hooks (the rest are ModelHelpers') ---------------------------------------------

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
        """Forget runs, jobs, calls and faults, and the request statistics."""
        super().reset()
        with self._lock:
            self._stats.update(requests=0, peak_in_flight=self._stats["in_flight"])

    # ---- bookkeeping used by the handler ------------------------------------------------------

    def connection_changed(self, sock: socket.socket, *, opened: bool) -> None:
        with self._lock:
            if opened:
                self._sockets.add(sock)
                self._stats["connections_opened"] += 1
            else:
                self._sockets.discard(sock)

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._lock:
            self._stats["requests"] += 1
            self._stats["in_flight"] += 1
            self._stats["peak_in_flight"] = max(self._stats["peak_in_flight"], self._stats["in_flight"])
        try:
            yield
        finally:
            with self._lock:
                self._stats["in_flight"] -= 1
