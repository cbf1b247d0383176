"""Kafka TLS and SASL: the settings, their mapping onto each client library, one clear line for settings that do not
go together, and a worker refused by a broker that requires SASL."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path

import certifi
import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import SecretStr, ValidationError

from infra.broker import EmbeddedBroker
from infra.processes import spawn_cli, stop_process, worker_env
from kafka_adapter.aio_clients import aiokafka_security, faust_credentials
from kafka_adapter.clients import security_config
from reaseq.runfiles import run_dir
from reaseq.settings import Settings

BOOTSTRAP = "kafka-0.internal:9093"
CA = Path(certifi.where())  # any real CA bundle: the TLS context loads it


def secured(**fields: object) -> Settings:
    return Settings(kafka_bootstrap=BOOTSTRAP, **fields)  # type: ignore[arg-type]


def test_plaintext_adds_nothing_to_any_client() -> None:
    settings = Settings(kafka_bootstrap=BOOTSTRAP)
    assert security_config(settings) == {} and aiokafka_security(settings) == {}
    assert faust_credentials(settings) is None


def test_sasl_over_tls_reaches_each_client_library() -> None:
    settings = secured(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="reaseq",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=CA,
    )
    assert security_config(settings) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "reaseq",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(CA),
    }
    aio = aiokafka_security(settings)
    assert {key: value for key, value in aio.items() if key != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "reaseq",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(aio["ssl_context"], ssl.SSLContext) and aio["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    credentials = faust_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.username == "reaseq" and credentials.password == "s3cret"
    # the password travels to child processes whole, and is masked wherever settings are printed
    assert worker_env(settings, BOOTSTRAP)["REASEQ_KAFKA_SASL_PASSWORD"] == "s3cret"
    assert "s3cret" not in repr(settings)


def test_tls_alone_and_sasl_in_plaintext() -> None:
    tls = secured(kafka_security_protocol="SSL", kafka_ssl_cafile=CA)
    assert security_config(tls) == {"security.protocol": "ssl", "ssl.ca.location": str(CA)}
    assert isinstance(faust_credentials(tls), SSLCredentials)
    sasl = secured(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p")
    assert aiokafka_security(sasl)["ssl_context"] is None
    assert security_config(sasl)["sasl.mechanisms"] == "SCRAM-SHA-512"  # the default mechanism


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "needs REASEQ_KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_cafile": CA}, "read only with kafka_security_protocol"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": CA}, "go together"),
    ],
)
def test_settings_that_do_not_go_together_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        secured(**fields)


def test_the_embedded_broker_takes_no_security_settings() -> None:
    with pytest.raises(ValidationError, match="needs KAFKA_BOOTSTRAP"):
        Settings(kafka_security_protocol="SSL")


def test_the_cli_names_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP": BOOTSTRAP, "REASEQ_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "status"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert "bad settings in the environment" in done.stdout and "REASEQ_KAFKA_SASL_USERNAME" in done.stdout


@pytest.mark.integration
def test_a_worker_refused_by_the_broker_says_why_and_waits(tmp_path: Path) -> None:
    """A broker that requires SASL (tansu's --authentication) and a worker with a login it does not know: the worker
    logs that its credentials were refused, not that Kafka is missing, and keeps waiting as for an absent broker."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log", authentication=True) as broker:
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_username="nobody",
            kafka_sasl_password=SecretStr("pw-never-logged"),
            state_dir=tmp_path / "state",
        )
        worker = spawn_cli(settings, broker.bootstrap, ["worker"], "worker")
        log = run_dir(settings) / "worker.log"
        try:
            deadline = time.monotonic() + 120
            while "refused this client's credentials" not in log.read_text() and time.monotonic() < deadline:
                assert worker.poll() is None, log.read_text()[-2000:]
                time.sleep(0.5)
            text = log.read_text()
            assert "refused this client's credentials" in text and "SASL" in text, text[-2000:]
            time.sleep(3.0)
            assert worker.poll() is None  # waiting, not exited
            assert "pw-never-logged" not in text  # the password is never logged
        finally:
            stop_process(worker.pid, timeout_s=15)
