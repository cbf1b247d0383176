"""NVIDIA Triton: the runtime model repository, the server process, and version control of the ranker.

The server is the ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel, run in explicit model-control
mode. Its repository lives under ``<state_dir>/triton/repository``: ``ranker/config.pbtxt`` and ``model.py`` come
from ``triton_repo/``; each numbered version folder holds ``artifact.json`` naming one model directory of the
model store. The version policy serves the newest version only, so promoting writes version n+1 and asks Triton
to load; Triton brings it up beside the old one, switches, and unloads the old one once its in-flight requests
have finished. Rolling back retires the newest folder and loads again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from infra.ports import free_ports
from infra.processes import await_group_exit, stop_process, worker_env
from reaseq.runfiles import TritonEndpoints, log_tail
from reaseq.settings import Settings
from serving.client import admin_client
from training.registry import MODEL_NAME, ModelRepository

TRITON = "triton"  # its process and log name in the local stack
log = logging.getLogger(__name__)


class TritonError(RuntimeError):
    """Triton could not be started, did not become ready, or refused a model version."""


def _pytriton() -> tuple[Path, Path]:
    """The ``tritonserver`` folder of the nvidia-pytriton wheel and its bundled shared libraries."""
    home = Path(str(files("pytriton") / "tritonserver"))
    if not (home / "bin" / "tritonserver").is_file():
        raise TritonError(f"tritonserver not found under {home}: is nvidia-pytriton installed?")
    return home, home.parent.parent / "nvidia_pytriton.libs"


def prepare_backends(settings: Settings) -> Path:
    """A backend directory whose Python backend has the stub for this interpreter beside it."""
    home, _ = _pytriton()
    python = settings.state_dir.resolve() / "triton" / "backends" / "python"
    python.mkdir(parents=True, exist_ok=True)
    stub = (
        home
        / "python_backend_stubs"
        / f"{sys.version_info.major}.{sys.version_info.minor}"
        / "triton_python_backend_stub"
    )
    sources = [*sorted((home / "backends" / "python").glob("*.*")), stub]
    for source in sources:
        link = python / source.name
        if not link.exists():
            link.symlink_to(source)
    return python.parent


def endpoints_for(settings: Settings) -> TritonEndpoints:
    """The configured ports, distinct free loopback ports where unset (Triton refuses two endpoints on one port)."""
    http, grpc, metrics = free_ports(3)
    return TritonEndpoints(
        settings.triton_host,
        settings.triton_http_port or http,
        settings.triton_grpc_port or grpc,
        settings.triton_metrics_port or metrics,
    )


def triton_command(settings: Settings, bootstrap: str, endpoints: TritonEndpoints) -> tuple[list[str], dict[str, str]]:
    """The tritonserver command line and environment serving the repository's newest ranker version."""
    repository = ModelRepository(settings)
    if repository.newest() is None:
        raise TritonError("no ranker version in the Triton repository: publish a model directory first")
    home, libs = _pytriton()
    env = worker_env(settings, bootstrap)
    # The Python backend stub runs model.py with the first python3 on PATH: this environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    command = [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={repository.root}",
        f"--backend-directory={prepare_backends(settings)}",
        "--model-control-mode=explicit",
        f"--load-model={MODEL_NAME}",
        "--strict-readiness=true",
        f"--http-address={endpoints.host}",
        f"--http-port={endpoints.http_port}",
        f"--grpc-address={endpoints.host}",
        f"--grpc-port={endpoints.grpc_port}",
        f"--metrics-address={endpoints.host}",
        f"--metrics-port={endpoints.metrics_port}",
        "--allow-metrics=true",
        "--exit-timeout-secs=15",
    ]
    return command, env


def start_triton(
    settings: Settings, bootstrap: str, endpoints: TritonEndpoints, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start tritonserver in the background, logging to ``log_path``."""
    command, env = triton_command(settings, bootstrap, endpoints)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def exec_triton(settings: Settings, bootstrap: str, poll_s: float = 2.0) -> None:
    """Replace this process with tritonserver (containers: it then receives the stop signal itself).

    With an empty repository, the model store's newest version is published first; while the store has none
    either (a container or the stack started before training ended), this waits, checking every ``poll_s``.
    """
    repository = ModelRepository(settings)
    if not repository.ensure_version(settings.model_store):
        log.info("no trained model version yet; waiting for one", extra={"store": str(settings.model_store)})
        while not repository.ensure_version(settings.model_store):
            time.sleep(poll_s)
    command, env = triton_command(settings, bootstrap, endpoints_for(settings))
    os.execve(command[0], command, env)


def port_env(endpoints: TritonEndpoints) -> dict[str, str]:
    """The settings that make ``reaseq serve`` bind ``endpoints``: a restarted server keeps its ports."""
    return {
        "REASEQ_TRITON_HOST": endpoints.host,
        "REASEQ_TRITON_HTTP_PORT": str(endpoints.http_port),
        "REASEQ_TRITON_GRPC_PORT": str(endpoints.grpc_port),
        "REASEQ_TRITON_METRICS_PORT": str(endpoints.metrics_port),
    }


def wait_ready(endpoints: TritonEndpoints, failure: Callable[[], str | None], log_path: Path, timeout_s: float) -> None:
    """Block until Triton reports the server and the ranker ready; raise with the log's tail once ``failure`` says
    why the server cannot come up."""
    client = admin_client(endpoints, timeout_s=5.0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (reason := failure()) is not None:
            raise TritonError(f"{reason}:\n{log_tail(log_path)}")
        try:
            if client.is_server_ready() and client.is_model_ready(MODEL_NAME):
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise TritonError(f"Triton not ready after {timeout_s:.0f} s:\n{log_tail(log_path)}")


def promote(settings: Settings, endpoints: TritonEndpoints, model_dir: Path) -> int:
    """Publish ``model_dir`` as the next version and load it; in-flight requests finish on the old one.

    If Triton refuses the new version, it is retired again and the previous version stays served.
    """
    repository = ModelRepository(settings)
    number = repository.publish(model_dir)
    try:
        admin_client(endpoints).load_model(MODEL_NAME)
    except Exception as error:
        repository.retire(number)
        admin_client(endpoints).load_model(MODEL_NAME)
        raise TritonError(
            f"version {number} ({model_dir}) failed to load; the previous version serves: {error}"
        ) from None
    return number


def rollback(settings: Settings, endpoints: TritonEndpoints) -> int:
    """Retire the served (newest) version and load the one before it; returns the version now served."""
    repository = ModelRepository(settings)
    versions = repository.versions()
    if len(versions) < 2:
        raise TritonError("no previous version to roll back to")
    newest = max(versions)
    repository.retire(newest)
    admin_client(endpoints).load_model(MODEL_NAME)
    return max(repository.versions())


class TritonServer:
    """A tritonserver process serving the repository's newest ranker version; a context manager."""

    def __init__(self, settings: Settings, bootstrap: str, endpoints: TritonEndpoints | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.endpoints = endpoints or endpoints_for(settings)
        self.log_path = settings.state_dir.resolve() / "run" / "triton.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300.0) -> TritonServer:
        self.process = start_triton(self.settings, self.bootstrap, self.endpoints, self.log_path)
        try:
            wait_ready(self.endpoints, self._exited, self.log_path, timeout_s)
        except TritonError:
            self.stop()
            raise
        return self

    def _exited(self) -> str | None:
        code = None if self.process is None else self.process.poll()
        return None if code is None else f"tritonserver exited with {code}"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process.pid, timeout_s=30)
            # the Python backend's stub (the ranker and its replica's follower thread) outlives tritonserver briefly:
            # stopped means it too is gone, or records published "while down" reach the replica before the restart
            await_group_exit(self.process.pid)
            self.process = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
