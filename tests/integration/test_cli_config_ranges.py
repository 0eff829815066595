"""`erpsync config check` bounds every duration and count; `serve` starts with anything it accepts.

`inf`, `nan`, `1e12`, `1e300` or a negative value used to pass `config check` and then make `serve`
refuse to start (APScheduler, `Event.wait` and `timedelta` overflow). Each is now refused by
`config check` with exit 2 and one line naming the key and its range (#19).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from tests.integration.test_service_lifecycle import Serve, wait_for
from tests.sync_helpers import Shop, local, write_config

KEYS = [
    ("sync", "interval_seconds", "from 0.1 to 86400"),
    ("sync", "in_doubt_after_seconds", "from 0.1 to 86400"),
    ("sync", "max_action_attempts", "from 1 to 100"),
    ("mm", "read_timeout_seconds", "from 0.1 to 600"),
    ("mm", "retry_deadline_seconds", "from 0.1 to 86400"),
    ("mm", "max_attempts", "from 1 to 50"),
    ("service", "job_timeout_seconds", "from 0.1 to 86400"),
    ("service", "purge_interval_seconds", "from 0.1 to 86400"),
    ("service", "audit_retention_days", "from 1 to 36500"),
    ("writeback", "interval_seconds", "from 0.1 to 86400"),
    ("writeback", "settle_window_minutes", "from 0 to 10080"),
    ("writeback", "max_part_count", "from 1 to 10000000000"),
    ("state", "connect_timeout_seconds", "from 0.1 to 600"),
]
VALUES = ["inf", "-inf", "nan", "1e12", "1e300", "-1"]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("value", VALUES)
def test_config_check_refuses_unbounded_values_naming_key_and_range(tmp_path: Path, value: str) -> None:
    """One file per value with every key set to it: one line per key, each naming its range."""
    sections: dict[str, list[str]] = {}
    for section, key, _ in KEYS:
        sections.setdefault(section, []).append(f"{key} = {value}")
    text = "".join(f"[{name}]\n" + "\n".join(lines) + "\n" for name, lines in sections.items())
    path = tmp_path / "erpsync.toml"
    path.write_text(text, encoding="utf-8")
    proc = check(path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error: ")
    lines = [line.removeprefix("error: ") for line in proc.stderr.splitlines()]
    for section, key, expected in KEYS:
        found = [line for line in lines if line.startswith(f"{section}.{key}:")]
        assert len(found) == 1, (section, key, proc.stderr)
        assert "expected a finite number of" in found[0] and expected in found[0], found[0]


@pytest.mark.parametrize(
    ("name", "ok"),
    [("erp", True), ("visual-plant_2.a", True), ("x" * 64, True), ("x" * 65, False), ("erp:1", False),
     ("plant 1", False), ("-erp", False), ("wérk", False)],
)  # fmt: skip
def test_config_check_refuses_a_source_name_that_cannot_fit(tmp_path: Path, name: str, ok: bool) -> None:
    path = tmp_path / "erpsync.toml"
    path.write_text(
        f'[mm]\napi_key = "k"\n[source]\nname = "{name}"\nurl = "sqlite:///erp.db"\n', encoding="utf-8"
    )
    proc = check(path)
    if ok:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: source.name:"), proc.stderr
    assert "1 to 64 characters of A-Z a-z 0-9 . _ -" in proc.stderr


def test_serve_starts_with_the_largest_values_config_check_accepts(tmp_path: Path) -> None:
    """Every interval, timeout and window at its upper bound: `serve` runs a cycle and stops on
    SIGTERM (an interval of a day must not overflow the scheduler or a wait)."""
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    shop = Shop(erp_url, machines=1)
    shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
    with MMSimulator(seed=5) as sim:
        config = write_config(
            tmp_path / "erpsync.toml",
            erp_url,
            state_url,
            sim,
            sections={
                "sync": {
                    "interval_seconds": 86_400,
                    "in_doubt_after_seconds": 86_400,
                    "max_action_attempts": 100,
                },
                "writeback": {"sink": "none", "interval_seconds": 86_400, "settle_window_minutes": 10_080},
                "service": {
                    "job_timeout_seconds": 86_400,
                    "max_cycle_age_seconds": 86_400,
                    "purge_interval_seconds": 86_400,
                    "audit_retention_days": 36_500,
                    "history_retention_days": 36_500,
                    "stop_grace_seconds": 300,
                },
            },
            read_timeout_seconds=600,
            connect_timeout_seconds=600,
            retry_deadline_seconds=86_400,
            backoff_max_seconds=3_600,
            breaker_reset_seconds=86_400,
        )
        assert check(config).returncode == 0
        store = StateStore(create_db_engine(state_url))
        migrate.upgrade(store.engine)
        store.dispose()
        serve = Serve(config, "bounds", tmp_path)
        try:
            wait_for(lambda: len(sim.runs()) == 1, 60, "the first cycle's start to reach MM")
            assert serve.proc.poll() is None, serve.log.read_text()
            serve.proc.send_signal(signal.SIGTERM)
            assert serve.proc.wait(30) == 0, serve.log.read_text()
        finally:
            serve.kill()
    shop.dispose()


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (f'[service]\ninstance_name = "{"i" * 129}"\n', "service.instance_name"),
        (f'[machines.overrides]\nHAAS-1 = "{"m" * 256}"\n', "machines.overrides"),
    ],
)
def test_config_check_refuses_names_too_long_for_state(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "erpsync.toml"
    path.write_text(toml, encoding="utf-8")
    proc = check(path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {key}:"), proc.stderr
    assert "Traceback" not in proc.stderr
