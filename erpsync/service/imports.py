"""Job imports: the ERP's operations uploaded to MM's "import jobs via file", only when changed.

`build` mode makes the MM 22-column job CSV from the source's operations (adapters/mm/job_csv.py);
`passthrough` sends an Infor export file as it is, with `type=inforVisual|inforLN`. The content's
SHA-256 is kept as a checkpoint (stream `mm_import:<type>`): unchanged content is not uploaded
again. The upload goes through the same journal, dispatcher and audit as every other MM effect.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from erpsync.adapters.mm.job_csv import build_mm_job_csv, content_sha256
from erpsync.domain.clock import utcnow
from erpsync.domain.errors import ConfigError
from erpsync.domain.lifecycle import ActionKind, Intent, JournaledAction
from erpsync.domain.model import BadRecord, JobOperation
from erpsync.service.cycles import cycle
from erpsync.service.dispatch import raise_for_result
from erpsync.service.sync import SyncService


@dataclass
class ImportResult:
    import_type: str
    sha256: str
    rows: int
    uploaded: bool
    unchanged: bool
    bad_rows: int = 0
    not_done: int = 0  # 1 when the upload was left retrying, unsent or given up
    last_error: str | None = None


def _content(service: SyncService) -> tuple[bytes, str, list[BadRecord]]:
    """The file to upload, its MM import type, and the operations that could not go in it."""
    policy = service.policy
    if policy.imports_mode == "passthrough":
        path, import_type = policy.passthrough_file, policy.passthrough_type
        if import_type is None or path is None:
            raise ConfigError(
                "sync.imports.mode: 'passthrough' needs a CSV source with source.csv.path "
                "(kind infor-visual-csv or infor-ln-csv); use mode = 'build' for database sources"
            )
        try:
            return path.read_bytes(), import_type, []
        except OSError as exc:
            raise ConfigError(f"source.csv.path: cannot read {path}: {exc.strerror}") from None
    operations: list[JobOperation] = []
    bad: list[BadRecord] = []
    for item in service.source.read_operations():
        (bad if isinstance(item, BadRecord) else operations).append(item)  # type: ignore[arg-type]
    data, rejected = build_mm_job_csv(operations, service.policy.mapper)
    return data, "mm", [*bad, *rejected]


def run_imports(service: SyncService, *, force: bool = False) -> ImportResult:
    """Upload the job file when its content changed since the last successful upload."""
    stream = "mm_import"
    with cycle(service.uow, "import") as record:
        data, import_type, bad = _content(service)
        digest = content_sha256(data)
        rows = max(0, data.count(b"\n") - 1)
        stream = f"mm_import:{import_type}"
        with service.uow() as uow:
            previous = uow.checkpoints.digest(service.source.name, stream)
            if bad:
                service.quarantine_records(uow, bad, utcnow())
        result = ImportResult(import_type, digest, rows, uploaded=False, unchanged=previous == digest)
        record.summary = {"type": import_type, "rows": rows, "sha256": digest, "bad_rows": len(bad)}
        if result.unchanged and not force:
            record.summary["uploaded"] = False
            return result
        entry = _journal_upload(service, data, import_type, digest, previous, force)
        if entry is None:
            record.summary["uploaded"] = False
            return result
        dispatched = service.dispatcher().run([[entry]])
        raise_for_result(dispatched)
        result.uploaded = dispatched.succeeded == 1
        result.not_done = dispatched.retrying + dispatched.not_sent + dispatched.failed
        result.last_error = dispatched.last_error
        result.bad_rows = len(bad)
        record.summary["uploaded"] = result.uploaded
        if result.uploaded:
            _remember(service, stream, digest, rows)
        else:
            record.outcome = "partial"
    return result


def _journal_upload(
    service: SyncService, data: bytes, import_type: str, digest: str, previous: str | None, force: bool
) -> JournaledAction | None:
    """Journal the upload; the key names the transition (previous -> new content) so A->B->A uploads."""
    assert service.fence is not None
    now = utcnow()
    generation = now.strftime("%Y%m%dT%H%M%S%f") if force else (previous or "none")[:12]
    key = f"import_jobs:{import_type}:{digest[:40]}:{generation}"
    auto_archive = service.policy.imports_auto_archive
    intent = Intent(
        idempotency_key=key,
        kind=ActionKind.IMPORT,
        source=service.source.name,
        ref=None,
        reason=f"job file changed ({digest[:12]}, type {import_type}, autoArchive {auto_archive})",
        payload={
            "csv_base64": base64.b64encode(data).decode("ascii"),
            "type": import_type,
            "autoArchive": auto_archive,
            "filename": f"erpsync-jobs-{digest[:12]}.csv",
        },
    )
    with service.uow(service.fence) as uow:
        if uow.actions.existing_keys([key]):
            return None
        (entry,) = uow.actions.record([intent], service.journal_stamp(now))
    return entry


def _remember(service: SyncService, stream: str, digest: str, rows: int) -> None:
    with service.uow() as uow:
        uow.checkpoints.remember_digest(service.source.name, stream, digest, rows)
