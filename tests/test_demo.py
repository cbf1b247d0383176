"""`make demo` end to end, on a smaller world: every part finishes, the summary adds up, and nothing is left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reaseq.runfiles import pid_alive

pytestmark = pytest.mark.integration


def test_demo_runs_the_whole_system_and_stops_everything(tmp_path: Path) -> None:
    env = {**os.environ, "REASEQ_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "240", "REASEQ_LOG_LEVEL": "WARNING"}
    args = ["demo", "--items", "60", "--users", "30", "--events", "900", "--rate", "100"]
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    assert "900 in user state of 900 published" in out
    assert re.search(r"users with interests / reasoning steps\s+│ 30 / 30", out)
    assert "invalid 1" in out and "malformed-json 1" in out and "unknown-schema-version 1" in out
    assert out.count("recommendations (Triton, model,") == 3 and out.count("reasoning steps (the mined pattern") == 3
    assert "freshness: event -> user state" in out and "p50" in out
    assert "stopped Triton, the workers and the broker" in out
    run_file = tmp_path / "state" / "demo" / "state" / "run" / "stack.json"
    assert not run_file.exists()
    leftover = [
        line
        for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
        if str(tmp_path) in line
    ]
    assert not [line for line in leftover if pid_alive(int(line.split()[0]))], leftover
