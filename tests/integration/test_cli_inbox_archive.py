"""An inbox whose archive/ cannot be created: a clear error naming the folder, and the inbox goes on.

A real `erpsync sync` subprocess reads an Infor LN export dropped into the inbox, where `archive`
is a plain file (so the folder cannot be created, whoever runs the test). Each cycle says which
folder to fix, without a traceback; a newer export dropped later is still read and sent to MM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from erpsync.adapters.mm.simulator import MMSimulator
from tests.fixtures_mm import FAST_RETRIES

HEADER = "tisfc010.pdno;tisfc010.opno;tisfc010.mcno;tisfc010.qcmp;tisfc010.opst\n"


def sync(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "erpsync", "--config", str(config), "sync"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def drop(inbox: Path, name: str, rows: str, age: float) -> None:
    path = inbox / name
    path.write_text(HEADER + rows, encoding="utf-8")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))


def test_unwritable_archive_is_named_and_newer_files_are_still_processed(
    tmp_path: Path, database_url: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "archive").write_text("not a folder\n", encoding="utf-8")
    with MMSimulator(machines={"M1", "M2"}, seed=5) as sim:
        config = tmp_path / "erpsync.toml"
        mm = "\n".join(f"{k} = {json.dumps(v)}" for k, v in FAST_RETRIES.items())
        config.write_text(
            f'[state]\nurl = "{database_url}"\n'
            f'[mm]\nbase_url = "{sim.base_url}"\napi_key = "{sim.api_key}"\n{mm}\n'
            '[source]\nkind = "infor-ln-csv"\nname = "ln"\ntimezone = "Europe/Amsterdam"\n'
            f'[source.csv]\ninbox = "{inbox}"\nsettle_seconds = 1\n'
            "[service]\nlease_ttl_seconds = 2\nlease_renew_seconds = 0.5\n"
            '[logging]\nformat = "json"\n',
            encoding="utf-8",
        )
        setup = subprocess.run(
            [sys.executable, "-m", "erpsync", "--config", str(config), "db", "upgrade"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert setup.returncode == 0, setup.stderr

        drop(inbox, "monday.csv", "PO1;10;M1;1;Actief\n", age=120)
        first = sync(config)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "Traceback" not in first.stderr
        assert str(inbox / "archive") in first.stderr and "monday.csv" in first.stderr
        assert [r["machine_id"] for r in sim.runs().values()] == ["M1"]

        drop(inbox, "tuesday.csv", "PO1;10;M1;1;Actief\nPO2;10;M2;1;Actief\n", age=60)
        second = sync(config)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "Traceback" not in second.stderr
        assert str(inbox / "archive") in second.stderr
        assert sorted(r["machine_id"] for r in sim.runs().values()) == ["M1", "M2"]
        # both files stay in the inbox, each processed once
        assert "started 1" in second.stdout
        assert (inbox / "monday.csv").exists() and (inbox / "tuesday.csv").exists()
        third = sync(config)
        assert third.returncode == 0 and "started 0" in third.stdout, third.stdout + third.stderr
