"""SIGTERM / SIGINT → a clean stop. `docker stop` sends SIGTERM, then SIGKILL after its grace period.

The handler only sets a flag (via the callback); the service's own threads do the stopping, so
nothing heavy ever runs inside a signal handler.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_handlers(on_stop: Callable[[str], None]) -> Callable[[], None]:
    """Route SIGTERM and SIGINT to `on_stop(signal name)`; returns a function restoring the old handlers.

    Python only allows handlers on the main thread; elsewhere (e.g. a service run in a test thread)
    this does nothing and the caller stops the service itself.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: FrameType | None) -> None:
        on_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
