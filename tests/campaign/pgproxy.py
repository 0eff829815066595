"""A TCP proxy on loopback in front of PostgreSQL that cuts connections in the middle of transactions.

It follows the server's ReadyForQuery messages ('Z' + status: `I` idle, `T` in a transaction, `E`
failed transaction), so it knows when a session is inside a transaction. While armed, every chunk
the client sends inside a transaction is, with probability `p`, the last: the proxy either drops it
and closes both sockets, or forwards it, waits 0-20 ms and then closes (the server may have run
it: a COMMIT may have committed without the client ever hearing so). Threads, one pair per
connection; clients must connect with `sslmode=disable` and `gssencmode=disable` so the protocol
is readable.

`TcpCuttingProxy` is the same proxy without the protocol: it cuts any client chunk with
probability `p` (MariaDB's protocol is not followed; nearly every statement erpsync sends is inside
a transaction anyway, since the driver does not autocommit).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy.engine import make_url


@dataclass
class CutStats:
    connections: int = 0
    cuts: int = 0
    cuts_in_transaction: int = 0
    cuts_after_forwarding: int = 0


class _Session:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.status = b"I"
        self.closed = False
        self._buffer = b""

    def watch(self, data: bytes) -> None:
        """Parse server -> client messages for ReadyForQuery's transaction status."""
        self._buffer += data
        while len(self._buffer) >= 5:
            kind = self._buffer[:1]
            (length,) = struct.unpack("!I", self._buffer[1:5])
            if len(self._buffer) < 1 + length:
                return
            if kind == b"Z" and length == 5:
                self.status = self._buffer[5:6]
            self._buffer = self._buffer[1 + length :]

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()


class CuttingProxy:
    """`url_for(database)` gives the URL erpsync should use; `arm(p)` / `disarm()` control cuts."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432), seed: int = 0) -> None:
        self.upstream = upstream
        self.stats = CutStats()
        self._probability = 0.0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sessions: list[_Session] = []
        self._running = True
        threading.Thread(target=self._accept, name="pgproxy-accept", daemon=True).start()

    tracks_transactions = True  # PostgreSQL: cut only inside transactions

    def url_for(self, direct_url: str) -> str:
        """The same database through the proxy, with plain-text protocol."""
        url = make_url(direct_url).set(host="127.0.0.1", port=self.port)
        url = url.update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
        return url.render_as_string(hide_password=False)

    def arm(self, probability: float) -> None:
        self._probability = probability

    def disarm(self) -> None:
        self._probability = 0.0

    def close(self) -> None:
        self._running = False
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = _Session(client, server)
            with self._lock:
                self._sessions = [s for s in self._sessions if not s.closed] + [session]
                self.stats.connections += 1
            threading.Thread(target=self._upstream, args=(session,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(session,), daemon=True).start()

    def _upstream(self, session: _Session) -> None:
        """client -> server, where cuts happen."""
        try:
            while data := session.client.recv(65536):
                cut = self._should_cut(session)
                if cut == "before":
                    session.close()
                    return
                session.server.sendall(data)
                if cut == "after":
                    time.sleep(self._rng.uniform(0, 0.02))
                    session.close()
                    return
        except OSError:
            pass
        session.close()

    def _downstream(self, session: _Session) -> None:
        """server -> client, parsed for the transaction status."""
        try:
            while data := session.server.recv(65536):
                if self.tracks_transactions:
                    session.watch(data)
                session.client.sendall(data)
        except OSError:
            pass
        session.close()

    def _should_cut(self, session: _Session) -> str | None:
        with self._lock:
            inside = session.status in (b"T", b"E") or not self.tracks_transactions
            if self._probability <= 0 or not inside:
                return None
            if self._rng.random() >= self._probability:
                return None
            self.stats.cuts += 1
            self.stats.cuts_in_transaction += int(self.tracks_transactions)
            after = self._rng.random() < 0.5
            self.stats.cuts_after_forwarding += int(after)
            return "after" if after else "before"


class TcpCuttingProxy(CuttingProxy):
    """Cuts any client chunk while armed (no protocol followed): MariaDB's state connection."""

    tracks_transactions = False

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 3306), seed: int = 0) -> None:
        super().__init__(upstream, seed)

    def url_for(self, direct_url: str) -> str:
        return (
            make_url(direct_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        )
