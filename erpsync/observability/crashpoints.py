"""Named crash points: let crash tests kill the process at an exact step, as a SIGKILL would.

A flow calls `crash_point("writeback.after_erp_commit")` between two steps whose order matters.
Nothing happens unless the environment variable ``ERPSYNC_CRASH_AT`` names that point (several
names may be given, comma-separated); then the process ends at once with ``os._exit(137)`` (the
exit status of a SIGKILL): no cleanup, no flush, no commit, no rollback. Tests start a real
subprocess with the variable set and check that a re-run loses nothing and doubles nothing.
"""

from __future__ import annotations

import os

CRASH_ENV_VAR = "ERPSYNC_CRASH_AT"
CRASH_EXIT_CODE = 137  # 128 + SIGKILL, what a shell reports for a killed process


def armed_crash_points() -> frozenset[str]:
    """The crash point names set in the environment (empty in production)."""
    raw = os.environ.get(CRASH_ENV_VAR, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def crash_point(name: str) -> None:
    """End the process right here, like a SIGKILL, if `name` is armed in ``ERPSYNC_CRASH_AT``."""
    if CRASH_ENV_VAR in os.environ and name in armed_crash_points():
        os._exit(CRASH_EXIT_CODE)
