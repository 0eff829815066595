"""erpsync's own tables (the state database). Never ERP tables: those belong to the ERP.

Column names are plain and stable because IT reads these tables with SQL (docs/audit.md).
Timestamps are stored as UTC; `UTCDateTime` hands back timezone-aware values on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from erpsync.adapters.state.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT identity on real servers, INTEGER PRIMARY KEY (rowid) on SQLite so it autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WrittenCounts:
    """The counts a write-back last wrote and the ones it set out to write: kept on the binding
    (last written by any sink) and per sink (`SinkCounts`)."""

    last_total_parts: Mapped[int | None] = mapped_column(BigInteger)
    last_good_parts: Mapped[int | None] = mapped_column(BigInteger)
    last_scrap_parts: Mapped[int | None] = mapped_column(BigInteger)
    last_nonconform_parts: Mapped[int | None] = mapped_column(BigInteger)
    counts_written_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # write-back intents not yet confirmed (JSON list of counts): the ERP may hold any of them
    # after a crash between its commit and ours, and such a value is erpsync's, not a person's
    counts_in_doubt: Mapped[str | None] = mapped_column(Text)


class RunBinding(WrittenCounts, Base):
    """An ERP run bound to the MM job run erpsync started for it."""

    __tablename__ = "erpsync_run_binding"
    __table_args__ = (
        UniqueConstraint("source", "run_key", name="uq_erpsync_run_binding_source_run_key"),
        # a sync cycle reads open bindings by status, finished ones by run key only (migration 0004)
        Index("ix_erpsync_run_binding_source_status", "source", "status"),
        # write-back candidates (recently ended) and retention (long ended), by status and age
        Index("ix_erpsync_run_binding_status_updated_at", "status", "updated_at"),
        # write-back's stopped runs whose final counts are still due (migration 0006)
        Index("ix_erpsync_run_binding_final_counts_since", "final_counts_since"),
        # when erpsync last freed a machine, for a cycle's new starts there (migration 0008)
        Index("ix_erpsync_run_binding_mm_machine_id_mm_end_at", "mm_machine_id", "mm_end_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    run_key: Mapped[str] = mapped_column(String(255))
    mm_run_id: Mapped[str] = mapped_column(String(255), unique=True)
    erp_job: Mapped[str] = mapped_column(String(255))
    erp_operation: Mapped[str] = mapped_column(String(64))
    erp_machine: Mapped[str] = mapped_column(String(64))
    mm_machine_id: Mapped[str] = mapped_column(String(255))
    # starting / running / stopping / stopped / vanished / failed
    status: Mapped[str] = mapped_column(String(16), index=True)
    in_setup: Mapped[bool] = mapped_column(Boolean, default=False)
    payload_hash: Mapped[str | None] = mapped_column(String(64))
    # the resync generation of the run's current actions: after a resync re-starts a run, its later
    # stop needs a fresh idempotency key (domain/identity.py), so the generation lives with the run
    key_generation: Mapped[str] = mapped_column(String(64), default="", server_default="")
    erp_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    erp_end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mm_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mm_end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # set when erpsync stops the run (or last saw its counts change after that); NULL once its
    # final counts reached the ERP (domain/writeback_rules.py `final_counts_step`)
    final_counts_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class SinkCounts(WrittenCounts, Base):
    """What erpsync last wrote for one run into one sink, and what it set out to write there.

    Per sink, so a new `writeback.sink` is compared with what *it* holds, not with another sink's
    value. A run with no row for any sink is read from the binding's `last_*` columns (written
    before counts were kept per sink); the binding keeps the counts last written by any sink.
    """

    __tablename__ = "erpsync_sink_counts"

    binding_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sink: Mapped[str] = mapped_column(String(64), primary_key=True)


class SyncAction(Base):
    """The action journal: intent written before an external call, outcome after it."""

    __tablename__ = "erpsync_action"
    __table_args__ = (Index("ix_erpsync_action_settled_at", "settled_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # start_run / stop_run / import_jobs / write_counts
    # pending / succeeded / failed_retryable / failed_permanent / quarantined / superseded
    status: Mapped[str] = mapped_column(String(24), index=True)
    source: Mapped[str | None] = mapped_column(String(64))
    run_key: Mapped[str | None] = mapped_column(String(255))
    mm_run_id: Mapped[str | None] = mapped_column(String(255), index=True)
    erp_job: Mapped[str | None] = mapped_column(String(255))
    erp_operation: Mapped[str | None] = mapped_column(String(64))
    erp_machine: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fencing_token: Mapped[int | None] = mapped_column(BigInteger)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    triggered_by: Mapped[str | None] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SourceCheckpoint(Base):
    """Where a source stream got to: a watermark, or the checksum of a CSV file already read."""

    __tablename__ = "erpsync_checkpoint"
    __table_args__ = (UniqueConstraint("source", "stream", name="uq_erpsync_checkpoint_source_stream"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(255))
    position: Mapped[str | None] = mapped_column(String(255))
    file_name: Mapped[str | None] = mapped_column(String(1024))
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    rows_read: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class QuarantineEntry(Base):
    """A bad record (ERP row, CSV line, refused MM action) kept aside with the reason."""

    __tablename__ = "erpsync_quarantine"
    __table_args__ = (
        UniqueConstraint("source", "record_key", "error_class", name="uq_erpsync_quarantine_record"),
        Index("ix_erpsync_quarantine_status_last_seen_at", "status", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    record_key: Mapped[str] = mapped_column(String(255))
    file_name: Mapped[str | None] = mapped_column(String(1024))
    line_number: Mapped[int | None] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(128))
    raw_payload: Mapped[str | None] = mapped_column(Text)
    error_class: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    action_id: Mapped[int | None] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    # open / retry / discarded / resolved
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)


class AuditEntry(Base):
    """Append-only trail of everything erpsync did or refused to do; plain columns for SQL."""

    __tablename__ = "erpsync_audit"
    __table_args__ = (
        Index("ix_erpsync_audit_occurred_at", "occurred_at"),
        Index("ix_erpsync_audit_erp_job_occurred_at", "erp_job", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    action_id: Mapped[int | None] = mapped_column(BigInteger)
    triggered_by: Mapped[str | None] = mapped_column(String(32))  # schedule / cli / startup_recovery
    actor: Mapped[str | None] = mapped_column(String(255))
    app_version: Mapped[str | None] = mapped_column(String(32))
    fencing_token: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str | None] = mapped_column(String(64))
    erp_job: Mapped[str | None] = mapped_column(String(255))
    erp_operation: Mapped[str | None] = mapped_column(String(64))
    erp_machine: Mapped[str | None] = mapped_column(String(64))
    mm_run_id: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(24))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    before_json: Mapped[str | None] = mapped_column(Text)
    after_json: Mapped[str | None] = mapped_column(Text)
    changed_fields: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)


class LeaderLease(Base):
    """The leader lease: one row per lease name, timed by the database clock."""

    __tablename__ = "erpsync_leader"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255))
    fencing_token: Mapped[int] = mapped_column(BigInteger, default=0)
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Heartbeat(Base):
    """One row per running instance: alive, role, and when its loops last succeeded."""

    __tablename__ = "erpsync_heartbeat"

    instance: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16), default="starting")  # leader / standby / stopped
    app_version: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sync_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_writeback_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Cycle(Base):
    """One sync, write-back, resync or purge cycle and what it did: the source of `status`."""

    __tablename__ = "erpsync_cycle"
    __table_args__ = (
        Index("ix_erpsync_cycle_kind_started_at", "kind", "started_at"),
        Index("ix_erpsync_cycle_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    correlation_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))  # sync / writeback / resync / purge / import
    triggered_by: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(24))  # ok / partial / failed / config_error
    summary: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)


class MachineSeen(Base):
    """Every ERP resource seen, its MM machine id, and whether MM refused it."""

    __tablename__ = "erpsync_machine"

    erp_machine: Mapped[str] = mapped_column(String(64), primary_key=True)
    mm_machine_id: Mapped[str | None] = mapped_column(String(255))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    runs_seen: Mapped[int] = mapped_column(BigInteger, default=0)
