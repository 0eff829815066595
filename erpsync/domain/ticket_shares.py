"""Which of erpsync's own values each run has in a target that holds the sum of several runs.

A reopened VISUAL labor ticket keeps one GOOD_QTY / BAD_QTY for all of its run generations
(docs/architecture.md "Counts"). Each run's part of it is one of the values erpsync wrote or set
out to write for that run: its last written value, or one of its writes in doubt (a crash after
the ERP commit leaves the writes of every run of that transaction in doubt at once). So the
ticket holds erpsync's own value when it is the sum of one own value per run, whichever each is;
any other value was typed by a person (a conflict).

The runs being written replace their parts; the others' parts stay. When two combinations make
the ticket's value but leave different totals for the runs that are not being written, erpsync
cannot tell what to write: it writes nothing rather than guess (`AMBIGUOUS`), and the next cycle,
which writes those runs too, settles it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from erpsync.domain.writeback_rules import CountValues

# How many distinct partial sums `ticket_shares` follows before it gives up (a conflict for a
# person, never an overwrite). Each run has a few own values, so real tickets stay far below it.
SHARE_SUMS_LIMIT = 10_000

Sum = tuple[int | Decimal, ...]


@dataclass(frozen=True, slots=True)
class Shares:
    """What a ticket's value says about its runs: `own` (then `writing` holds each written run's
    part, in order), `conflict` (no combination of own values makes it) or `ambiguous`."""

    verdict: Literal["own", "conflict", "ambiguous"]
    writing: tuple[CountValues, ...] = ()


CONFLICT = Shares("conflict")
AMBIGUOUS = Shares("ambiguous")


def ticket_shares(
    current: CountValues, writing: Sequence[Sequence[CountValues]], others: Sequence[Sequence[CountValues]]
) -> Shares:
    """Which own value each run being written has in the ticket that holds `current`.

    ``writing[i]``: the values written run i may hold there, preferred first (the value about to be
    written, the last written, the writes in doubt; blank when nothing was written);
    ``others[j]``: the same for a run of the ticket that is not written now (last written first).
    """
    keys = tuple(current)
    goal: Sum = tuple(current[key] for key in keys)
    # counts never go below 0, so a partial sum above the ticket's value leads nowhere
    every = [value for runs in (writing, others) for values in runs for value in values]
    prune = all(v >= 0 for value in every for v in value.values())
    written = _sums(goal, keys, writing, prune)
    kept = _sums(goal, keys, others, prune)
    if written is None or kept is None:
        return CONFLICT
    # each total of the written runs leaves its own remainder for the others: one match, one answer
    matches = [total for total in written if tuple(g - t for g, t in zip(goal, total, strict=True)) in kept]
    if not matches:
        return CONFLICT
    if len(matches) > 1:
        return AMBIGUOUS
    picks = written[matches[0]]
    return Shares("own", tuple(writing[n][pick] for n, pick in enumerate(picks)))


def _sums(
    goal: Sum, keys: tuple[str, ...], runs: Sequence[Sequence[CountValues]], prune: bool
) -> dict[Sum, tuple[int, ...]] | None:
    """Every total of one value per run (up to `goal` when pruning), each with the first choice of
    values, in the runs' preference, that makes it; None past `SHARE_SUMS_LIMIT`."""
    sums: dict[Sum, tuple[int, ...]] = {tuple(0 for _ in keys): ()}
    for values in runs:
        grown: dict[Sum, tuple[int, ...]] = {}
        for partial, picks in sums.items():
            for pick, value in enumerate(values):
                total = tuple(p + value[key] for p, key in zip(partial, keys, strict=True))
                if not (prune and any(t > g for t, g in zip(total, goal, strict=True))):
                    grown.setdefault(total, (*picks, pick))
        if len(grown) > SHARE_SUMS_LIMIT:
            return None
        sums = grown
    return sums
