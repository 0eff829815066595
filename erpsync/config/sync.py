"""The ``[machines]`` and ``[sync]`` sections: how ERP machines map to MM and how the cycle runs."""

from __future__ import annotations

from typing import Annotated, Literal

from erpsync.config.section import Range, Seconds, Section

_ATTEMPTS = Range(1, 100, "attempts")


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
    interval_seconds: Seconds = 900


class SyncSettings(Section):
    """The reconcile-and-dispatch cycle."""

    interval_seconds: Seconds = 30
    vanished_runs: Literal["stop", "flag"] = "flag"
    max_action_attempts: Annotated[int, _ATTEMPTS.before, _ATTEMPTS.after] = 8
    in_doubt_after_seconds: Seconds = 30
    imports: ImportSettings = ImportSettings()
