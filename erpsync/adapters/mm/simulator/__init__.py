"""A strict, stateful, deliberately misbehaving MachineMetrics API for tests, benchmarks and the demo.

`MMModel` (`model`) is the one model of MM: the documented auth, validation and error shapes
(`state`, `wire`), runs that make parts (`runs`), job files parsed like MM's importer (`jobfiles`),
and faults injected on purpose (`faults`): 5xx, 429 + Retry-After, latency, dropped connections and
apply-then-fail. `MMSimulator` serves it over real HTTP on loopback (`server`, `handler`);
erpsync/adapters/mm/fake.py calls it in process. Run the simulator with ``erpsync simulator`` or
in-process::

    with MMSimulator(machines={"M1"}) as sim:
        client = MMClient(MMSettings(base_url=sim.base_url, api_key=sim.api_key))

It is a test tool, never a production dependency: control endpoints under ``/_sim/`` need no auth,
so it listens on loopback unless told otherwise.
"""

from erpsync.adapters.mm.simulator.faults import Fault, FaultKind
from erpsync.adapters.mm.simulator.handler import SimPaths
from erpsync.adapters.mm.simulator.model import MMModel
from erpsync.adapters.mm.simulator.server import MMSimulator

__all__ = ["Fault", "FaultKind", "MMModel", "MMSimulator", "SimPaths"]
