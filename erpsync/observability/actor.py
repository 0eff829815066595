"""Who runs this process, as `user@host`: the audit trail's actor and the CLI lease's holder name."""

from __future__ import annotations

import getpass
import socket


def user_at_host() -> str:
    """`user@host` of this process (`unknown` when the OS cannot name the user, e.g. in a container)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
