"""The local stack: the embedded broker (unless KAFKA_BOOTSTRAP is set), stream workers, the asynchronous workers,
the operator web page and Triton.

The broker is started here; every other process is run by the stack's supervisor (``infra.supervisor``), which
restarts one that exits. A run file under ``<state_dir>/run/`` records what is running, so that CLI commands
started later (publish, status, replay, down) find the broker, the page and Triton.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Collection
from pathlib import Path

from dashboard.probes import pipeline_lag
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from infra.processes import ASYNC_WORKERS, is_stack_process, spawn_cli, stop_process, worker_args
from infra.triton import TRITON, endpoints_for, port_env, promote, wait_ready
from kafka_adapter.clients import cluster_id, wait_until_answers
from kafka_adapter.control import active_generation
from kafka_adapter.provision import provision
from reaseq.runfiles import (
    SUPERVISOR,
    ComponentSpec,
    RunState,
    TritonProcess,
    WebProcess,
    WorkerProcess,
    load_run_state,
    pid_alive,
    read_report,
    report_file,
    run_dir,
    run_file,
    save_run_state,
    stack_processes,
    want,
    wanted_file,
)
from reaseq.settings import Settings
from training.registry import ModelRepository


class StackError(RuntimeError):
    """The local stack is not running or could not be started."""


def _pids(state: RunState) -> list[int]:
    pids = [w.pid for w in state.workers] + list(state.async_workers.values())
    return pids + [p.pid for p in (state.triton, state.web) if p is not None]


def resolve_bootstrap(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP if set, else the embedded broker of the running local stack."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    state = load_run_state(settings)
    if state is None or (state.broker_pid is not None and not pid_alive(state.broker_pid)):
        raise StackError("no broker: set KAFKA_BOOTSTRAP, or start the local stack with `reaseq up`")
    return state.bootstrap


def topic_stores(settings: Settings) -> list[Path]:
    """The local stores built from topics: the stream workers' tables, the serving replicas, the enrichment and
    interest workers' tables and the page's cache (not the model store, Triton's repository or the encoder caches)."""
    return [
        settings.state_dir / "workers",
        settings.state_dir / "serving",
        settings.state_dir / "enrichment" / settings.app_id,
        settings.state_dir / "interests",
        settings.state_dir / "dashboard",
    ]


def clear_topic_stores(settings: Settings) -> None:
    """The embedded broker starts empty: so must every store built from its topics, or a table would hold the last
    stack's state (and skip the same events published again as already seen)."""
    for store in topic_stores(settings):
        shutil.rmtree(store, ignore_errors=True)


def start_stack(settings: Settings, workers: int, generation: int, serve: bool = True) -> RunState:
    """Start the broker (unless external), then the supervisor with the workers and the page and, with ``serve`` and a
    trained model, Triton. Triton serves the repository's newest ranker version, or the model store's newest when
    none was published."""
    existing = load_run_state(settings)
    if existing and existing.broker_pid and pid_alive(existing.broker_pid):
        raise StackError(f"a local stack is already running (broker pid {existing.broker_pid}); `reaseq down` first")
    # what a stack that was not stopped cleanly wanted and ran on: its broker is not this one
    wanted_file(settings).unlink(missing_ok=True)
    run_file(settings).unlink(missing_ok=True)
    if settings.kafka_bootstrap:
        bootstrap, broker_pid = settings.kafka_bootstrap, None
        wait_until_answers(bootstrap)
    else:
        clear_topic_stores(settings)
        run_dir(settings).mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(log_path=run_dir(settings) / "broker.log").start()
        assert broker.process is not None
        bootstrap, broker_pid = broker.bootstrap, broker.process.pid
    provision(settings, bootstrap, generation)
    port = settings.web_port or free_port()
    components = [
        ComponentSpec(name=f"w{i}.g{generation}", args=worker_args(generation, f"w{i}")) for i in range(workers)
    ]
    components += [ComponentSpec(name=command, args=[command]) for command in ASYNC_WORKERS]
    components.append(ComponentSpec(name="web", args=["web", "--port", str(port)]))
    want(settings, add=components, broker_pid=broker_pid)
    supervisor = spawn_cli(settings, bootstrap, ["supervise"], SUPERVISOR)
    pids = supervised_pids(settings, [spec.name for spec in components])
    state = RunState(
        bootstrap=bootstrap, cluster_id=cluster_id(bootstrap), broker_pid=broker_pid, supervisor_pid=supervisor.pid
    )
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
    raise StackError(
        f"the supervisor did not start {', '.join(names)} within {timeout_s:.0f} s (log: {run_dir(settings)}/supervisor.log)"
    )


def start_serving(settings: Settings, state: RunState, model_dir: Path | None = None) -> TritonProcess | None:
    """Have the supervisor run Triton in the running stack, serving ``model_dir`` (published as the next version) or
    else the repository's newest version, or the model store's newest; None when there is no trained model at all."""
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
    if state.triton is None:
        triton = start_serving(settings, state, model_dir)
        assert triton is not None  # a version was given
        return triton
    promote(settings, state.triton.endpoints(), model_dir)
    return state.triton


def wait_until_caught_up(settings: Settings, bootstrap: str, groups: list[str], timeout_s: float) -> float:
    """Block until every one of ``groups`` (of the serving generation's pipeline) has no lag; returns the seconds."""
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
    for path in (run_file(settings), wanted_file(settings), report_file(settings)):
        path.unlink(missing_ok=True)
    return state
