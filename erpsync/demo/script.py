"""What happens on the demo's shop floor, and when: the operators' clock-ins and clock-outs.

Each step is something a person does in the ERP (or, once, in MachineMetrics); erpsync is never
told about it and has to notice on its own, as in production. Steps are placed at fractions of
the demo's length, all within the first 70 %, so the service has a few cycles left to catch up
before the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from erpsync.demo.erp import JOBS_BY_ID, OPERATORS, DemoErp

UNKNOWN_MACHINE = "DMG-DMU50"


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a person does, `at` seconds after the service started."""

    at: float
    text: str
    act: Callable[[], None]


def _job(job_id: str) -> str:
    job = JOBS_BY_ID[job_id]
    return f"job {job.name} op {job.seq}"


class ShopFloor:
    """The operators, and the machines they are clocked in on (machine -> open ticket)."""

    def __init__(self, erp: DemoErp, add_machine_in_mm: Callable[[str], None]) -> None:
        self.erp = erp
        self.add_machine_in_mm = add_machine_in_mm
        self.open: dict[str, int] = {}

    def start_of_shift(self) -> list[str]:
        """Who is already at work when erpsync starts (tickets opened minutes ago)."""
        self.open["HAAS-VF2"] = self.erp.clock_in("JALVAREZ", "24117", minutes_ago=25)
        self.open["OKUMA-LB3000"] = self.erp.clock_in("KNGUYEN", "24118", minutes_ago=40)
        self.erp.clock_in_indirect("DLEE", "MEETING")
        return [
            f"{OPERATORS['JALVAREZ']} has been running {_job('24117')} on HAAS-VF2 for 25 min",
            f"{OPERATORS['KNGUYEN']} has been running {_job('24118')} on OKUMA-LB3000 for 40 min",
            f"{OPERATORS['DLEE']} is clocked in to a meeting (indirect labor: not a machine run)",
        ]

    def steps(self, seconds: float) -> list[Step]:
        """The script, scaled to a demo of `seconds`."""
        plan: list[tuple[float, str, Callable[[], None]]] = [
            (
                0.05,
                f"{OPERATORS['TOKAFOR']} clocks in SETUP on MAZAK-QTN250, {_job('24119')}",
                self._setup,
            ),
            (
                0.15,
                f"{OPERATORS['RSINGH']} clocks in on {UNKNOWN_MACHINE}, {_job('24121')} "
                "(a new machine MachineMetrics does not know yet)",
                self._unknown_machine,
            ),
            (
                0.27,
                f"{OPERATORS['TOKAFOR']} finishes setup: setup ticket closed, RUN ticket opened",
                self._run,
            ),
            (
                0.37,
                f"{OPERATORS['JALVAREZ']} clocks out of {_job('24117')} on HAAS-VF2 "
                "(leaves the count to erpsync)",
                self._finish_vf2,
            ),
            (0.45, f"{OPERATORS['JALVAREZ']} clocks in on HAAS-VF2, {_job('24120')}", self._next_vf2),
            (
                0.53,
                f"IT adds {UNKNOWN_MACHINE} in MachineMetrics and runs `erpsync quarantine retry`",
                self._fix_machine,
            ),
            (
                0.60,
                f"{OPERATORS['KNGUYEN']} clocks out on OKUMA-LB3000 and types 25 good / 1 bad "
                "on the ticket by hand",
                self._typed_counts,
            ),
            (0.68, f"{OPERATORS['MBROOKS']} clocks in on HAAS-ST20, {_job('24122')}", self._st20),
        ]
        return [Step(round(fraction * seconds, 2), text, act) for fraction, text, act in plan]

    # -- the steps ------------------------------------------------------------------------------

    def _setup(self) -> None:
        self.open["MAZAK-QTN250"] = self.erp.clock_in("TOKAFOR", "24119", setup=True)

    def _unknown_machine(self) -> None:
        self.open[UNKNOWN_MACHINE] = self.erp.clock_in("RSINGH", "24121")

    def _run(self) -> None:
        self.erp.clock_out(self.open.pop("MAZAK-QTN250"))
        self.open["MAZAK-QTN250"] = self.erp.clock_in("TOKAFOR", "24119")

    def _finish_vf2(self) -> None:
        self.erp.clock_out(self.open.pop("HAAS-VF2"))

    def _next_vf2(self) -> None:
        self.open["HAAS-VF2"] = self.erp.clock_in("JALVAREZ", "24120")

    def _fix_machine(self) -> None:
        self.add_machine_in_mm(UNKNOWN_MACHINE)

    def _typed_counts(self) -> None:
        self.erp.clock_out(self.open.pop("OKUMA-LB3000"), good=25, bad=1)

    def _st20(self) -> None:
        self.open["HAAS-ST20"] = self.erp.clock_in("MBROOKS", "24122")
