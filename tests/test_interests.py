"""Beyond-log interests and reasoning steps through the stream: real broker, stream and interest workers, a tiny
full distilled model version."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from infra.processes import spawn_async_worker, stop_process
from infra.synthetic import generate
from reaseq.contracts import (
    CatalogItem,
    DeadLetterReason,
    Interaction,
    InteractionKind,
    InterestRequest,
    InterestResult,
    UserFeatureUpdate,
    UserReasoning,
    utcnow,
)
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import (
    DEAD_LETTERS,
    EVENTS,
    INTEREST_REQUESTS,
    INTERESTS,
    ITEM_FEATURES,
    ITEMS,
    KNOWLEDGE,
    USER_REASONING,
    topic_name,
)
from reasoning.patterns import REASONING_DIR, PatternLibrary
from reasoning.user_reasoner import ItemLabels
from tests.conftest import Spawn
from tests.support import (
    TINY_TRAINING,
    TopicReader,
    knowledge_result,
    latest_by_key,
    publish_world,
    send,
    send_contracts,
)
from training.datasets import load_from_topics
from training.registry import INTERESTS_DIR, ITEMS_FILE, ModelRepository
from training.train import TrainConfig, train
from workers.interests import interest_version

pytestmark = pytest.mark.integration


def results_of(records) -> list[InterestResult]:  # type: ignore[no-untyped-def]
    return [InterestResult.model_validate_json(r.value) for r in records if r.value]


def test_users_get_interests_once_per_history_and_new_events_refresh_them(
    settings: Settings, workers: Spawn, tmp_path: Path
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    settings = settings.model_copy(update={"model_store": tmp_path / "store"})
    workers("w0")
    world = generate(60, 12, 240, seed=4)
    features = publish_world(settings, bootstrap, world)
    users = {interaction.user_id for interaction in world.interactions}

    worker = spawn_async_worker(settings, bootstrap, "interests")  # before any model: requests wait in the topic
    try:
        side = {"knowledge": True, "reasoning": "structured", "beyond_log": True}  # the full distilled ranker
        fields = {"dataset": Path("topics"), **TINY_TRAINING, "ranker": {**TINY_TRAINING["ranker"], "side": side}}  # type: ignore[dict-item]
        version = train(
            TrainConfig.model_validate(fields),
            settings.model_store,
            settings.state_dir,
            data=load_from_topics(settings, bootstrap),
        )
        pattern = PatternLibrary.load(version / REASONING_DIR)
        final = {
            key.decode(): UserFeatureUpdate.model_validate_json(value)
            for key, value in latest_by_key(features.poll()).items()
        }
        interests = TopicReader(bootstrap, topic_name(settings, INTERESTS))

        def current(results: list[InterestResult]) -> bool:
            latest = {result.user_id: result for result in results}
            return all(user in latest and latest[user].history_version == final[user].version for user in users)

        results = results_of(interests.wait_for(lambda rs: current(results_of(rs)), timeout_s=180))
        catalog = {item.item_id for item in world.items}
        for result in results:
            history = {entry.item_id for entry in final[result.user_id].history}
            assert result.interests and all(i.item_id in catalog and i.item_id not in history for i in result.interests)
            assert [i.confidence for i in result.interests] == sorted(
                (i.confidence for i in result.interests), reverse=True
            )
        reasoning = TopicReader(bootstrap, topic_name(settings, USER_REASONING)).wait_for(
            lambda rs: {r.key.decode() for r in rs if r.key} == users, timeout_s=60
        )
        for steps in (UserReasoning.model_validate_json(r.value) for r in reasoning if r.value):
            assert tuple(steps.structure) == pattern.best.structure and steps.pattern_version == pattern.version
            assert len(steps.steps) == len(steps.step_vectors) == len(steps.structure) and steps.steps[-1].startswith(
                "target:"
            )

        # An unchanged history is not recomputed; a bad request is dead-lettered; a new event refreshes its user.
        quiet, active = sorted(users)[:2]
        counts = {user: sum(r.user_id == user for r in results) for user in users}
        same = InterestRequest(
            user_id=quiet,
            history_version=final[quiet].version,
            item_ids=[e.item_id for e in final[quiet].history],
            requested_at=utcnow(),
        )
        send_contracts(bootstrap, topic_name(settings, INTEREST_REQUESTS), [same], lambda m: m.user_id)  # type: ignore[attr-defined]
        send(
            bootstrap,
            topic_name(settings, INTEREST_REQUESTS),
            [(quiet.encode(), b'{"schema_version": 1, "user_id": 7}')],
        )
        newest = final[active].history[-1].event_time + timedelta(minutes=1)
        event = Interaction(
            user_id=active, item_id=world.items[0].item_id, kind=InteractionKind.PURCHASE, event_time=newest
        )
        send_contracts(bootstrap, topic_name(settings, EVENTS), [event], lambda m: m.user_id)  # type: ignore[attr-defined]
        refreshed = results_of(
            interests.wait_for(
                lambda rs: any(
                    r.user_id == active and r.history_version > final[active].version for r in results_of(rs)
                ),
                timeout_s=60,
            )
        )
        dead = TopicReader(bootstrap, topic_name(settings, DEAD_LETTERS))
        letters = [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in dead.wait_for(
                lambda rs: any(DeadLetter.from_record(r.key, r.value, r.headers).agent == "interests" for r in rs)
            )
        ]
        assert any(letter.agent == "interests" and letter.reason is DeadLetterReason.INVALID for letter in letters)
        assert sum(r.user_id == quiet for r in refreshed) == counts[quiet]

        # An item published after training counts in a user's reasoning steps once its knowledge is out.
        late = CatalogItem(
            item_id="late-item", title="Stormproof trail shell", categories=["Outdoor"], event_time=utcnow()
        )
        knowledge = knowledge_result(late.item_id, 0.1)
        send_contracts(bootstrap, topic_name(settings, ITEMS), [late], lambda m: m.item_id)  # type: ignore[attr-defined]
        send_contracts(bootstrap, topic_name(settings, KNOWLEDGE), [knowledge], lambda m: m.item_id)  # type: ignore[attr-defined]
        TopicReader(bootstrap, topic_name(settings, ITEM_FEATURES)).wait_for(
            lambda rs: any(r.key == b"late-item" for r in rs)
        )
        time.sleep(2.0)  # the worker follows item features and knowledge on its own; give it a moment
        request = InterestRequest(
            user_id="late-user", history_version=1, item_ids=[late.item_id], requested_at=utcnow()
        )
        send_contracts(bootstrap, topic_name(settings, INTEREST_REQUESTS), [request], lambda m: m.user_id)  # type: ignore[attr-defined]
        steps_of = TopicReader(bootstrap, topic_name(settings, USER_REASONING)).wait_for(
            lambda rs: any(r.key == b"late-user" for r in rs)
        )
        steps = UserReasoning.model_validate_json(latest_by_key(steps_of)[b"late-user"])
        known = {label for names in ItemLabels.labels_of(knowledge.chain).values() for label in names} | {late.title}
        assert all(any(label in text for label in known) for text in steps.steps[:-1]), steps.steps
    finally:
        stop_process(worker.pid, timeout_s=20)


def test_the_worker_answers_with_the_served_version_not_merely_the_newest(tmp_path: Path) -> None:
    settings = Settings().model_copy(update={"state_dir": tmp_path / "state", "model_store": tmp_path / "store"})
    older, newer, bare = (tmp_path / "store" / "D" / f"2026010{day}T000000Z-x" for day in (1, 2, 3))
    for version in (older, newer, bare):  # enough of a version for the repository and the worker's choice
        (version / "ranker").mkdir(parents=True)
        (version / ITEMS_FILE).write_text("[]")
    for version in (older, newer):
        (version / INTERESTS_DIR).mkdir()
        (version / INTERESTS_DIR / "model.safetensors").write_bytes(b"")
    assert interest_version(settings) == newer  # no Triton repository on this machine: the newest with interests
    repository = ModelRepository(settings)
    repository.publish(older)
    assert interest_version(settings) == older.resolve()  # trained since, not promoted: the served one still answers
    rolled_back = repository.publish(newer)
    assert interest_version(settings) == newer.resolve()
    repository.retire(rolled_back)
    assert interest_version(settings) == older.resolve()
    repository.publish(bare)
    assert interest_version(settings) == newer  # the served version has no interest model


def test_an_interest_worker_killed_mid_batch_answers_each_request_once_after_the_restart(
    settings: Settings, workers: Spawn, tmp_path: Path
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    # small batches, so the kill lands inside the run of them
    settings = settings.model_copy(update={"model_store": tmp_path / "store", "interest_batch": 4})
    workers("w0")
    world = generate(60, 40, 400, seed=6)
    features = publish_world(settings, bootstrap, world)
    fields = {"dataset": Path("topics"), **TINY_TRAINING}
    train(
        TrainConfig.model_validate(fields),
        settings.model_store,
        settings.state_dir,
        data=load_from_topics(settings, bootstrap),
    )
    final = {
        key.decode(): UserFeatureUpdate.model_validate_json(value).version
        for key, value in latest_by_key(features.poll()).items()
    }
    interests = TopicReader(bootstrap, topic_name(settings, INTERESTS))

    worker = spawn_async_worker(settings, bootstrap, "interests")
    try:

        def done(results: list[InterestResult]) -> bool:
            latest = {result.user_id: result.history_version for result in results}
            return all(latest.get(user) == version for user, version in final.items())

        interests.wait_for(lambda records: len(records) >= 1, timeout_s=180)
        worker.kill()  # SIGKILL: no flush, no commit
        worker.wait()
        at_kill = results_of(interests.poll(0.5))
        answered_at_kill = len(at_kill)
        assert not done(at_kill), "killed too late to test anything"
        worker = spawn_async_worker(settings, bootstrap, "interests")

        interests.wait_for(lambda records: done(results_of(records)), timeout_s=300)
        time.sleep(3.0)  # an answer given twice would have arrived by now
        results = results_of(interests.poll(1.0))
        answers = Counter((result.user_id, result.history_version) for result in results)
        print(f"killed after {answered_at_kill} answers; {len(answers)} requests answered after the restart")
        assert [request for request, count in answers.items() if count > 1] == []
    finally:
        stop_process(worker.pid, timeout_s=20)
        interests.close()
