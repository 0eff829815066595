"""The port every ERP source implements; the service layer sees nothing else of a source."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Protocol

from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, SourceStats


class RunSnapshot(Protocol):
    """One read of the ERP's runs.

    `complete` is True when the snapshot holds every run the ERP considers current, so a run
    erpsync has open that is absent (and not found by `JobSource.lookup_runs`) has vanished.
    Iterate it once; bad rows come out as `BadRecord` next to the good ones.
    """

    complete: bool
    stats: SourceStats

    @property
    def suspect(self) -> str | None:
        """Why this snapshot cannot be trusted to stop runs (a truncated last line, a header-only
        export...), or None; known once it has been iterated (`SourceStats.suspect`). A suspect
        snapshot stops nothing: the service flags it until a person or a good snapshot confirms."""

    def __iter__(self) -> Iterator[JobOperationRun | BadRecord]: ...


class JobSource(Protocol):
    """Reads job operations and their runs from one ERP (database or CSV exports). Read-only."""

    name: str

    def read_runs(self) -> RunSnapshot | None:
        """Active runs plus recently ended ones; None when nothing is new since the last ack."""

    def lookup_runs(self, run_keys: Collection[str]) -> Iterator[JobOperationRun | BadRecord]:
        """The current state of specific runs, e.g. ones MM has open that left the active set."""

    def read_operations(self) -> Iterator[JobOperation | BadRecord]:
        """Operations to import into MM as jobs (released, machine operations only)."""

    def acknowledge(self, snapshot: RunSnapshot) -> None:
        """The cycle that used `snapshot` is committed: advance checkpoints, archive files."""

    def close(self) -> None:
        """Release connections and file handles."""
