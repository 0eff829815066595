"""The composition root: the only place that picks real adapters and wires them into the service.

- erpsync/bootstrap/jobs.py: `build_service(settings)`, the long-running `Service` that
  `erpsync serve` runs, and its scheduled jobs (each holding its leadership term's fence);
- erpsync/bootstrap/commands.py: what the other `erpsync` commands run on (`state`, `mm`,
  `sync_service`, `writeback`, `quarantine_admin`, ...); the CLI composes only through these.

Importing this package is cheap: the service's wiring (MM client, scheduler, ORM) loads on first
use of one of its names, so `erpsync status` never pays for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from erpsync.bootstrap.commands import (
    QuarantineWork,
    Schema,
    erp_source,
    lease_status,
    mm,
    quarantine_admin,
    schema,
    state,
    state_reader,
    state_store,
    sync_service,
    writeback,
    writeback_engine,
)

if TYPE_CHECKING:
    from erpsync.bootstrap.jobs import (
        build_jobs,
        build_service,
        import_job,
        open_client,
        open_sync,
        purge_job,
        recover,
        sync_job,
        writeback_job,
    )

_JOBS = frozenset(
    {
        "build_jobs",
        "build_service",
        "import_job",
        "open_client",
        "open_sync",
        "purge_job",
        "recover",
        "sync_job",
        "writeback_job",
    }
)


def __getattr__(name: str) -> Any:
    """The service's wiring (jobs.py), imported when first asked for."""
    if name in _JOBS:
        return getattr(importlib.import_module("erpsync.bootstrap.jobs"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "QuarantineWork",
    "Schema",
    "build_jobs",
    "build_service",
    "erp_source",
    "import_job",
    "lease_status",
    "mm",
    "open_client",
    "open_sync",
    "purge_job",
    "quarantine_admin",
    "recover",
    "schema",
    "state",
    "state_reader",
    "state_store",
    "sync_job",
    "sync_service",
    "writeback",
    "writeback_engine",
    "writeback_job",
]
