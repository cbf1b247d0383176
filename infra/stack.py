"""The local stack: the embedded broker (unless KAFKA_BOOTSTRAP is set), stream workers, the asynchronous workers,
the operator web page and Triton.

A run file under ``<state_dir>/run/`` records what is running, so that CLI commands started later
(publish, status, replay, down) find the broker and the workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from infra.broker import EmbeddedBroker, wait_until_answers
from infra.ports import free_port
from infra.provision import provision
from reaseq.settings import Settings

if TYPE_CHECKING:
    from infra.triton import TritonEndpoints


class StackError(RuntimeError):
    """The local stack is not running or could not be started."""


AsyncWorker = Literal["enrich", "interests"]
ASYNC_WORKERS: tuple[AsyncWorker, ...] = ("enrich", "interests")  # item knowledge, beyond-log interests


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
        from infra.triton import TritonEndpoints

        return TritonEndpoints(self.host, self.http_port, self.grpc_port, self.metrics_port)


@dataclass
class WebProcess:
    pid: int
    url: str


@dataclass
class RunState:
    bootstrap: str
    broker_pid: int | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    async_workers: dict[str, int] = field(default_factory=dict)  # their CLI command -> pid
    triton: TritonProcess | None = None
    web: WebProcess | None = None


def run_dir(settings: Settings) -> Path:
    return settings.state_dir / "run"


def _run_file(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a process log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def load_run_state(settings: Settings) -> RunState | None:
    path = _run_file(settings)
    if not path.exists():
        return None
    body = json.loads(path.read_text())
    state = RunState(bootstrap=body["bootstrap"], broker_pid=body.get("broker_pid"))
    state.async_workers = {name: pid for name, pid in body.get("async_workers", {}).items() if pid_alive(pid)}
    state.workers = [WorkerProcess(**w) for w in body.get("workers", []) if pid_alive(w["pid"])]
    triton = body.get("triton")
    state.triton = TritonProcess(**triton) if triton and pid_alive(triton["pid"]) else None
    web = body.get("web")
    state.web = WebProcess(**web) if web and pid_alive(web["pid"]) else None
    return state


def triton_endpoints(settings: Settings) -> TritonEndpoints | None:
    """The Triton that clients dial: the local stack's (from its run state), else the one the settings name with
    ``REASEQ_TRITON_HOST`` and all three ports (a Triton in another container, as in compose); None without either."""
    from infra.triton import TritonEndpoints

    state = load_run_state(settings)
    if state is not None and state.triton is not None:
        return state.triton.endpoints()
    s = settings
    if s.triton_http_port and s.triton_grpc_port and s.triton_metrics_port:
        return TritonEndpoints(s.triton_host, s.triton_http_port, s.triton_grpc_port, s.triton_metrics_port)
    return None


def save_run_state(settings: Settings, state: RunState) -> None:
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    _run_file(settings).write_text(json.dumps(asdict(state), indent=2))


def resolve_bootstrap(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP if set, else the embedded broker of the running local stack."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    state = load_run_state(settings)
    if state is None or (state.broker_pid is not None and not pid_alive(state.broker_pid)):
        raise StackError("no broker: set KAFKA_BOOTSTRAP, or start the local stack with `reaseq up`")
    return state.bootstrap


def worker_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """Environment of a child process: the parent's, plus every setting, so the child sees the same Settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude={"kafka_bootstrap"}, exclude_none=True).items():
        env[f"REASEQ_{name.upper()}"] = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
    env["KAFKA_BOOTSTRAP"] = bootstrap
    return env


def spawn_cli(settings: Settings, bootstrap: str, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
    """Start ``reaseq <args>`` detached, with the settings in its environment; its log is ``run/<log_name>.log``."""
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    with open(run_dir(settings) / f"{log_name}.log", "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "reaseq.cli", *args],
            env=worker_env(settings, bootstrap),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def spawn_worker(settings: Settings, bootstrap: str, generation: int, name: str) -> subprocess.Popen[bytes]:
    """Start a stream worker process; its log goes to ``<state_dir>/run/<name>.g<generation>.log``."""
    return spawn_cli(settings, bootstrap, ["worker", "--generation", str(generation), "--name", name], f"{name}.g{generation}")


def spawn_async_worker(settings: Settings, bootstrap: str, command: AsyncWorker) -> subprocess.Popen[bytes]:
    """Start an asynchronous worker, ``reaseq enrich`` or ``reaseq interests`` (log: ``run/<command>.log``)."""
    return spawn_cli(settings, bootstrap, [command], command)


def stop_process(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the timeout."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
        except ChildProcessError:  # not our child: poll for its disappearance instead
            if not pid_alive(pid):
                return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_stack(settings: Settings, workers: int, generation: int, serve: bool = True) -> RunState:
    """Start broker (unless external), workers and, with ``serve`` and a trained model, Triton; all detached.

    Triton serves the repository's newest ranker version, or the model store's newest when none was published.
    """
    existing = load_run_state(settings)
    if existing and existing.broker_pid and pid_alive(existing.broker_pid):
        raise StackError(f"a local stack is already running (broker pid {existing.broker_pid}); `reaseq down` first")
    if settings.kafka_bootstrap:
        bootstrap, broker_pid = settings.kafka_bootstrap, None
        wait_until_answers(bootstrap)
    else:
        run_dir(settings).mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(log_path=run_dir(settings) / "broker.log").start()
        assert broker.process is not None
        bootstrap, broker_pid = broker.bootstrap, broker.process.pid
    provision(settings, bootstrap, generation)
    state = RunState(bootstrap=bootstrap, broker_pid=broker_pid)
    state.workers = [
        WorkerProcess(f"w{i}", generation, spawn_worker(settings, bootstrap, generation, f"w{i}").pid) for i in range(workers)
    ]
    state.async_workers = {command: spawn_async_worker(settings, bootstrap, command).pid for command in ASYNC_WORKERS}
    port = settings.web_port or free_port()
    state.web = WebProcess(spawn_cli(settings, bootstrap, ["web", "--port", str(port)], "web").pid, f"http://127.0.0.1:{port}/")
    save_run_state(settings, state)
    if serve:
        start_serving(settings, state)
    return state


def start_serving(settings: Settings, state: RunState, model_dir: Path | None = None) -> TritonProcess | None:
    """Start Triton in the running stack, serving ``model_dir`` (published as the next version) or else the
    repository's newest version, or the model store's newest; None when there is no trained model at all."""
    from infra.triton import ModelRepository, TritonServer

    repository = ModelRepository(settings)
    if model_dir is not None:
        repository.publish(model_dir)
    elif not repository.ensure_version(settings.model_store):
        return None
    server = TritonServer(settings, state.bootstrap)
    server.start()
    assert server.process is not None
    endpoints = server.endpoints
    state.triton = TritonProcess(server.process.pid, endpoints.host, endpoints.http_port, endpoints.grpc_port, endpoints.metrics_port)
    save_run_state(settings, state)
    return state.triton


def serve_version(settings: Settings, state: RunState, model_dir: Path) -> TritonProcess:
    """Serve ``model_dir``: start Triton with it, or have the running Triton load it beside the current version
    and switch without failing requests."""
    from infra.triton import promote

    if state.triton is None:
        triton = start_serving(settings, state, model_dir)
        assert triton is not None  # a version was given
        return triton
    promote(settings, state.triton.endpoints(), model_dir)
    return state.triton


def wait_until_caught_up(settings: Settings, bootstrap: str, groups: list[str], timeout_s: float) -> float:
    """Block until every one of ``groups`` (of the serving generation's pipeline) has no lag; returns the seconds."""
    from infra.control import active_generation
    from reaseq.status import pipeline_lag

    started = time.monotonic()
    generation = active_generation(settings, bootstrap)
    while True:
        lag = pipeline_lag(settings, bootstrap, generation)
        behind = {group: sum(lag[group].values()) for group in groups if sum(lag[group].values())}
        if not behind:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise StackError(f"not caught up after {timeout_s:.0f} s: {behind} (logs in {run_dir(settings)})")
        time.sleep(1.0)


def stop_stack(settings: Settings) -> RunState | None:
    """Stop the web page, Triton, the workers, then the broker, of the running local stack."""
    state = load_run_state(settings)
    if state is None:
        return None
    if state.web:
        stop_process(state.web.pid)
    if state.triton:
        stop_process(state.triton.pid)
    for pid in state.async_workers.values():
        stop_process(pid)
    for worker in state.workers:
        stop_process(worker.pid)
    if state.broker_pid:
        stop_process(state.broker_pid, timeout_s=10)
    _run_file(settings).unlink(missing_ok=True)
    return state
