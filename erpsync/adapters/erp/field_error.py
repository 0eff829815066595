"""The error of a source record refused because of one field, for every source's rows."""

from __future__ import annotations

from erpsync.domain.errors import RecordError


class FieldError(RecordError):
    """A bad value in one field: quarantine names that field (or the column mapped to it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
