"""A wall-clock limit on every MM attempt: connect, send, status line, headers and the whole body.

httpx's timeouts apply to each socket operation, so a server that trickles one byte a second never
trips a read timeout and holds a call (and a cycle, and a shutdown) for ever (issue #15 case 5).
The client sets the attempt's deadline (a ``time.monotonic()`` instant) for the current thread
around each exchange (`set_attempt_deadline`); `DeadlineBackend` wraps httpcore's network backend and
clips every socket operation's timeout (connect, TLS handshake, each write and each read) to what
is left of it, and refuses to start one once it has passed. Since every byte of the answer comes
through those reads, no status line, header or body can outlast the deadline by more than the
clock's resolution. The cost is one clock read per socket operation; without a deadline set
(another caller of the same pool) the timeouts pass unchanged.

Not bounded: the name lookup inside ``socket.create_connection`` (the resolver has no timeout).
"""

from __future__ import annotations

import math
import threading
import time
import typing
from collections.abc import Iterable
from typing import Final

import httpcore
import httpx

_local = threading.local()


class DeadlinePassed(httpcore.TimeoutException):
    """The attempt's wall-clock deadline passed (httpx raises it as a `httpx.TimeoutException`,
    with this as its ``__cause__``)."""


def _left() -> float:
    deadline: float | None = getattr(_local, "deadline", None)
    return math.inf if deadline is None else deadline - time.monotonic()


def _clip(timeout: float | None, doing: str) -> float | None:
    left = _left()
    if left == math.inf:
        return timeout
    if left <= 0:
        raise DeadlinePassed(f"it passed before {doing}")
    return left if timeout is None else min(timeout, left)


def set_attempt_deadline(deadline: float | None) -> None:
    """Bound this thread's socket operations to ``deadline`` (a time.monotonic() instant); None:
    unbounded again. The client sets it before an exchange and clears it after, in a finally."""
    _local.deadline = deadline


def _timed_out(exc: httpcore.TimeoutException, doing: str) -> httpcore.TimeoutException:
    """A socket timeout that ended at the deadline is the deadline's."""
    if _left() <= 0:
        return DeadlinePassed(f"it passed while {doing}")
    return exc


class _Stream(httpcore.NetworkStream):
    __slots__ = ("_stream",)

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._stream.read(max_bytes, _clip(timeout, "reading the answer"))
        except httpcore.ReadTimeout as exc:
            raise _timed_out(exc, "reading the answer") from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._stream.write(buffer, _clip(timeout, "sending the request"))
        except httpcore.WriteTimeout as exc:
            raise _timed_out(exc, "sending the request") from None

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            tls = self._stream.start_tls(ssl_context, server_hostname, _clip(timeout, "the TLS handshake"))
        except httpcore.ConnectTimeout as exc:
            raise _timed_out(exc, "the TLS handshake") from None
        return _Stream(tls)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's backend (``inner``), every operation bounded by the thread's attempt deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            stream = self._inner.connect_tcp(
                host, port, _clip(timeout, "connecting"), local_address, socket_options
            )
        except httpcore.ConnectTimeout as exc:
            raise _timed_out(exc, "connecting") from None
        return _Stream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _clip(timeout, "connecting"), socket_options)
        return _Stream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


POOL_TYPES: Final = (httpcore.ConnectionPool,)  # HTTPProxy and SOCKSProxy are ConnectionPools


def bound(transport: httpx.BaseTransport | None) -> bool:
    """Put `DeadlineBackend` under an httpx transport's connection pool; False if it has none
    (a test's MockTransport). httpx does not expose the pool's backend, hence the private names."""
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, POOL_TYPES):
        return False
    backend = pool._network_backend
    if not isinstance(backend, DeadlineBackend):
        pool._network_backend = DeadlineBackend(backend)
    return True
