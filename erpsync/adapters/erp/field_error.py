"""The one place an ERP value is converted, for every source's rows (CSV, generic-sql, VISUAL).

A bad cell costs one row: `cell` runs one field's conversion and turns ANY value error it raises
(ValueError, UnicodeError, ArithmeticError such as decimal.InvalidOperation / Overflow,
OverflowError, a RecordError such as UnitError or TimestampRangeError) into a `FieldError` naming
the field and the reason, which names the value and the bound that was broken (units.py,
timezones.py); a reason that does not quote the value gets it appended, scrubbed of secrets and
cut to `VALUE_SHOWN` characters. `convert_row` is the backstop around a
whole row's conversion: whatever value error escapes a field (a bug, a driver surprise) still
becomes that row's FieldError, never the end of the snapshot stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from erpsync.domain.errors import RecordError
from erpsync.observability.scrub import scrub

VALUE_ERRORS: tuple[type[Exception], ...] = (ValueError, ArithmeticError, UnicodeError, RecordError)
VALUE_SHOWN = 40
UNKNOWN_FIELD = "row"

P = ParamSpec("P")
T = TypeVar("T")


class FieldError(RecordError):
    """A bad value in one field: quarantine names that field (or the column mapped to it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def shown(value: Any) -> str:
    """A value as a quarantine message shows it: repr'd, scrubbed, cut to VALUE_SHOWN chars."""
    text = scrub(value if isinstance(value, str) else repr(value))
    if len(text) > VALUE_SHOWN:
        text = text[: VALUE_SHOWN - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def cell(field: str, raw: Any, convert: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`convert(*args)` for one field whose source value is `raw`; a value error -> FieldError."""
    try:
        return convert(*args, **kwargs)
    except FieldError:
        raise
    except VALUE_ERRORS as exc:
        reason = _reason(exc)
        value = raw.strip() if isinstance(raw, str) else str(raw)
        if value and value not in reason:
            reason = f"{reason} (value {shown(raw)})"
        raise FieldError(field, reason) from None


def convert_row(decode: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | FieldError:
    """One row's conversion, or the FieldError of its bad value (never an escaping exception)."""
    try:
        return decode(*args, **kwargs)
    except FieldError as exc:
        return exc
    except VALUE_ERRORS as exc:
        return FieldError(getattr(exc, "field", None) or UNKNOWN_FIELD, _reason(exc))


def _reason(exc: BaseException) -> str:
    text = scrub(str(exc)) or type(exc).__name__
    if isinstance(exc, RecordError) or type(exc) is ValueError:  # messages written for people
        return text
    return f"{type(exc).__name__}: {text}"
