"""ERP resource id -> MachineMetrics ``erpMachineId``.

MM starts a job run on the machine whose "ERP Machine ID" setting equals the ``erpMachineId`` we
send, so by default the ERP resource id is sent as is (identity). ERP ids are often padded
(``nchar``) or typed in mixed case, hence the normalisation modes:

- ``exact``: the id as the ERP gives it; ``" M1"`` and ``"M1"`` are different machines.
- ``trim`` (default): surrounding whitespace dropped; the result keeps its case.
- ``trim-casefold``: trimmed and case-folded, so ``"mill 1 "`` and ``"MILL 1"`` are one machine.
  The id sent to MM is then the folded form (``"mill 1"``): enter it that way as the ERP Machine
  ID in MM, or map the resource with an override to MM's exact spelling.

Override keys and ignore entries are normalised the same way as the ids they are compared with;
override values are MM ids and are sent verbatim (only trimmed). Pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Literal, get_args

from erpsync.domain.errors import ConfigError

if TYPE_CHECKING:
    from erpsync.config import MachineSettings

Normalize = Literal["exact", "trim", "trim-casefold"]
NORMALIZE_MODES: tuple[str, ...] = get_args(Normalize)


def _exact(value: str) -> str:
    return value


def _trim(value: str) -> str:
    return value.strip()


def _trim_casefold(value: str) -> str:
    return value.strip().casefold()


_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "exact": _exact,
    "trim": _trim,
    "trim-casefold": _trim_casefold,
}


class MachineMapper:
    """Maps ERP resource ids to MM machine ids: identity, overrides, ignore list."""

    __slots__ = ("_ignore", "_normalize", "_overrides", "normalize")

    def __init__(
        self,
        normalize: Normalize = "trim",
        overrides: Mapping[str, str] | None = None,
        ignore: Collection[str] = (),
    ) -> None:
        if normalize not in _NORMALIZERS:
            raise ConfigError(
                f"machines.normalize: bad value {normalize!r}; expected one of {', '.join(NORMALIZE_MODES)}"
            )
        self.normalize: Normalize = normalize
        self._normalize = _NORMALIZERS[normalize]
        self._overrides: dict[str, str] = {}
        for erp_id, mm_id in (overrides or {}).items():
            key = self._normalize(erp_id)
            target = mm_id.strip()
            if not key.strip():
                raise ConfigError("machines.overrides: an override key is blank; name the ERP resource id")
            if not target:
                raise ConfigError(
                    f"machines.overrides: {erp_id!r} maps to a blank MM machine id; "
                    "to skip the resource put it in machines.ignore instead"
                )
            previous = self._overrides.get(key)
            if previous is not None and previous != target:
                raise ConfigError(
                    f"machines.overrides: {erp_id!r} and another key are the same resource after "
                    f"normalize = {normalize!r} but map to {previous!r} and {target!r}; keep one"
                )
            self._overrides[key] = target
        self._ignore = frozenset(self._normalize(name) for name in ignore)

    @classmethod
    def from_settings(cls, settings: MachineSettings) -> MachineMapper:
        """Build the mapper from the ``[machines]`` config section."""
        return cls(normalize=settings.normalize, overrides=settings.overrides, ignore=settings.ignore)

    def key(self, erp_machine: str) -> str:
        """The normalised ERP id: what overrides and the ignore list are matched against."""
        return self._normalize(erp_machine)

    @staticmethod
    def is_blank(erp_machine: str) -> bool:
        """True when the ERP gave no machine at all (empty or whitespace), in every mode."""
        return not erp_machine.strip()

    def is_ignored(self, erp_machine: str) -> bool:
        """True when the resource is listed in ``machines.ignore``."""
        return self._normalize(erp_machine) in self._ignore

    def map(self, erp_machine: str) -> str | None:
        """The MM ``erpMachineId`` for an ERP resource id; None when ignored or blank."""
        if not erp_machine.strip():
            return None
        key = self._normalize(erp_machine)
        if key in self._ignore:
            return None
        return self._overrides.get(key, key)
