"""The sync flow's service modules reach state and MM only through service/ports.py.

(tests/unit/test_layers.py will hold the whole service layer to this once every module is on the
ports; until then these modules are checked here.)
"""

from __future__ import annotations

import pytest

from tests.unit.test_layers import PACKAGE, imported_modules

FLOW = ("sync", "dispatch", "recovery", "imports", "resync", "cycles", "policy")
FORBIDDEN = ("sqlalchemy", "erpsync.adapters.state")


@pytest.mark.parametrize("module", FLOW)
def test_the_flow_imports_no_sql_and_no_state_adapter(module: str) -> None:
    path = PACKAGE / "service" / f"{module}.py"
    broken = [
        f"{module}.py:{line} imports {name}"
        for line, name in imported_modules(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    ]
    assert not broken, "\n".join(broken)
