"""Text values from ERP exports: numbers with decimal commas, US/EU dates, yes/no flags.

Numbers (dirty-data case 6): spaces, no-break spaces and apostrophes are thousands marks; when both
`.` and `,` occur, the last one is the decimal separator (`1.234,56`, `1,234.56`). A lone separator
is decimal unless it is followed by exactly three digits and the file's decimal separator is the
other one (`1.234` in a `;`-delimited file is 1234; `1,5` is 1.5 anywhere). Empty text is None.

Dates (case 5): ISO 8601 (`2024-03-10`, `2024-03-10 14:30:00`, with or without offset),
`M/D/YYYY` or `D/M/YYYY` by `date_order` with optional `h:mm[:ss] [AM|PM]`, and `DD.MM.YYYY [hh:mm[:ss]]`.
`1900-01-01` in any format is VISUAL's "not set" sentinel and reads as None.

Flags: yes/no, y/n, true/false, 1/0, ja/nee, x/blank; anything else is an error, not a guess.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Literal

DateOrder = Literal["mdy", "dmy"]

_THOUSANDS_JUNK = str.maketrans("", "", " \u00a0\u202f'\x00")
_INTEGER = re.compile(r"^-?\d+$")
_DOTTED_DECIMAL = re.compile(r"^-?\d+\.\d+$")
_GROUP3 = re.compile(r"^[+-]?[1-9]\d{0,2}[.,]\d{3}$")
_DOTTED = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_SLASHED = re.compile(
    r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})"
    r"(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?\s*([AaPp]\.?[Mm]\.?)?)?$"
)
_ISO_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}")
_SENTINEL = date(1900, 1, 1)
_TRUE = frozenset(("yes", "y", "true", "t", "1", "ja", "j", "x", "on", "oui", "si", "wahr"))
_FALSE = frozenset(("no", "n", "false", "f", "0", "nee", "nein", "off", "non", "falsch", "-"))


def parse_decimal(text: str | None, decimal_separator: str = ".") -> Decimal | None:
    """A Decimal from export text (see module rules); raises ValueError when it is not a number."""
    if text is None:
        return None
    if _INTEGER.match(text) or (
        _DOTTED_DECIMAL.match(text) and (decimal_separator == "." or not _GROUP3.match(text))
    ):
        return Decimal(text)  # fast path: most cells are plain numbers
    return _parse_marked(text, decimal_separator)


def _parse_marked(text: str, decimal_separator: str) -> Decimal | None:
    cleaned = text.translate(_THOUSANDS_JUNK).strip()
    if not cleaned:
        return None
    has_dot, has_comma = "." in cleaned, "," in cleaned
    if has_dot and has_comma:
        decimal_mark = "." if cleaned.rfind(".") > cleaned.rfind(",") else ","
        group_mark = "," if decimal_mark == "." else "."
        cleaned = cleaned.replace(group_mark, "").replace(decimal_mark, ".")
    elif has_dot or has_comma:
        mark = "." if has_dot else ","
        if cleaned.count(mark) > 1 or (mark != decimal_separator and _GROUP3.match(cleaned)):
            cleaned = cleaned.replace(mark, "")
        else:
            cleaned = cleaned.replace(mark, ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text.strip()!r} is not a finite number")
    return value


def parse_datetime(text: str | None, date_order: DateOrder = "mdy") -> datetime | None:
    """A datetime (naive = ERP local time) from export text; None for empty or the 1900 sentinel."""
    if text is None:
        return None
    cleaned = text.replace("\x00", "").strip()
    if not cleaned:
        return None
    parsed = _iso(cleaned) or _dotted(cleaned) or _slashed(cleaned, date_order)
    if parsed is None:
        raise ValueError(
            f"{cleaned!r} is not a date; expected ISO (2024-03-10 14:30), "
            "M/D/YYYY [h:mm[:ss] AM] (or D/M/YYYY with date_order = 'dmy') or DD.MM.YYYY [hh:mm]"
        )
    return None if parsed.date() == _SENTINEL else parsed


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        if _ISO_DATE.match(text):
            raise ValueError(f"{text!r}: impossible date or time ({exc})") from None
        return None


def _build(
    year: str, month: str, day: str, hour: str | None, minute: str | None, second: str | None
) -> datetime:
    try:
        return datetime.combine(
            date(int(year), int(month), int(day)),
            time(int(hour or 0), int(minute or 0), int(second or 0)),
        )
    except ValueError as exc:
        raise ValueError(f"impossible date or time ({exc})") from None


def _dotted(text: str) -> datetime | None:
    match = _DOTTED.match(text)
    if match is None:
        return None
    day, month, year, hour, minute, second = match.groups()
    return _build(year, month, day, hour, minute, second)


def _slashed(text: str, date_order: DateOrder) -> datetime | None:
    match = _SLASHED.match(text)
    if match is None:
        return None
    first, second_part, year, hour, minute, second, meridiem = match.groups()
    month, day = (first, second_part) if date_order == "mdy" else (second_part, first)
    if meridiem is not None and hour is not None:
        value = int(hour)
        if not 1 <= value <= 12:
            raise ValueError(f"{text!r}: hour {value} with AM/PM")
        is_pm = meridiem.lower().startswith("p")
        hour = str(value % 12 + (12 if is_pm else 0))
    return _build(year, month, day, hour, minute, second)


def parse_bool(text: str | None) -> bool | None:
    """True/False from yes/no-style text; None when empty; ValueError when it is neither."""
    if text is None:
        return None
    cleaned = text.replace("\x00", "").strip().casefold()
    if not cleaned:
        return None
    if cleaned in _TRUE:
        return True
    if cleaned in _FALSE:
        return False
    raise ValueError(f"{text.strip()!r} is not a yes/no value")
