"""The ``[machines]`` and ``[sync]`` sections: how ERP machines map to MM and how the cycle runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from erpsync.config.section import PositiveSeconds, Section


class MachineSettings(Section):
    """ERP resource id → MachineMetrics ``erpMachineId``: identity unless overridden."""

    normalize: Literal["exact", "trim", "trim-casefold"] = "trim"
    overrides: dict[str, str] = {}
    ignore: list[str] = []


class ImportSettings(Section):
    """Job imports (the MM job CSV), uploaded only when their content changed."""

    enabled: bool = False
    mode: Literal["build", "passthrough"] = "build"
    auto_archive: bool = False
    interval_seconds: PositiveSeconds = 900


class SyncSettings(Section):
    """The reconcile-and-dispatch cycle."""

    interval_seconds: PositiveSeconds = 30
    vanished_runs: Literal["stop", "flag"] = "flag"
    # a snapshot that would stop more than this share of the open runs at once stops none of them
    max_vanished_share: float = Field(default=0.5, gt=0, le=1)
    max_action_attempts: int = Field(default=8, ge=1)
    in_doubt_after_seconds: PositiveSeconds = 30
    imports: ImportSettings = ImportSettings()
