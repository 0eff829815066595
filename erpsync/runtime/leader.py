"""The leader lease: one row in ``erpsync_leader``, timed by the database clock, with fencing.

Why the database and its clock: both instances already share the state database, so it is the one
arbiter they agree on; host clocks may drift, the database's clock is one clock. Every statement that
reads or moves ``expires_at`` uses the server's own "now" (PostgreSQL ``clock_timestamp()``,
MySQL/MariaDB ``UTC_TIMESTAMP(6)``, SQLite ``strftime('%f')``, SQL Server ``SYSUTCDATETIME()``).

Acquire and renew are ONE conditional UPDATE each (``holder = me OR expires_at < now``), so two
instances can never both succeed. The fencing token grows by one every time a term begins (a takeover,
or the same holder coming back after its lease lapsed); whoever is about to act re-checks its token
inside its own claiming transaction (`check_token`), so a paused ex-leader that wakes up is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, literal_column, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from erpsync.adapters.state.tables import LeaderLease as LeaseRow
from erpsync.adapters.state.types import UTCDateTime
from erpsync.domain.errors import FencedError

LEASE_TABLE = "erpsync_leader"
DEFAULT_LEASE_NAME = "erpsync"


def now_sql(dialect: str) -> str:
    """SQL for the database server's current UTC time, as a naive timestamp comparable to our columns."""
    if dialect == "postgresql":
        return "(clock_timestamp() AT TIME ZONE 'UTC')"
    if dialect in ("mysql", "mariadb"):
        return "UTC_TIMESTAMP(6)"
    if dialect == "mssql":
        return "SYSUTCDATETIME()"
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def now_plus_sql(dialect: str, param: str) -> str:
    """SQL for database now + ``:param`` seconds; bind the value with `offset_param`."""
    if dialect == "postgresql":
        return f"({now_sql(dialect)} + make_interval(secs => CAST(:{param} AS double precision)))"
    if dialect in ("mysql", "mariadb"):
        return f"DATE_ADD(UTC_TIMESTAMP(6), INTERVAL :{param} MICROSECOND)"
    if dialect == "mssql":
        return f"DATEADD(millisecond, :{param}, SYSUTCDATETIME())"
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', :{param})"


def offset_param(dialect: str, seconds: float) -> float | int | str:
    """The bind value for `now_plus_sql` in the unit that dialect's date arithmetic takes."""
    if dialect in ("mysql", "mariadb"):
        return round(seconds * 1_000_000)
    if dialect == "mssql":
        return round(seconds * 1000)
    if dialect == "postgresql":
        return float(seconds)
    return f"{seconds:+.3f} seconds"


def _dialect(conn: Connection | Session | Engine) -> str:
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    return bind.dialect.name


def _now_column(dialect: str) -> ColumnElement[datetime]:
    return literal_column(now_sql(dialect), UTCDateTime()).label("db_now")


def db_now(conn: Connection | Session) -> datetime:
    """The database server's current time as an aware UTC datetime."""
    value = conn.execute(select(_now_column(_dialect(conn)))).scalar_one()
    assert isinstance(value, datetime)
    return value


@dataclass(frozen=True)
class LeaseStatus:
    """The lease row as the database sees it right now."""

    name: str
    holder: str | None
    token: int
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    db_now: datetime

    @property
    def held(self) -> bool:
        """True while a holder's lease has not yet expired (by the database clock)."""
        return self.holder is not None and self.expires_at is not None and self.expires_at > self.db_now

    @property
    def remaining(self) -> timedelta:
        """Time left on the lease (negative once expired)."""
        if self.expires_at is None:
            return timedelta(0)
        return self.expires_at - self.db_now


class LeaderLease:
    """One holder's handle on the named lease; thread-safe because every call is one transaction."""

    def __init__(
        self, engine: Engine, name: str = DEFAULT_LEASE_NAME, *, holder: str, ttl_seconds: float
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.engine = engine
        self.name = name
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self._dialect = engine.dialect.name
        self._token: int | None = None

    @property
    def token(self) -> int | None:
        """The token of the term this handle last acquired (None before the first acquisition)."""
        return self._token

    def _ttl(self) -> float | int | str:
        return offset_param(self._dialect, self.ttl_seconds)

    def try_acquire(self) -> int | None:
        """Take the lease if it is free or expired, or renew it if ours; the token if we lead now."""
        now = now_sql(self._dialect)
        # MySQL/MariaDB evaluate SET assignments left to right, seeing earlier new values: the CASEs
        # that read `holder`/`expires_at` therefore come before the assignments that change them.
        statement = text(
            f"UPDATE {LEASE_TABLE} SET "
            f"fencing_token = CASE WHEN holder = :me AND expires_at >= {now} "
            "THEN fencing_token ELSE fencing_token + 1 END, "
            f"acquired_at = CASE WHEN holder = :me AND expires_at >= {now} THEN acquired_at ELSE {now} END, "
            f"holder = :me, renewed_at = {now}, expires_at = {now_plus_sql(self._dialect, 'ttl')} "
            f"WHERE name = :name AND (holder = :me OR expires_at IS NULL OR expires_at < {now})"
        )
        params = {"me": self.holder, "name": self.name, "ttl": self._ttl()}
        for _ in range(2):
            with self.engine.begin() as conn:
                if conn.execute(statement, params).rowcount == 1:
                    token = conn.execute(
                        text(f"SELECT fencing_token FROM {LEASE_TABLE} WHERE name = :name"),
                        {"name": self.name},
                    ).scalar_one()
                    self._token = int(token)
                    return self._token
                exists = conn.execute(
                    text(f"SELECT 1 FROM {LEASE_TABLE} WHERE name = :name"), {"name": self.name}
                ).first()
            if exists:
                return None
            self._create_row()
        return None

    def _create_row(self) -> None:
        """First use: insert the free lease row; losing the race to another instance is fine."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text(f"INSERT INTO {LEASE_TABLE} (name, holder, fencing_token) VALUES (:name, NULL, 0)"),
                    {"name": self.name},
                )
        except IntegrityError:
            pass

    def renew(self) -> bool:
        """Extend our live lease; False when it lapsed or another holder has it (we must stop)."""
        if self._token is None:
            return False
        now = now_sql(self._dialect)
        with self.engine.begin() as conn:
            result = conn.execute(
                text(
                    f"UPDATE {LEASE_TABLE} SET renewed_at = {now}, "
                    f"expires_at = {now_plus_sql(self._dialect, 'ttl')} "
                    "WHERE name = :name AND holder = :me AND fencing_token = :token "
                    f"AND expires_at >= {now}"
                ),
                {"name": self.name, "me": self.holder, "token": self._token, "ttl": self._ttl()},
            )
            return result.rowcount == 1

    def release(self) -> None:
        """Hand the lease back at once (expires_at in the past); the token stays for the next taker."""
        if self._token is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE {LEASE_TABLE} SET expires_at = {now_plus_sql(self._dialect, 'back')} "
                    "WHERE name = :name AND holder = :me AND fencing_token = :token"
                ),
                {
                    "name": self.name,
                    "me": self.holder,
                    "token": self._token,
                    "back": offset_param(self._dialect, -1.0),
                },
            )

    def check_token(self, conn_or_session: Connection | Session, token: int) -> None:
        """Raise FencedError unless `token` is the live term's token; call inside the claiming transaction.

        The row is read with a shared lock (PostgreSQL, MySQL/MariaDB, SQL Server), so a takeover's
        UPDATE waits until the claiming transaction ends: the claim commits under the term it checked.
        """
        dialect = _dialect(conn_or_session)
        query = (
            select(LeaseRow.fencing_token, LeaseRow.expires_at, _now_column(dialect))
            .where(LeaseRow.name == self.name)
            .with_for_update(read=True)
            .with_hint(LeaseRow, "WITH (HOLDLOCK, ROWLOCK)", "mssql")
        )
        row = conn_or_session.execute(query).first()
        if row is None:
            raise FencedError(f"fencing token {token} refused: lease {self.name!r} has never been taken")
        current, expires_at, now = int(row[0]), row[1], row[2]
        if current != token:
            raise FencedError(
                f"fencing token {token} is stale: lease {self.name!r} is at token {current}; "
                "another instance leads now"
            )
        if expires_at is None or expires_at <= now:
            raise FencedError(f"fencing token {token} refused: lease {self.name!r} expired at {expires_at}")

    def status(self) -> LeaseStatus:
        """Read the lease row and the database time in one go (for `erpsync leader status`)."""
        with self.engine.connect() as conn:
            now = db_now(conn)
            row = conn.execute(
                select(
                    LeaseRow.holder,
                    LeaseRow.fencing_token,
                    LeaseRow.acquired_at,
                    LeaseRow.renewed_at,
                    LeaseRow.expires_at,
                ).where(LeaseRow.name == self.name)
            ).first()
        if row is None:
            return LeaseStatus(self.name, None, 0, None, None, None, now)
        return LeaseStatus(self.name, row[0], int(row[1]), row[2], row[3], row[4], now)
