"""The local stack's run files, which every process may read: where they are, what runs (``run/stack.json``), what
the supervisor should run and what it saw (``run/components.json``, ``run/supervisor.json``), and pid checks.

The launchers (``infra``) write them; the CLI, the operator page and the metrics exporters read them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from reaseq.settings import Settings


def run_dir(settings: Settings) -> Path:
    return settings.state_dir / "run"


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a process log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited child nobody has reaped yet (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs here, or gone since: kill's answer stands
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


SUPERVISOR = "supervisor"  # its own process and log name


ProcessState = Literal["running", "restarting", "failed", "down"]


class ComponentSpec(BaseModel):
    """One process of the stack: ``reaseq <args>`` with ``env`` added; its log is ``run/<name>.log``."""

    name: str
    args: list[str]
    env: dict[str, str] = Field(default_factory=dict)


class Wanted(BaseModel):
    broker_pid: int | None = None  # the embedded broker, watched only
    components: list[ComponentSpec] = Field(default_factory=list)


class ComponentReport(BaseModel):
    name: str
    state: ProcessState
    pid: int | None = None
    restarts: int = 0
    exit_code: int | None = None  # of the last unexpected exit
    last_error: str | None = None  # the last error line its log showed before that exit
    retry_at: float | None = None  # epoch seconds of the next start, while restarting
    log: str

    def describe(self) -> str:
        """One line for an operator: state, restarts, the last error and where the log is."""
        exited = (
            f"killed by signal {-(self.exit_code or 0)}"
            if (self.exit_code or 0) < 0
            else f"exited with {self.exit_code}"
        )
        parts = {
            "running": f"running (pid {self.pid})",
            "restarting": f"{exited}; restarting in {max(0.0, (self.retry_at or 0) - time.time()):.0f} s",
            "failed": f"{exited} and could not stay up; not restarted",
            "down": f"not running (pid {self.pid} is gone)",
        }
        text = parts[self.state] + (
            f", {self.restarts} restart{'s' if self.restarts != 1 else ''}" if self.restarts else ""
        )
        if self.last_error and (self.restarts or self.state != "running"):
            text += f"; last error: {self.last_error}"
        return text + (f" (log {self.log})" if self.state != "running" else "")


class SupervisorReport(BaseModel):
    pid: int
    updated_at: float
    components: dict[str, ComponentReport]


def wanted_file(settings: Settings) -> Path:
    return run_dir(settings) / "components.json"


def report_file(settings: Settings) -> Path:
    return run_dir(settings) / "supervisor.json"


def write_atomically(path: Path, body: str) -> None:
    """Readers poll these files: they see the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(body)
    partial.replace(path)


def read_wanted(settings: Settings) -> Wanted:
    path = wanted_file(settings)
    return Wanted.model_validate_json(path.read_text()) if path.is_file() else Wanted()


def want(
    settings: Settings, add: Sequence[ComponentSpec] = (), remove: Sequence[str] = (), broker_pid: int | None = None
) -> None:
    """Change what the supervisor runs: start ``add`` (replacing same-named specs), stop ``remove``."""
    wanted = read_wanted(settings)
    names = {spec.name for spec in add} | set(remove)
    wanted.components = [spec for spec in wanted.components if spec.name not in names] + list(add)
    if broker_pid is not None:
        wanted.broker_pid = broker_pid
    write_atomically(wanted_file(settings), wanted.model_dump_json(indent=2))


def read_report(settings: Settings) -> SupervisorReport | None:
    """The supervisor's last report, or None when no local stack has one."""
    try:
        return SupervisorReport.model_validate_json(report_file(settings).read_text())
    except FileNotFoundError:
        return None
    except ValidationError:  # an earlier release's file: no report to show
        return None


@dataclass
class TritonEndpoints:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


@dataclass
class WorkerProcess:
    name: str
    generation: int
    pid: int


@dataclass
class TritonProcess:
    pid: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    def endpoints(self) -> TritonEndpoints:
        return TritonEndpoints(self.host, self.http_port, self.grpc_port, self.metrics_port)


@dataclass
class WebProcess:
    pid: int
    url: str


@dataclass
class RunState:
    bootstrap: str
    cluster_id: str | None = None  # the broker's at `reaseq up`: another one later has lost the topics
    broker_pid: int | None = None
    supervisor_pid: int | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    async_workers: dict[str, int] = field(default_factory=dict)  # their CLI command -> pid
    triton: TritonProcess | None = None
    web: WebProcess | None = None


def run_file(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def load_run_state(settings: Settings) -> RunState | None:
    """The running stack, its pids as the supervisor last saw them (a restarted process has a new one)."""
    path = run_file(settings)
    if not path.exists():
        return None
    body = json.loads(path.read_text())
    report = read_report(settings)
    pids = {name: c.pid for name, c in report.components.items() if c.pid is not None} if report else {}
    state = RunState(
        bootstrap=body["bootstrap"],
        cluster_id=body.get("cluster_id"),
        broker_pid=body.get("broker_pid"),
        supervisor_pid=body.get("supervisor_pid"),
    )
    state.async_workers = {name: pids.get(name, pid) for name, pid in body.get("async_workers", {}).items()}
    state.workers = [
        WorkerProcess(w["name"], w["generation"], pids.get(f"{w['name']}.g{w['generation']}", w["pid"]))
        for w in body.get("workers", [])
    ]
    triton = body.get("triton")
    state.triton = TritonProcess(**{**triton, "pid": pids.get("triton", triton["pid"])}) if triton else None
    web = body.get("web")
    state.web = WebProcess(pids.get("web", web["pid"]), web["url"]) if web else None
    return state


def stack_processes(settings: Settings) -> dict[str, ComponentReport] | None:
    """The local stack's processes as its supervisor last saw them, each checked against the process table (a
    supervisor that died leaves a stale report), and the supervisor itself when it is gone; None without a stack."""
    path = run_file(settings)
    supervisor_pid = json.loads(path.read_text()).get("supervisor_pid") if path.exists() else None
    if supervisor_pid is None:
        return None
    report = read_report(settings)
    processes = {
        name: c
        if c.state != "running" or (c.pid is not None and pid_alive(c.pid))
        else c.model_copy(update={"state": "down"})
        for name, c in (report.components if report else {}).items()
    }
    if not pid_alive(supervisor_pid):
        processes[SUPERVISOR] = ComponentReport(
            name=SUPERVISOR,
            state="down",
            pid=supervisor_pid,
            last_error="the supervisor exited: no process is restarted; `reaseq down`, then `reaseq up`",
            log=str(run_dir(settings) / f"{SUPERVISOR}.log"),
        )
    return processes


def triton_endpoints(settings: Settings) -> TritonEndpoints | None:
    """The Triton that clients dial: the local stack's (from its run state), else the one the settings name with
    ``REASEQ_TRITON_HOST`` and all three ports (a Triton in another container, as in compose); None without either."""
    state = load_run_state(settings)
    if state is not None and state.triton is not None:
        return state.triton.endpoints()
    s = settings
    if s.triton_http_port and s.triton_grpc_port and s.triton_metrics_port:
        return TritonEndpoints(s.triton_host, s.triton_http_port, s.triton_grpc_port, s.triton_metrics_port)
    return None


def save_run_state(settings: Settings, state: RunState) -> None:
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    run_file(settings).write_text(json.dumps(asdict(state), indent=2))
