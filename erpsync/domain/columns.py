"""Values that must fit a state-database column, made to fit the same way everywhere.

PostgreSQL and MariaDB refuse a value longer than its column ("value too long"); SQLite does not.
One over-long ERP value would then fail the whole cycle's transaction on every cycle, so every
ERP- or MM-supplied value is fitted before it is written, by one of these deterministic rules:

- `fit_id`: identities (run keys, machine ids, record keys). A value that fits is kept as is; a
  longer one keeps a readable prefix plus ``~`` and 16 hex digits of its sha256, so two long values
  sharing a prefix never collide and the same value always gives the same id.
- `fit_name`: display names (job, operation, reason). A longer one is cut and ends with ``…``
  so a reader sees it was cut.
- `fit_bytes`: free text in TEXT columns (payloads, messages). MariaDB's TEXT holds 65,535
  bytes; a longer text is cut at a character boundary with a marker saying how much was cut.

Pure functions: no I/O, safe in the domain.
"""

from __future__ import annotations

import hashlib

ID_HASH_HEX = 16  # 64 bits of sha256, as domain/identity.py: collisions need ~4e9 long ids
NAME_MARKER = "…"
# The longest text stored in a TEXT column: 65,535 bytes on MariaDB, less room for a marker.
TEXT_MAX_BYTES = 60_000
# The stored copy of a bad record's raw payload (quarantine): enough to find and fix the row.
RAW_MAX_BYTES = 16_384
# An error or reason message kept in a TEXT column.
MESSAGE_MAX_BYTES = 4_000


def fit_id(value: str, limit: int) -> str:
    """``value`` if it fits ``limit`` characters, else prefix + ``~`` + 16 hex of its sha256."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:ID_HASH_HEX]
    return f"{value[: limit - ID_HASH_HEX - 1]}~{digest}"


def fit_name(value: str, limit: int) -> str:
    """``value`` if it fits ``limit`` characters, else cut to end with ``…``."""
    if len(value) <= limit:
        return value
    return value[: limit - len(NAME_MARKER)] + NAME_MARKER


def fit_optional_id(value: str | None, limit: int) -> str | None:
    return None if value is None else fit_id(value, limit)


def fit_optional_name(value: str | None, limit: int) -> str | None:
    return None if value is None else fit_name(value, limit)


def fit_bytes(value: str, limit: int = TEXT_MAX_BYTES) -> str:
    """``value`` if its UTF-8 form fits ``limit`` bytes, else cut with ``…[cut N of M bytes]``."""
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return value
    marker = f"…[cut {{}} of {len(encoded)} bytes]"
    room = limit - len(marker.format(len(encoded)).encode())
    kept = encoded[:room].decode("utf-8", "ignore")  # never split a character
    cut = len(encoded) - len(kept.encode("utf-8", "surrogatepass"))
    return kept + marker.format(cut)


def fit_optional_bytes(value: str | None, limit: int = TEXT_MAX_BYTES) -> str | None:
    return None if value is None else fit_bytes(value, limit)


def utf8_size(value: str) -> int:
    """How many bytes a text takes in a UTF-8 (utf8mb4) column."""
    return len(value.encode("utf-8", "surrogatepass"))
