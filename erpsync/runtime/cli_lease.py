"""The leader lease for one-shot commands (`erpsync sync`, `resync`, `writeback`).

A person running a command while `erpsync serve` leads would make two actors: so the command
takes the same lease as the service (and refuses, naming the holder, when the service has it),
keeps it renewed while it works, and hands it back at the end. Its fencing context is the same
`FencingContext` the service's jobs get, so the dispatcher's checks are identical.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy.exc import SQLAlchemyError

from erpsync.adapters.state.store import StateStore
from erpsync.config import Settings
from erpsync.domain.errors import ErpsyncError
from erpsync.observability.actor import user_at_host
from erpsync.runtime.leader import DEFAULT_LEASE_NAME, LeaderLease
from erpsync.runtime.term import FencingContext

log = structlog.get_logger(__name__)


def cli_holder() -> str:
    """A holder name unique to this invocation: user, host, pid and a nonce."""
    return f"cli:{user_at_host()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@contextmanager
def held_lease(settings: Settings, store: StateStore) -> Iterator[FencingContext]:
    """Take the leader lease for the duration of a command; refuse when another instance leads."""
    svc = settings.service
    lease = LeaderLease(
        store.engine, DEFAULT_LEASE_NAME, holder=cli_holder(), ttl_seconds=svc.lease_ttl_seconds
    )
    token = lease.try_acquire()
    if token is None:
        status = lease.status()
        raise ErpsyncError(
            f"another erpsync instance leads ({status.holder}, lease until {status.expires_at}); "
            "run the command when it is stopped, or let the running service do the work"
        )
    stop = threading.Event()
    valid_until = [time.monotonic() + svc.lease_ttl_seconds - svc.lease_renew_seconds]

    def renew() -> None:
        while not stop.wait(svc.lease_renew_seconds):
            try:
                renewed = lease.renew()
            except SQLAlchemyError as exc:  # the fence lapses by itself; say why
                log.warning("leader lease renewal failed; this command stops acting", error=str(exc))
                renewed = False
            if renewed:
                valid_until[0] = time.monotonic() + svc.lease_ttl_seconds - svc.lease_renew_seconds
            else:
                stop.set()

    renewer = threading.Thread(target=renew, name="cli-lease", daemon=True)
    renewer.start()
    fencing = FencingContext(lease, token, lambda: time.monotonic() < valid_until[0], stop)
    try:
        yield fencing
    finally:
        stop.set()
        renewer.join(timeout=svc.lease_renew_seconds + 1)
        lease.release()
