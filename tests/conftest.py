"""Shared fixtures: one embedded broker per session, isolated topics and state per test, one vLLM server per session
for the tests that need an LLM."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from infra.broker import EmbeddedBroker
from infra.processes import spawn_worker, stop_process
from infra.vllm import VLLMServer, build_tiny_model, built_env
from kafka_adapter.provision import provision
from reaseq.settings import Settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running


LLM_API_KEY = "test-llm-key"


@pytest.fixture(scope="session")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A real vLLM server (CPU build) with a tiny random model: real serving, meaningless text. The files that use
    it (test_vllm*.py) sort next to each other, so it runs only while they do."""
    env = built_env(Settings())  # the project's .state/vllm-env: `make vllm-env` builds it, never a test
    model = build_tiny_model(tmp_path_factory.mktemp("llm") / "tiny")
    # with a key, so every test through it shows that the clients send the configured one
    server = VLLMServer(env, model, tmp_path_factory.mktemp("llm-log") / "vllm.log", api_key=LLM_API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings of an isolated deployment: own topic prefix, app id (consumer groups) and state folder."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{tag}.",
        app_id=f"reaseq-{tag}",
        state_dir=tmp_path / "state",
        interest_debounce_s=0.5,
        log_level="INFO",
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Intra-op threads only cost on models this small, and stall badly when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


Spawn = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def workers(settings: Settings) -> Iterator[Spawn]:
    """Start stream worker processes of generation 1 by name; all are stopped at the end of the test."""
    assert settings.kafka_bootstrap
    provision(settings, settings.kafka_bootstrap, 1)
    started: list[subprocess.Popen[bytes]] = []

    def spawn(name: str) -> subprocess.Popen[bytes]:
        assert settings.kafka_bootstrap
        process = spawn_worker(settings, settings.kafka_bootstrap, 1, name)
        started.append(process)
        return process

    yield spawn
    for process in started:
        stop_process(process.pid, timeout_s=15)
