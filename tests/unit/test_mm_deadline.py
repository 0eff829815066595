"""The attempt deadline under httpcore's pool (erpsync/adapters/mm/deadline.py), on a recording
stand-in for httpcore's own network backend (the real sockets: tests/integration/test_mm_deadline.py)."""

from __future__ import annotations

import time
import typing
from collections.abc import Iterator

import httpcore
import httpx
import pytest

from erpsync.adapters.mm.deadline import DeadlineBackend, DeadlinePassed, bound, set_attempt_deadline


class Recorder(httpcore.NetworkStream, httpcore.NetworkBackend):
    """Records the timeout of every operation; waits ``delay``, then raises ``fail`` if set."""

    def __init__(self) -> None:
        self.timeouts: list[tuple[str, float | None]] = []
        self.fail: type[Exception] | None = None
        self.delay = 0.0

    def _do(self, what: str, timeout: float | None) -> None:
        self.timeouts.append((what, timeout))
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail("timed out")

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        self._do("connect", timeout)
        return self

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._do("read", timeout)
        return b"x"

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._do("write", timeout)

    def start_tls(
        self, ssl_context: typing.Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        self._do("tls", timeout)
        return self


@pytest.fixture
def inner() -> Iterator[Recorder]:
    yield Recorder()
    set_attempt_deadline(None)


def test_without_a_deadline_timeouts_pass_unchanged(inner: Recorder) -> None:
    stream = DeadlineBackend(inner).connect_tcp("h", 1, timeout=5)
    stream.write(b"GET", timeout=15)
    stream.read(10, timeout=None)
    assert inner.timeouts == [("connect", 5), ("write", 15), ("read", None)]


def test_every_operation_is_clipped_to_what_is_left(inner: Recorder) -> None:
    set_attempt_deadline(time.monotonic() + 2)
    stream = DeadlineBackend(inner).connect_tcp("h", 1, timeout=5)
    tls = stream.start_tls(None, "h", timeout=5)
    tls.write(b"GET", timeout=15)
    tls.read(10, timeout=None)  # no timeout of its own: the deadline's
    tls.read(10, timeout=0.5)  # a shorter timeout of its own stays
    assert [what for what, _ in inner.timeouts] == ["connect", "tls", "write", "read", "read"]
    assert all(t is not None and 1.5 < t <= 2 for _, t in inner.timeouts[:4]), inner.timeouts
    assert inner.timeouts[4] == ("read", 0.5)


def test_past_the_deadline_nothing_more_is_started(inner: Recorder) -> None:
    stream = DeadlineBackend(inner).connect_tcp("h", 1, timeout=5)
    set_attempt_deadline(time.monotonic() - 0.001)
    with pytest.raises(DeadlinePassed, match="it passed before reading the answer"):
        stream.read(10, timeout=5)
    with pytest.raises(DeadlinePassed, match="before sending the request"):
        stream.write(b"x", timeout=5)
    with pytest.raises(DeadlinePassed, match="before connecting"):
        DeadlineBackend(inner).connect_tcp("h", 1, timeout=5)
    assert inner.timeouts == [("connect", 5)]


def test_a_socket_timeout_at_the_deadline_is_the_deadline_s(inner: Recorder) -> None:
    stream = DeadlineBackend(inner).connect_tcp("h", 1)
    inner.fail = httpcore.ReadTimeout
    set_attempt_deadline(time.monotonic() + 60)
    with pytest.raises(httpcore.ReadTimeout) as own:  # the read's own timeout, deadline far off
        stream.read(10, timeout=1)
    assert not isinstance(own.value, DeadlinePassed)
    set_attempt_deadline(time.monotonic() + 0.05)
    inner.delay = 0.06  # the socket waits out its clipped timeout, then times out
    with pytest.raises(DeadlinePassed, match="it passed while reading the answer"):
        stream.read(10, timeout=1)
    assert inner.timeouts[-1][1] is not None and inner.timeouts[-1][1] <= 0.05


def test_bound_wraps_an_httpx_pool_once_and_leaves_other_transports() -> None:
    transport = httpx.HTTPTransport()
    assert bound(transport) and bound(transport)
    backend = transport._pool._network_backend
    assert isinstance(backend, DeadlineBackend) and not isinstance(backend._inner, DeadlineBackend)
    assert not bound(httpx.MockTransport(lambda request: httpx.Response(200)))
    assert not bound(None)
    proxied = httpx.HTTPTransport(proxy="http://127.0.0.1:3128")
    assert bound(proxied) and isinstance(proxied._pool._network_backend, DeadlineBackend)
