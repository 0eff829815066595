"""The ``[machines]`` and ``[sync]`` sections: how ERP machines map to MM and how the cycle runs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from erpsync.config.section import Range, Seconds, Section
from erpsync.domain.drift import HealDrift
from erpsync.domain.lifecycle import MM_MACHINE_MAX

_ATTEMPTS = Range(1, 100, "attempts")


class MachineSettings(Section):
    """ERP resource id → MachineMetrics ``erpMachineId``: identity unless overridden."""

    normalize: Literal["exact", "trim", "trim-casefold"] = "trim"
    overrides: dict[str, str] = {}
    ignore: list[str] = []

    @field_validator("overrides")
    @classmethod
    def _mm_ids_fit(cls, value: dict[str, str]) -> dict[str, str]:
        # an MM machine id is stored whole with every run (a 255-character column) and sent
        # again from there when a run switches to production
        for erp_machine, mm_machine in value.items():
            if not mm_machine.strip() or len(mm_machine) > MM_MACHINE_MAX:
                raise ValueError(
                    f"the MM machine id for {erp_machine[:80]!r} must be 1 to {MM_MACHINE_MAX} characters"
                )
        return value


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
    # a run erpsync holds open that MM lost or ended (found by reads erpsync makes anyway): start a
    # new run generation for it in the next cycle, or flag it for a person (domain/drift.py)
    heal_drift: HealDrift = "restart"
    # a snapshot that would stop more than this share of the open runs at once stops none of them
    max_vanished_share: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    max_action_attempts: Annotated[int, _ATTEMPTS.before, _ATTEMPTS.after] = 8
    in_doubt_after_seconds: Seconds = 30
    imports: ImportSettings = ImportSettings()
