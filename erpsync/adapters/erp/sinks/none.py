"""The `none` sink: read-only mode. Counts are read from MM and shown, nothing is written.

For shops where the ERP stays master (MM "ERP-driven tracking"), or to watch what write-back
would do before switching a real sink on. erpsync's "last written" state is left alone too.
"""

from __future__ import annotations

from collections.abc import Sequence

from erpsync.adapters.erp.sinks.base import CountWrite, WriteResult, unread_result

READ_ONLY_MESSAGE = "writeback.sink = 'none' (read-only mode): not written"


class NoneSink:
    """Writes nothing; every item comes back 'unchanged' with a message saying why."""

    name = "none"
    batch_size: int | None = None

    def write(self, batch: Sequence[CountWrite]) -> list[WriteResult]:
        return [unread_result(w, "unchanged", READ_ONLY_MESSAGE) for w in batch]

    def check(self) -> str:
        return "read-only mode: nothing is written, nothing to check"

    def close(self) -> None:
        """Nothing to release."""
