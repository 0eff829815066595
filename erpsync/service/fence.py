"""The fence every acting flow holds: proof that this process is the one allowed to act.

The runtime's leader lease provides it (runtime/leader.py). A dispatcher checks `is_current()`
before each call and `check(session)` inside the transaction that claims work, so a paused
former leader that wakes up cannot act on a lease it lost.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session


class Fence(Protocol):
    """Current fencing token and the checks that go with it."""

    @property
    def token(self) -> int | None: ...

    def is_current(self) -> bool:
        """Cheap in-memory check: False once the lease was lost or is about to expire."""

    def check(self, session: Session) -> None:
        """Authoritative check inside a transaction; raises FencedError when the token is stale."""
