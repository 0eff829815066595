"""ERP run standards and setup times in MachineMetrics' units: ms per part, seconds of setup.

ERPs store a run standard as a number plus a unit (VISUAL `RUN` + `RUN_TYPE`, JobBOSS `Run_Method`,
CSV columns). The unit zoo is normalised here, in one place, with one rounding rule, so no adapter
converts on its own. A unit that cannot be parsed raises `UnitError` (a `RecordError`: the row goes
to quarantine); it is never guessed.

Rules:
- Unit text is matched case-insensitively, ignoring spaces and dots; `PER` reads as `/`
  (`"hours per piece"`, `"Hrs/Part"`, `"PCS/HR"` all parse). Extra site-specific spellings come from
  configuration (`aliases`), e.g. `{"PC/H": "PCS/HR"}`.
- Per-job units (`HRS/JOB`, `MIN/JOB`) are divided by the quantity; without a quantity there is no
  per-part time (`None`), not an error.
- A zero or missing run value means "no standard" (`None`); a negative one is an error.
- Results are rounded half-up to whole milliseconds / seconds.
- Bounds (an ERP typo such as `1E30` must cost one row, not the snapshot): a quantity is at most
  `MAX_QUANTITY` (10^9 pieces), a setup time at most `MAX_SETUP_SECONDS` and a part time at most
  `MAX_PART_MS` (both 10 years). A value beyond its bound raises `UnitError` naming the bound; the
  check happens before any rounding, so no Decimal overflow can escape.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

from erpsync.domain.errors import RecordError

Number = Decimal | int | float | str

MAX_QUANTITY = 10**9
TEN_YEARS_SECONDS = 10 * 365 * 24 * 3600
MAX_SETUP_SECONDS = TEN_YEARS_SECONDS
MAX_PART_MS = TEN_YEARS_SECONDS * 1000
_BOUND_QUANTITY = "10^9 pieces"
_BOUND_TIME = "10 years"


class UnitError(RecordError):
    """A unit or value erpsync cannot convert; the message says what was found and what is accepted."""


class RunBasis(enum.StrEnum):
    """How a run standard relates time and pieces."""

    TIME_PER_PIECE = "time_per_piece"
    PIECES_PER_TIME = "pieces_per_time"
    TIME_PER_JOB = "time_per_job"


class RunUnit(enum.Enum):
    """A canonical run-standard unit: (basis, seconds in its time unit)."""

    HRS_PER_PC = ("HRS/PC", RunBasis.TIME_PER_PIECE, 3600)
    MIN_PER_PC = ("MIN/PC", RunBasis.TIME_PER_PIECE, 60)
    SEC_PER_PC = ("SEC/PC", RunBasis.TIME_PER_PIECE, 1)
    PCS_PER_HR = ("PCS/HR", RunBasis.PIECES_PER_TIME, 3600)
    PCS_PER_MIN = ("PCS/MIN", RunBasis.PIECES_PER_TIME, 60)
    PCS_PER_SEC = ("PCS/SEC", RunBasis.PIECES_PER_TIME, 1)
    HRS_PER_JOB = ("HRS/JOB", RunBasis.TIME_PER_JOB, 3600)
    MIN_PER_JOB = ("MIN/JOB", RunBasis.TIME_PER_JOB, 60)

    def __init__(self, label: str, basis: RunBasis, seconds: int) -> None:
        self.label = label
        self.basis = basis
        self.seconds = seconds


class TimeUnit(enum.Enum):
    """A plain duration unit (setup times)."""

    HOURS = 3600
    MINUTES = 60
    SECONDS = 1


_TIME_WORDS: dict[str, int] = {
    **dict.fromkeys(("H", "HR", "HRS", "HOUR", "HOURS", "UUR", "UREN", "STD", "STUNDE", "STUNDEN"), 3600),
    **dict.fromkeys(("MIN", "MINS", "MINUTE", "MINUTES", "MINUUT", "MINUTEN", "MI"), 60),
    **dict.fromkeys(("S", "SEC", "SECS", "SECOND", "SECONDS", "SECONDE", "SECONDEN", "SEK"), 1),
}
_PIECE_WORDS = frozenset(
    ("PC", "PCS", "PIECE", "PIECES", "EA", "EACH", "PART", "PARTS", "UNIT", "UNITS", "STK", "STUK", "STUKS")
)
_JOB_WORDS = frozenset(("JOB", "JOBS", "LOT", "BATCH", "ORDER"))
_BY_LABEL = {unit.label: unit for unit in RunUnit}
_BY_SHAPE: dict[tuple[RunBasis, int], RunUnit] = {(u.basis, u.seconds): u for u in RunUnit}
ACCEPTED_RUN_UNITS = ", ".join(unit.label for unit in RunUnit)


def _normalise(text: str) -> str:
    cleaned = re.sub(r"[\s.]+", "", text.upper().replace("\x00", ""))
    return cleaned.replace("PER", "/")


def parse_run_unit(text: str | None, aliases: Mapping[str, str] | None = None) -> RunUnit:
    """The canonical unit for ERP unit text such as `HRS/PC`, `Parts/Hr`, `min per piece`.

    `aliases` maps extra spellings (compared after normalisation) to a canonical label.
    """
    raw = (text or "").strip()
    if not raw:
        raise UnitError(f"run unit is empty; expected one of {ACCEPTED_RUN_UNITS}")
    key = _normalise(raw)
    for alias, target in (aliases or {}).items():
        if _normalise(alias) == key:
            return parse_run_unit(target)
    if key in _BY_LABEL:
        return _BY_LABEL[key]
    parts = key.split("/")
    if len(parts) == 2:
        top, bottom = parts
        if top in _TIME_WORDS and bottom in _PIECE_WORDS:
            return _BY_SHAPE[(RunBasis.TIME_PER_PIECE, _TIME_WORDS[top])]
        if top in _PIECE_WORDS and bottom in _TIME_WORDS:
            return _BY_SHAPE[(RunBasis.PIECES_PER_TIME, _TIME_WORDS[bottom])]
        shape = (RunBasis.TIME_PER_JOB, _TIME_WORDS.get(top, 0))
        if bottom in _JOB_WORDS and shape in _BY_SHAPE:
            return _BY_SHAPE[shape]
    raise UnitError(f"unknown run unit {raw!r}; expected one of {ACCEPTED_RUN_UNITS} (or add an alias)")


def to_decimal(value: Number | None, what: str = "value") -> Decimal | None:
    """A Decimal from a number or numeric text; None stays None."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        result = value
    else:
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise UnitError(f"{what} {value!r} is not a number") from None
    if not result.is_finite():
        raise UnitError(f"{what} {value!r} is not a finite number")
    return result


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _bounded_ms(ms: Decimal, value: Decimal, unit: RunUnit) -> int:
    if ms > MAX_PART_MS:
        raise UnitError(
            f"run standard {value} {unit.label} is {ms:.3E} ms per part, "
            f"above the bound of {_BOUND_TIME} ({MAX_PART_MS} ms) per part"
        )
    return _round(ms)


def part_time_ms(run: Number | None, unit: RunUnit | str, quantity: Number | None = None) -> int | None:
    """Milliseconds per part for run standard `run` in `unit`; None when there is no standard."""
    resolved = unit if isinstance(unit, RunUnit) else parse_run_unit(unit)
    value = to_decimal(run, "run standard")
    if value is None or value == 0:
        return None
    if value < 0:
        raise UnitError(f"run standard {value} {resolved.label} is negative")
    scale = Decimal(resolved.seconds * 1000)
    if resolved.basis is RunBasis.TIME_PER_PIECE:
        _check_at_most(value, MAX_PART_MS / scale, f"run standard {value} {resolved.label}", _BOUND_TIME)
        return _bounded_ms(value * scale, value, resolved)
    if resolved.basis is RunBasis.PIECES_PER_TIME:
        if value < scale / MAX_PART_MS:
            raise UnitError(
                f"run standard {value} {resolved.label} means more than {_BOUND_TIME} per part "
                f"(the bound is {MAX_PART_MS} ms per part)"
            )
        return _bounded_ms(scale / value, value, resolved)
    qty = to_decimal(quantity, "quantity")
    if qty is None or qty <= 0:
        return None
    _check_at_most(value, MAX_PART_MS / scale, f"run standard {value} {resolved.label}", _BOUND_TIME)
    return _bounded_ms(value * scale / qty, value, resolved)


def _check_at_most(value: Decimal, limit: Decimal | int, what: str, bound: str) -> None:
    """Refuse a value above its bound before any arithmetic that could overflow on it."""
    if value > limit:
        raise UnitError(f"{what} is above the bound of {bound}")


def duration_seconds(value: Number | None, unit: TimeUnit = TimeUnit.HOURS) -> int | None:
    """A duration (e.g. SETUP_HRS) in whole seconds; None when missing; negative is an error."""
    amount = to_decimal(value, "duration")
    if amount is None:
        return None
    if amount < 0:
        raise UnitError(f"duration {amount} is negative")
    _check_at_most(
        amount, Decimal(MAX_SETUP_SECONDS) / unit.value, f"duration {amount} {unit.name.lower()}", _BOUND_TIME
    )
    return _round(amount * unit.value)


def setup_hours_to_seconds(hours: Number | None) -> int | None:
    """Setup hours (VISUAL `SETUP_HRS`) as seconds, MM's setup-time unit."""
    return duration_seconds(hours, TimeUnit.HOURS)


def parse_time_unit(text: str) -> TimeUnit:
    """`hours` / `minutes` / `seconds` (and their short forms) as a TimeUnit."""
    seconds = _TIME_WORDS.get(_normalise(text))
    if seconds is None:
        raise UnitError(f"unknown time unit {text!r}; expected hours, minutes or seconds")
    return TimeUnit(seconds)


def quantity_required(value: Number | None) -> int | None:
    """A planned quantity as whole pieces: fractions round up (12.5 planned means 13 to make)."""
    qty = to_decimal(value, "quantity")
    if qty is None:
        return None
    if qty < 0:
        raise UnitError(f"quantity {qty} is negative")
    _check_at_most(qty, MAX_QUANTITY, f"quantity {qty}", _BOUND_QUANTITY)
    return int(qty.quantize(Decimal(1), rounding=ROUND_CEILING))
