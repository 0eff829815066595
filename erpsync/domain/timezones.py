"""ERP local wall-clock times to UTC instants, with one documented rule for DST edges.

ERPs such as VISUAL store naive local datetimes. erpsync works in UTC, so every ERP timestamp goes
through `to_utc` with the source's configured IANA zone (`source.timezone`).

The DST rule (PEP 495 `fold=0` semantics, made explicit):
- Ambiguous (autumn fall-back, the hour happens twice): the FIRST occurrence, i.e. the earlier
  instant, still on daylight time. 01:30 on 2024-11-03 in America/Chicago is 06:30 UTC (CDT).
- Nonexistent (spring-forward gap, the hour never happens): shifted FORWARD by the gap, i.e. read
  with the offset in force before the jump. 02:30 on 2024-03-10 in America/Chicago is 08:30 UTC,
  which is 03:30 CDT.
A timestamp that already carries an offset is converted as is.

Range: an ERP timestamp must lie between 1900-01-01 00:00 and 2199-12-31 23:59:59 as wall time in
its zone (`EARLIEST`, `LATEST`); outside that (`9999-12-31` placeholders, `0001-01-01` defaults,
which would overflow or mean nothing once converted) `to_utc` raises `TimestampRangeError`, a
`RecordError`: the row is quarantined, the rest of the snapshot goes on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from erpsync.domain.errors import RecordError

Zone = ZoneInfo | str
EARLIEST = datetime(1900, 1, 1)
LATEST = datetime(2200, 1, 1)  # exclusive
_UTC_KEYS = frozenset(("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Zulu", "Zulu", "Etc/GMT", "GMT"))


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zone_of(zone: Zone) -> ZoneInfo:
    """A ZoneInfo from a zone or its IANA name."""
    return zone if isinstance(zone, ZoneInfo) else _zone(zone)


def is_nonexistent(local: datetime, zone: Zone) -> bool:
    """True when the naive wall time falls in a spring-forward gap of `zone`."""
    tz = zone_of(zone)
    aware = local.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None)


def is_ambiguous(local: datetime, zone: Zone) -> bool:
    """True when the naive wall time happens twice in `zone` (fall-back overlap)."""
    tz = zone_of(zone)
    if is_nonexistent(local, tz):
        return False
    first = local.replace(tzinfo=tz, fold=0).utcoffset()
    second = local.replace(tzinfo=tz, fold=1).utcoffset()
    return first != second


class TimestampRangeError(RecordError):
    """An ERP timestamp outside 1900..2199 (wall time in its zone): a bad value, not a date."""


def to_utc(value: datetime, zone: Zone) -> datetime:
    """The UTC instant of an ERP timestamp (naive = local wall time in `zone`)."""
    wall = value.replace(tzinfo=None)
    if not EARLIEST <= wall < LATEST:
        where = value.tzinfo or zone_of(zone).key
        raise TimestampRangeError(
            f"{wall.isoformat(sep=' ')} ({where}) is outside the bound 1900-01-01..2199-12-31 "
            "for ERP timestamps"
        )
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    tz = zone_of(zone)
    if tz.key in _UTC_KEYS:
        return value.replace(tzinfo=UTC, fold=0)
    # fold=0: ambiguous -> first occurrence; gap -> pre-transition offset = shifted forward.
    return value.replace(tzinfo=tz, fold=0).astimezone(UTC)


def optional_utc(value: datetime | None, zone: Zone) -> datetime | None:
    """`to_utc` that lets None through (nullable ERP columns)."""
    return None if value is None else to_utc(value, zone)


def local_naive(instant: datetime, zone: Zone) -> datetime:
    """The naive local wall time in `zone` for an instant: what to compare ERP columns against."""
    aware = instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
    return aware.astimezone(zone_of(zone)).replace(tzinfo=None)


def local_cutoff(now: datetime, lookback: timedelta, zone: Zone) -> datetime:
    """The naive local time `lookback` before `now`, e.g. for `CLOCK_OUT >= cutoff` filters."""
    return local_naive(now - lookback, zone)
