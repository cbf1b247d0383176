"""The local stack's supervisor: a process that exits is restarted with a growing delay, one that cannot stay up is
given up and named, and `reaseq status` and the page show a process that is gone as down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.supervisor import Supervisor, last_error
from reaseq.runfiles import ComponentSpec, pid_alive, read_report, want
from reaseq.settings import Settings
from tests.test_cli import isolated_env, reaseq


def test_a_process_that_cannot_stay_up_is_restarted_with_backoff_then_given_up(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, supervisor_max_failures=3, supervisor_backoff_max_s=0.5)
    want(settings, add=[ComponentSpec(name="broken", args=["no-such-command"])])
    supervisor = Supervisor(settings, "127.0.0.1:9")
    starts: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        supervisor.tick()
        report = read_report(settings)
        assert report is not None
        broken = report.components["broken"]
        if broken.state == "running" and (not starts or broken.pid != starts[-1]):
            starts.append(broken.pid or 0)
        if broken.state == "failed":
            break
        time.sleep(0.05)
    assert broken.state == "failed" and broken.restarts == 2 and len(starts) == 3, broken
    assert broken.exit_code == 2 and "No such command" in (broken.last_error or ""), broken
    assert "could not stay up" in broken.describe() and str(tmp_path / "run" / "broken.log") in broken.describe()


def test_a_component_no_longer_wanted_is_stopped(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    want(settings, add=[ComponentSpec(name="sleeper", args=["worker"])])  # waits for a broker that never answers
    supervisor = Supervisor(settings, "127.0.0.1:9")
    supervisor.tick()
    report = read_report(settings)
    assert report is not None and report.components["sleeper"].state == "running"
    pid = report.components["sleeper"].pid
    assert pid is not None
    want(settings, remove=["sleeper"])
    supervisor.tick()
    report = read_report(settings)
    assert report is not None and "sleeper" not in report.components and not pid_alive(pid)


def test_last_error_reads_json_records_and_tracebacks(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    record = {"level": "error", "msg": "worker crashed", "exc": "Traceback ...\nKeyError: 'x'"}
    log.write_text(
        "\n".join(["plain start-up line", json.dumps(record), json.dumps({"level": "info", "msg": "fine"})]) + "\n"
    )
    assert last_error(log) == "worker crashed: KeyError: 'x'"
    log.write_text("Traceback (most recent call last):\n  File x\nFileNotFoundError: config.json\n")
    assert last_error(log) == "FileNotFoundError: config.json"
    assert last_error(tmp_path / "none.log") == "(no log)"


def _report(state_dir: Path) -> dict[str, Any]:
    return json.loads((state_dir / "run" / "supervisor.json").read_text())["components"]


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout_s} s")


@pytest.mark.integration
def test_a_killed_stack_process_comes_back_and_a_gone_one_is_shown_down(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, uuid.uuid4().hex[:6])
    state_dir = tmp_path / "state"
    reaseq(env, "up", "--workers", "1", "--no-serve")
    try:
        before = _report(state_dir)["interests"]["pid"]
        os.kill(before, signal.SIGKILL)
        _wait(
            lambda: (
                _report(state_dir)["interests"]["restarts"] == 1
                and _report(state_dir)["interests"]["state"] == "running"
            ),
            30,
            "the interest worker restarted",
        )
        interests = _report(state_dir)["interests"]
        assert interests["pid"] != before and interests["exit_code"] == -signal.SIGKILL
        status = reaseq(env, "status")  # exits 0: every process runs again
        assert "running" in status and "1 restart" in status

        # With the supervisor gone, a process that dies stays down, and both say so.
        run = json.loads((state_dir / "run" / "stack.json").read_text())
        os.kill(run["supervisor_pid"], signal.SIGKILL)
        os.kill(_report(state_dir)["enrich"]["pid"], signal.SIGKILL)
        done = subprocess.run(
            [sys.executable, "-m", "infra.cli", "status"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "down: enrich, supervisor" in done.stdout, done.stdout
        url = run["web"]["url"]

        def enrichment_down() -> bool:
            with urllib.request.urlopen(f"{url}api/health", timeout=10) as response:
                components = {c["name"]: c for c in json.loads(response.read())["components"]}
            return (
                components.get("enrichment worker", {}).get("state") == "down"
                and components.get("supervisor", {}).get("state") == "down"
            )

        _wait(enrichment_down, 30, "the page shows the enrichment worker and the supervisor down")
    finally:
        reaseq(env, "down")
    assert not (state_dir / "run" / "stack.json").exists()
    leftover = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    assert not [line for line in leftover if str(tmp_path) in line and pid_alive(int(line.split()[0]))]
