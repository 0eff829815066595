"""Hand memory freed by a finished cycle back to the operating system (glibc only).

Why: glibc's malloc keeps memory freed by a thread in that thread's arena and returns it to the
system only from the top of the main heap. erpsync's cycles run on short-lived threads (job bodies,
MM call pools), each cycle allocating and freeing megabytes, so a long-running `erpsync serve` grew
its resident size a little with every cycle although nothing stayed allocated (bench/soak.py).
`malloc_trim(0)` gives back the free pages of every arena; it costs well under a millisecond here.
On other C libraries (musl, macOS, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_free_memory() -> None:
    """Return freed heap memory to the operating system, where the C library allows it."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
