"""Processes of the local stack on this machine: the run folder, starting ``reaseq`` commands detached, stopping
them, and whether a pid still runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from reaseq.runfiles import pid_alive, run_dir
from reaseq.settings import Settings


def is_stack_process(pid: int) -> bool:
    """Whether ``pid`` runs a ``reaseq`` command or tritonserver (what the local stack starts)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return pid_alive(pid) and (b"infra.cli" in command or b"tritonserver" in command)


def _env_value(value: object) -> str:
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, SecretStr):  # its str() is a mask
        return value.get_secret_value()
    return str(value)


def worker_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """Environment of a child process: the parent's, plus every setting, so the child sees the same Settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude={"kafka_bootstrap"}, exclude_none=True).items():
        env[f"REASEQ_{name.upper()}"] = _env_value(value)
    env["KAFKA_BOOTSTRAP"] = bootstrap
    return env


def spawn_cli(
    settings: Settings, bootstrap: str, args: list[str], log_name: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``reaseq <args>`` detached, with the settings (and ``env``) in its environment; its log is
    ``run/<log_name>.log``."""
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    with open(run_dir(settings) / f"{log_name}.log", "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "infra.cli", *args],
            env={**worker_env(settings, bootstrap), **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


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
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def await_group_exit(pgid: int, timeout_s: float = 10.0) -> None:
    """Wait until every process of the group ``pgid`` is gone (a leader's children may outlive it), then SIGKILL
    what is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


AsyncWorker = Literal["enrich", "interests", "ids"]
# item knowledge, beyond-log interests, the semantic IDs of items published after training
ASYNC_WORKERS: tuple[AsyncWorker, ...] = ("enrich", "interests", "ids")


def worker_args(generation: int, name: str) -> list[str]:
    """The CLI arguments of a stream worker; its process (and log) name is ``<name>.g<generation>``."""
    return ["worker", "--generation", str(generation), "--name", name]


def spawn_worker(settings: Settings, bootstrap: str, generation: int, name: str) -> subprocess.Popen[bytes]:
    """Start a stream worker process; its log goes to ``<state_dir>/run/<name>.g<generation>.log``."""
    return spawn_cli(settings, bootstrap, worker_args(generation, name), f"{name}.g{generation}")


def spawn_async_worker(settings: Settings, bootstrap: str, command: AsyncWorker) -> subprocess.Popen[bytes]:
    """Start an asynchronous worker, ``reaseq enrich``, ``interests`` or ``ids`` (log: ``run/<command>.log``)."""
    return spawn_cli(settings, bootstrap, [command], command)
