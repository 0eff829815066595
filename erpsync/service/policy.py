"""What the sync flow needs to know from the configuration, and nothing else.

The services take a `SyncPolicy` instead of the whole `Settings`, so a test builds one in a line
and a reader sees which settings steer a cycle. `from_settings` is the one place that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from erpsync.config import Settings
from erpsync.domain.drift import HealDrift
from erpsync.domain.machines import MachineMapper

# CSV source kinds whose export file MM imports as it is (`sync.imports.mode = "passthrough"`)
PASSTHROUGH_TYPES = {"infor-visual-csv": "inforVisual", "infor-ln-csv": "inforLN"}


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """The knobs of sync, dispatch, recovery, imports and resync."""

    mapper: MachineMapper
    vanished_runs: Literal["stop", "flag"] = "flag"
    heal_drift: HealDrift = "restart"  # a run MM lost or ended (domain/drift.py)
    max_vanished_share: float = 0.5  # more vanished stops at once are held (service/stop_guard.py)
    max_concurrency: int = 16
    max_action_attempts: int = 8
    in_doubt_after_seconds: float = 30
    imports_mode: Literal["build", "passthrough"] = "build"
    imports_auto_archive: bool = False
    passthrough_file: Path | None = None  # the CSV source's file, when MM can import it as it is
    passthrough_type: str | None = None  # its MM import type (inforVisual, inforLN)

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncPolicy:
        source = settings.source
        passthrough_type = PASSTHROUGH_TYPES.get(source.kind) if source is not None else None
        return cls(
            mapper=MachineMapper.from_settings(settings.machines),
            vanished_runs=settings.sync.vanished_runs,
            heal_drift=settings.sync.heal_drift,
            max_vanished_share=settings.sync.max_vanished_share,
            max_concurrency=settings.mm.max_concurrency,
            max_action_attempts=settings.sync.max_action_attempts,
            in_doubt_after_seconds=settings.sync.in_doubt_after_seconds,
            imports_mode=settings.sync.imports.mode,
            imports_auto_archive=settings.sync.imports.auto_archive,
            passthrough_file=source.csv.path if source is not None and passthrough_type else None,
            passthrough_type=passthrough_type,
        )
