"""Model versions appear whole or not at all, and the processes that read the store survive what they find there:
unit tests of ``training.registry``, then a real interest worker and a real ``reaseq serve`` against a store that a
version is written into step by step."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.processes import spawn_async_worker, spawn_cli, stop_process
from infra.triton import endpoints_for, port_env, wait_ready
from kafka_adapter.provision import provision
from reaseq.contracts import InterestRequest, InterestResult, utcnow
from reaseq.runfiles import TritonEndpoints, run_dir
from reaseq.settings import Settings
from reaseq.topics import INTEREST_REQUESTS, INTERESTS, topic_name
from serving.client import admin_client
from tests.support import TINY_TRAINING, TopicReader, send_contracts
from tests.test_train import write_lcrec
from training.registry import (
    INTERESTS_DIR,
    ITEMS_FILE,
    ModelRepository,
    has_interest_model,
    is_version,
    list_versions,
    newest_version,
    stage_version,
    version_of,
)
from training.train import TrainConfig, train

STEP_S = 0.4  # between two files of a version being written: readers poll every 2 s


def fake_version(directory: Path, interests: bool = True) -> None:
    """Enough of a version to be listed: a ranker folder and the item list (and an interest model file)."""
    (directory / "ranker").mkdir(parents=True)
    (directory / ITEMS_FILE).write_text("[]")
    if interests:
        (directory / INTERESTS_DIR).mkdir()
        (directory / INTERESTS_DIR / "model.safetensors").write_bytes(b"")


def test_a_staged_version_is_listed_only_once_committed(tmp_path: Path) -> None:
    final = tmp_path / "store" / "D" / "20260101T000000Z-a"
    with stage_version(final) as staging:
        fake_version(staging)
        assert staging.parent == final.parent and staging.name.startswith(".")
        assert list_versions(tmp_path / "store") == [] and newest_version(tmp_path / "store") is None
    assert list_versions(tmp_path / "store") == [final] and not staging.exists()
    assert newest_version(tmp_path / "store", having=has_interest_model) == final
    assert version_of(final) == "D/20260101T000000Z-a"
    with pytest.raises(FileExistsError), stage_version(final):  # a version is never written over
        pass


def test_an_exception_inside_the_stage_leaves_nothing_behind(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="training failed"),
        stage_version(tmp_path / "store" / "D" / "20260101T000000Z-a") as staging,
    ):
        fake_version(staging)
        raise RuntimeError("training failed")
    assert list((tmp_path / "store" / "D").iterdir()) == []


def test_a_hidden_folder_is_never_a_version(tmp_path: Path) -> None:
    store = tmp_path / "store"
    partial, in_hidden_dataset = store / "D" / ".v.partial", store / ".D" / "v"
    bare, plain = store / "D" / "w", store / "D" / "x"
    for version in (partial, in_hidden_dataset, plain):
        fake_version(version)
    fake_version(bare, interests=False)
    assert not is_version(partial) and not is_version(in_hidden_dataset)
    assert list_versions(store) == [bare, plain]
    assert newest_version(store, having=has_interest_model) == plain


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained version, with an interest model, to copy into the stores under test."""
    root = tmp_path_factory.mktemp("trained")
    write_lcrec(root / "tiny", n_items=40, n_users=30, n_events=300)
    config = TrainConfig.model_validate({"dataset": root / "tiny", **TINY_TRAINING})
    version = train(config, root / "store", root / "state")
    staged_name = f".{version.name}.partial".encode()  # no file written names the folder it was written in
    assert not any(staged_name in path.read_bytes() for path in version.rglob("*") if path.is_file())
    return version


def copy_step_by_step(source: Path, destination: Path, between: Callable[[], None]) -> None:
    """Copy a version's files one by one, config files last (the order that once broke the interest worker)."""
    for path in sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: p.name == "config.json"):
        target = destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        time.sleep(STEP_S)
        between()


def log_lines(settings: Settings, name: str, text: str) -> list[str]:
    log = run_dir(settings) / f"{name}.log"
    return [line for line in log.read_text(errors="replace").splitlines() if text in line] if log.exists() else []


def wait_for_log(
    settings: Settings, name: str, text: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not log_lines(settings, name, text):
        assert process.poll() is None, f"{name} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{name} never logged {text!r}"
        time.sleep(0.2)


def answers(endpoints: TritonEndpoints) -> bool:
    try:
        return bool(admin_client(endpoints, timeout_s=1.0).is_server_live())
    except Exception:  # nothing listens
        return False


def request_interests(settings: Settings, bootstrap: str, user: str) -> None:
    request = InterestRequest(user_id=user, history_version=1, item_ids=["0", "1", "2"], requested_at=utcnow())
    send_contracts(bootstrap, topic_name(settings, INTEREST_REQUESTS), [request], lambda m: m.user_id)  # type: ignore[attr-defined]


def results_of(reader: TopicReader) -> list[InterestResult]:
    return [InterestResult.model_validate_json(r.value) for r in reader.poll() if r.value]


@pytest.fixture
def deployment(settings: Settings, tmp_path: Path) -> tuple[Settings, str]:
    """An isolated deployment with its topics and an empty model store; its broker address."""
    assert settings.kafka_bootstrap
    provision(settings, settings.kafka_bootstrap, 1)
    return settings.model_copy(update={"model_store": tmp_path / "store"}), settings.kafka_bootstrap


@pytest.mark.integration
def test_readers_wait_for_a_version_written_step_by_step_and_serve_it_once_whole(
    deployment: tuple[Settings, str], trained: Path
) -> None:
    settings, bootstrap = deployment
    endpoints = endpoints_for(settings)
    worker = spawn_async_worker(settings, bootstrap, "interests")
    triton = spawn_cli(settings, bootstrap, ["serve"], "triton", env=port_env(endpoints))
    try:
        wait_for_log(settings, "interests", "no interest model yet", worker)
        wait_for_log(settings, "triton", "no trained model version yet", triton)
        request_interests(settings, bootstrap, "u1")
        interests = TopicReader(bootstrap, topic_name(settings, INTERESTS))

        def nothing_served_yet() -> None:
            assert worker.poll() is None and triton.poll() is None
            assert results_of(interests) == [] and ModelRepository(settings).newest() is None and not answers(endpoints)

        final = settings.model_store / "Tiny" / trained.name
        with stage_version(final) as staging:
            copy_step_by_step(trained, staging, nothing_served_yet)
            time.sleep(2.5)  # one more check by each reader: the complete but uncommitted version stays invisible
            nothing_served_yet()

        def exited() -> str | None:
            return None if triton.poll() is None else f"reaseq serve exited with {triton.returncode}"

        wait_ready(endpoints, exited, run_dir(settings) / "triton.log", 300)
        deadline = time.monotonic() + 120
        while not (results := results_of(interests)):
            assert worker.poll() is None and time.monotonic() < deadline, "the queued request was never answered"
            time.sleep(0.2)
        assert [(r.user_id, r.model_version) for r in results] == [("u1", version_of(final))] and results[0].interests
        assert ModelRepository(settings).newest() == (1, final.resolve())
        assert len(log_lines(settings, "triton", "no trained model version yet")) == 1 and worker.poll() is None
        assert log_lines(settings, "interests", "failed to load") == []
        interests.close()
    finally:
        stop_process(triton.pid, timeout_s=30)
        stop_process(worker.pid, timeout_s=20)


@pytest.mark.integration
def test_a_broken_version_is_logged_and_the_interest_worker_keeps_serving(
    deployment: tuple[Settings, str], trained: Path
) -> None:
    settings, bootstrap = deployment
    old_broken, good, new_broken = (settings.model_store / "Tiny" / f"2000010{day}T000000Z-x" for day in (1, 2, 3))
    fake_version(old_broken)  # written straight to its final path, without its config.json files
    worker = spawn_async_worker(settings, bootstrap, "interests")
    try:
        wait_for_log(settings, "interests", "failed to load", worker)
        time.sleep(2.5)  # tried again at the next check, still broken: logged once, not at every check
        assert worker.poll() is None and len(log_lines(settings, "interests", version_of(old_broken))) == 1

        with stage_version(good) as staging:
            shutil.copytree(trained, staging, dirs_exist_ok=True)
        request_interests(settings, bootstrap, "u1")
        interests = TopicReader(bootstrap, topic_name(settings, INTERESTS))
        interests.wait_for(lambda records: len(records) == 1)

        fake_version(new_broken)
        time.sleep(2.5)  # the worker looks for a newer version before a batch, at most every 2 s
        request_interests(settings, bootstrap, "u2")  # the newer version fails to load: the model loaded before answers
        interests.wait_for(lambda records: len(records) == 2)
        answered = [(r.user_id, r.model_version) for r in results_of(interests)]
        assert answered == [("u1", version_of(good)), ("u2", version_of(good))]
        assert log_lines(settings, "interests", version_of(new_broken)) and worker.poll() is None
        interests.close()
    finally:
        stop_process(worker.pid, timeout_s=20)
