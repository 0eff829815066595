"""Logging set up on first use (status, audit) prints what the pipeline set up front prints.

Each case runs in its own interpreter: the pipeline replaces process-wide hooks and handlers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SETUPS = {
    "up front": "from erpsync.runtime.logging import configure_logging as setup",
    "on first use": "from erpsync.runtime.deferred_logging import configure_logging_on_first_use as setup",
}
CASES = {
    "records": """
import logging
logging.getLogger("erpsync.cli").debug("below the level: dropped")
logging.getLogger("sqlalchemy.engine").info("SELECT 1: a chatty library, dropped")
logging.getLogger("erpsync.cli").warning("state database %s is slow", "state.url")
try:
    raise ValueError("bad row 7")
except ValueError:
    logging.getLogger("erpsync.cli").exception("read failed")
""",
    "uncaught": """
raise RuntimeError("unexpected: row 12 has no id")
""",
    "uncaught in a thread": """
import threading
def work():
    raise RuntimeError("worker failed on row 3")
thread = threading.Thread(target=work, name="reader")
thread.start()
thread.join()
""",
}


def _run(setup: str, case: str) -> tuple[int, list[dict[str, object]]]:
    code = f"{setup}\nsetup('INFO', 'json')\n{case}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    for line in lines:
        line.pop("timestamp")
    return done.returncode, lines


@pytest.mark.parametrize("case", CASES)
def test_on_first_use_prints_what_up_front_prints(case: str) -> None:
    eager = _run(SETUPS["up front"], CASES[case])
    deferred = _run(SETUPS["on first use"], CASES[case])
    assert eager[1], "the case logs something"
    assert deferred == eager


def test_nothing_logged_nothing_imported() -> None:
    code = (
        f"{SETUPS['on first use']}\nsetup('DEBUG', 'console')\nimport logging, sys\n"
        "logging.getLogger('sqlalchemy.engine').info('chatty')\n"
        "print(sorted(m for m in sys.modules if m.startswith('structlog')))"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    assert done.stderr == ""
