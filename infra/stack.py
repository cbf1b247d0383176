"""The local stack: the embedded broker (unless KAFKA_BOOTSTRAP is set), stream workers, the asynchronous workers,
the operator web page and Triton.

The broker is started here; every other process is run by the stack's supervisor (``infra.supervisor``), which
restarts one that exits. A run file under ``<state_dir>/run/`` records what is running, so that CLI commands
started later (publish, status, replay, down) find the broker, the page and Triton.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from infra.broker import EmbeddedBroker, wait_until_answers
from infra.ports import free_port
from infra.processes import ASYNC_WORKERS, is_stack_process, pid_alive, run_dir, spawn_cli, stop_process, worker_args
from infra.provision import provision
from infra.supervisor import SUPERVISOR, ComponentReport, ComponentSpec, read_report, report_file, want, wanted_file
from reaseq.settings import Settings

if TYPE_CHECKING:
    from infra.triton import TritonEndpoints


class StackError(RuntimeError):
    """The local stack is not running or could not be started."""


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
    supervisor_pid: int | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    async_workers: dict[str, int] = field(default_factory=dict)  # their CLI command -> pid
    triton: TritonProcess | None = None
    web: WebProcess | None = None


def _run_file(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def load_run_state(settings: Settings) -> RunState | None:
    """The running stack, its pids as the supervisor last saw them (a restarted process has a new one)."""
    path = _run_file(settings)
    if not path.exists():
        return None
    body = json.loads(path.read_text())
    report = read_report(settings)
    pids = {name: c.pid for name, c in report.components.items() if c.pid is not None} if report else {}
    state = RunState(bootstrap=body["bootstrap"], broker_pid=body.get("broker_pid"), supervisor_pid=body.get("supervisor_pid"))
    state.async_workers = {name: pids.get(name, pid) for name, pid in body.get("async_workers", {}).items()}
    state.workers = [WorkerProcess(w["name"], w["generation"], pids.get(f"{w['name']}.g{w['generation']}", w["pid"])) for w in body.get("workers", [])]
    triton = body.get("triton")
    state.triton = TritonProcess(**{**triton, "pid": pids.get("triton", triton["pid"])}) if triton else None
    web = body.get("web")
    state.web = WebProcess(pids.get("web", web["pid"]), web["url"]) if web else None
    return state


def stack_processes(settings: Settings) -> dict[str, ComponentReport] | None:
    """The local stack's processes as its supervisor last saw them, each checked against the process table (a
    supervisor that died leaves a stale report), and the supervisor itself when it is gone; None without a stack."""
    path = _run_file(settings)
    supervisor_pid = json.loads(path.read_text()).get("supervisor_pid") if path.exists() else None
    if supervisor_pid is None:
        return None
    report = read_report(settings)
    processes = {
        name: c if c.state != "running" or (c.pid is not None and pid_alive(c.pid)) else c.model_copy(update={"state": "down"})
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


def _pids(state: RunState) -> list[int]:
    pids = [w.pid for w in state.workers] + list(state.async_workers.values())
    return pids + [p.pid for p in (state.triton, state.web) if p is not None]


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


def start_stack(settings: Settings, workers: int, generation: int, serve: bool = True) -> RunState:
    """Start the broker (unless external), then the supervisor with the workers and the page and, with ``serve`` and a
    trained model, Triton. Triton serves the repository's newest ranker version, or the model store's newest when
    none was published."""
    existing = load_run_state(settings)
    if existing and existing.broker_pid and pid_alive(existing.broker_pid):
        raise StackError(f"a local stack is already running (broker pid {existing.broker_pid}); `reaseq down` first")
    wanted_file(settings).unlink(missing_ok=True)  # what a stack that was not stopped cleanly wanted
    if settings.kafka_bootstrap:
        bootstrap, broker_pid = settings.kafka_bootstrap, None
        wait_until_answers(bootstrap)
    else:
        run_dir(settings).mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(log_path=run_dir(settings) / "broker.log").start()
        assert broker.process is not None
        bootstrap, broker_pid = broker.bootstrap, broker.process.pid
    provision(settings, bootstrap, generation)
    port = settings.web_port or free_port()
    components = [ComponentSpec(name=f"w{i}.g{generation}", args=worker_args(generation, f"w{i}")) for i in range(workers)]
    components += [ComponentSpec(name=command, args=[command]) for command in ASYNC_WORKERS]
    components.append(ComponentSpec(name="web", args=["web", "--port", str(port)]))
    want(settings, add=components, broker_pid=broker_pid)
    supervisor = spawn_cli(settings, bootstrap, ["supervise"], SUPERVISOR)
    pids = supervised_pids(settings, [spec.name for spec in components])
    state = RunState(bootstrap=bootstrap, broker_pid=broker_pid, supervisor_pid=supervisor.pid)
    state.workers = [WorkerProcess(f"w{i}", generation, pids[f"w{i}.g{generation}"]) for i in range(workers)]
    state.async_workers = {command: pids[command] for command in ASYNC_WORKERS}
    state.web = WebProcess(pids["web"], f"http://127.0.0.1:{port}/")
    save_run_state(settings, state)
    if serve:
        start_serving(settings, state)
    return state


def supervised_pids(settings: Settings, names: list[str], timeout_s: float = 60.0) -> dict[str, int]:
    """The pids the supervisor started ``names`` with, once it has started them all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report = read_report(settings)
        pids = {name: c.pid for name, c in report.components.items() if c.pid is not None} if report else {}
        if all(name in pids for name in names):
            return pids
        time.sleep(0.2)
    raise StackError(f"the supervisor did not start {', '.join(names)} within {timeout_s:.0f} s (log: {run_dir(settings)}/supervisor.log)")


def start_serving(settings: Settings, state: RunState, model_dir: Path | None = None) -> TritonProcess | None:
    """Have the supervisor run Triton in the running stack, serving ``model_dir`` (published as the next version) or
    else the repository's newest version, or the model store's newest; None when there is no trained model at all."""
    from infra.triton import TRITON, ModelRepository, endpoints_for, port_env, wait_ready

    repository = ModelRepository(settings)
    if model_dir is not None:
        repository.publish(model_dir)
    elif not repository.ensure_version(settings.model_store):
        return None
    endpoints = endpoints_for(settings)
    want(settings, add=[ComponentSpec(name=TRITON, args=["serve"], env=port_env(endpoints))])
    pid = supervised_pids(settings, [TRITON])[TRITON]
    state.triton = TritonProcess(pid, endpoints.host, endpoints.http_port, endpoints.grpc_port, endpoints.metrics_port)
    save_run_state(settings, state)  # before it is ready: status and the page show it while it loads
    wait_ready(endpoints, lambda: stack_failure(settings, [TRITON]), run_dir(settings) / f"{TRITON}.log", timeout_s=300)
    return state.triton


def stack_failure(settings: Settings, names: Collection[str] | None = None) -> str | None:
    """Why the stack cannot go on, naming the process (of ``names``, default any) that could not stay up and its log;
    None while each runs or is being restarted."""
    for name, process in (stack_processes(settings) or {}).items():
        if process.state in ("failed", "down") and (names is None or name in names):
            return f"{name} could not stay up: {process.describe()}"
    return None


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
    """Stop the supervisor (which stops the page, Triton and the workers), then the broker, of the running stack."""
    state = load_run_state(settings)
    if state is None:
        return None
    report = read_report(settings)
    if state.supervisor_pid is not None and pid_alive(state.supervisor_pid):
        stop_process(state.supervisor_pid, timeout_s=90)  # it stops every process it runs
    else:  # its processes outlive a supervisor that was killed: stop those it (or the run file) last named
        supervised = [c.pid for c in report.components.values() if c.pid is not None] if report else []
        for pid in set(_pids(state) + supervised) - {state.broker_pid}:
            if is_stack_process(pid):  # a pid of a process gone long ago may name another program by now
                stop_process(pid)
    if state.broker_pid:
        stop_process(state.broker_pid, timeout_s=10)
    for path in (_run_file(settings), wanted_file(settings), report_file(settings)):
        path.unlink(missing_ok=True)
    return state
