"""The package's layers, checked on the source (imports at any depth, type-checking ones included).

- `domain` is pure: it imports no adapter, no runtime, no service, no observability, and no I/O
  library (SQLAlchemy, httpx, APScheduler);
- adapters never import the runtime, the service layer or the CLI: what they share with the runtime
  (metrics, correlation, crash points, scrubbing) lives in the leaf package `observability`;
- `observability` imports nothing else of erpsync;
- the service layer runs on its ports (erpsync/service/ports.py): no SQLAlchemy, no state adapter,
  no runtime, CLI or composition root;
- the CLI composes only through erpsync/bootstrap: it opens no state store, MM client, ERP source
  or sink itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "erpsync"

FORBIDDEN = {
    "domain": (
        "erpsync.adapters",
        "erpsync.runtime",
        "erpsync.service",
        "erpsync.cli",
        "erpsync.bootstrap",
        "erpsync.observability",
        "sqlalchemy",
        "httpx",
        "apscheduler",
    ),
    "adapters": ("erpsync.runtime", "erpsync.service", "erpsync.cli", "erpsync.bootstrap"),
    "service": (
        "sqlalchemy",
        "erpsync.adapters.state",
        "erpsync.runtime",
        "erpsync.cli",
        "erpsync.bootstrap",
    ),
    "cli": (
        "erpsync.adapters.state",
        "erpsync.adapters.mm.client",
        "erpsync.adapters.erp.factory",
        "erpsync.adapters.erp.sinks.factory",
    ),
    "observability": (
        "erpsync.adapters",
        "erpsync.runtime",
        "erpsync.service",
        "erpsync.cli",
        "erpsync.bootstrap",
        "erpsync.domain",
        "erpsync.config",
    ),
}


# (file, module) imports a rule allows for a reason of its own
ALLOWED = {
    # turns a database error into its one-line message: no composition
    ("erpsync/cli/common.py", "erpsync.adapters.state.db"),
    # tells a refused database login (exit 2) from an outage (exit 1): no composition
    ("erpsync/cli/exit_codes.py", "erpsync.adapters.state.db"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no module under erpsync/{layer}"
    broken = [
        f"{name}:{line} imports {module}"
        for path in files
        for name in [path.relative_to(PACKAGE.parent).as_posix()]
        for line, module in imported_modules(path)
        if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[layer])
        and (name, module) not in ALLOWED
    ]
    assert not broken, "\n".join(broken)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The rule is not vacuous: a module importing the runtime is reported."""
    module = tmp_path / "bad.py"
    module.write_text("from erpsync.runtime.metrics import X\nimport sqlalchemy.orm\n", encoding="utf-8")
    assert imported_modules(module) == [(1, "erpsync.runtime.metrics"), (2, "sqlalchemy.orm")]
