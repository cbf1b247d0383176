"""The local stack's supervisor: one detached process that runs the stack's processes and restarts any that exits.

What should run is ``run/components.json`` (a ``Wanted`` list), written by the commands that change the stack:
``reaseq up``, serving a model, a replay. Every tick the supervisor starts what is wanted and not running, stops
what runs and is no longer wanted, and writes what it sees to ``run/supervisor.json`` (a ``SupervisorReport``),
which ``reaseq status``, the operator page and the demo read.

A process that exits on its own is restarted after a delay that doubles from 1 s up to
``supervisor_backoff_max_s``; one that ran for ``supervisor_stable_s`` counts as healthy again. After
``supervisor_max_failures`` exits in a row without such a run it is left ``failed``: something it needs is wrong
and restarting cannot fix it. The embedded broker is watched, never restarted: its topics live in its memory,
so a new one would serve empty topics as if nothing had happened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from infra.processes import spawn_cli, stop_process
from reaseq.runfiles import (
    ComponentReport,
    ComponentSpec,
    SupervisorReport,
    log_tail,
    pid_alive,
    read_wanted,
    report_file,
    run_dir,
    write_atomically,
)
from reaseq.settings import Settings

log = logging.getLogger(__name__)

TICK_S = 0.5
BROKER = "broker"


def last_error(log_path: Path) -> str | None:
    """The last line of a log that names an error: an error record of ``reaseq.logs``, a traceback's last line, or
    else the last line (without the box a CLI error is drawn in)."""
    lines = [line.strip().strip(BOX).strip() for line in log_tail(log_path, 60).splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") in ("error", "critical"):
                exc = str(record.get("exc", "")).strip().splitlines()
                return (str(record.get("msg", "")) + (f": {exc[-1]}" if exc else ""))[:300]
        elif TRACEBACK_END.match(line):
            return line[:300]
    return lines[-1][:300] if lines else None


BOX = "│╭╮╰╯─┃━┏┓┗┛"
TRACEBACK_END = re.compile(r"^[\w.]*(Error|Exception): ")


class _Process:
    """What the supervisor knows of one wanted component."""

    def __init__(self, spec: ComponentSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.report = ComponentReport(name=spec.name, state="restarting", log=str(log_path))
        self.started_at = 0.0
        self.failures = 0  # exits in a row without a stable run


class Supervisor:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.processes: dict[str, _Process] = {}
        self.broker: ComponentReport | None = None
        self._stopping = False

    def run(self) -> None:
        """Reconcile every tick until SIGTERM or SIGINT, then stop every process it started."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: setattr(self, "_stopping", True))
        try:
            while not self._stopping:
                try:
                    self.tick()
                except Exception:  # e.g. a full disk: keep the processes it has, try again next tick
                    log.exception("supervisor tick failed")
                time.sleep(TICK_S)
        finally:
            for process in reversed(list(self.processes.values())):
                self._stop(process)
            report_file(self.settings).unlink(missing_ok=True)

    def tick(self) -> None:
        wanted = read_wanted(self.settings)
        specs = {spec.name: spec for spec in wanted.components}
        for name in [name for name in self.processes if name not in specs or specs[name] != self.processes[name].spec]:
            self._stop(self.processes.pop(name))
        now = time.time()
        for name, spec in specs.items():
            process = self.processes.setdefault(name, _Process(spec, run_dir(self.settings) / f"{name}.log"))
            self._watch(process, now)
        if wanted.broker_pid is not None:
            alive = pid_alive(wanted.broker_pid)
            self.broker = ComponentReport(
                name=BROKER,
                state="running" if alive else "down",
                pid=wanted.broker_pid,
                last_error=None
                if alive
                else "the embedded broker exited and its topics with it: `reaseq down`, then `reaseq up`",
                log=str(run_dir(self.settings) / "broker.log"),
            )
        self._write_report()

    def _watch(self, process: _Process, now: float) -> None:
        report, settings = process.report, self.settings
        if process.popen is not None and (code := process.popen.poll()) is not None:
            process.popen = None
            stable = time.monotonic() - process.started_at >= settings.supervisor_stable_s
            process.failures = 1 if stable else process.failures + 1
            report.exit_code, report.last_error, report.pid = code, last_error(process.log_path), None
            if process.failures >= settings.supervisor_max_failures:
                report.state, report.retry_at = "failed", None
                log.error(
                    "process could not stay up", extra={"component": report.name, "exit_code": code, "log": report.log}
                )
            else:
                delay = min(settings.supervisor_backoff_max_s, 2.0 ** (process.failures - 1))
                report.state, report.retry_at = "restarting", now + delay
                log.warning(
                    "process exited; restarting", extra={"component": report.name, "exit_code": code, "in_s": delay}
                )
        if process.popen is None and report.state == "restarting" and (report.retry_at or 0) <= now:
            if report.exit_code is not None:
                report.restarts += 1
            process.popen = spawn_cli(settings, self.bootstrap, process.spec.args, process.spec.name, process.spec.env)
            process.started_at = time.monotonic()
            report.state, report.pid, report.retry_at = "running", process.popen.pid, None

    def _stop(self, process: _Process) -> None:
        if process.popen is not None:
            stop_process(process.popen.pid)
            process.popen.poll()  # reap it
            process.popen = None

    def _write_report(self) -> None:
        components = {name: process.report for name, process in self.processes.items()}
        if self.broker is not None:
            components = {BROKER: self.broker, **components}
        report = SupervisorReport(pid=os.getpid(), updated_at=time.time(), components=components)
        write_atomically(report_file(self.settings), report.model_dump_json(indent=2))


def run_supervisor(settings: Settings, bootstrap: str) -> None:
    Supervisor(settings, bootstrap).run()
