"""Triton serving end to end: real broker, stream worker and tritonserver; a tiny full distilled ranker (knowledge,
reasoning steps, beyond-log items) trained on the topics."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from benchmarks.wrk import kserve_body, run_wrk
from dashboard.probes import triton_health
from dashboard.server import Recommender
from infra.broker import EmbeddedBroker
from infra.processes import spawn_async_worker, spawn_worker, stop_process
from infra.synthetic import SyntheticWorld, generate
from infra.triton import TritonServer, promote, rollback
from kafka_adapter.provision import provision
from reaseq.contracts import (
    CatalogItem,
    InferredItem,
    Interaction,
    InteractionKind,
    InterestResult,
    RankRequest,
    RankSource,
    UserReasoning,
    utcnow,
)
from reaseq.settings import Settings
from reaseq.topics import (
    EVENTS,
    INTERESTS,
    ITEM_FEATURES,
    ITEM_IDS,
    ITEMS,
    USER_FEATURES,
    USER_REASONING,
    topic_name,
)
from reasoning.patterns import REASONING_DIR, PatternLibrary
from serving.client import RankClient, RankRequestError, served_version
from tests.support import TINY_TRAINING, TopicReader, publish_world, send_contracts
from training.datasets import load_from_topics
from training.registry import ModelRepository, version_of
from training.train import FULL, TrainConfig, train

pytestmark = pytest.mark.integration


@dataclass
class Served:
    settings: Settings
    bootstrap: str
    world: SyntheticWorld
    triton: TritonServer
    first_version: Path

    def client(self, protocol: str = "grpc") -> RankClient:
        endpoints = self.triton.endpoints
        return RankClient(endpoints.grpc_url if protocol == "grpc" else endpoints.http_url, protocol)  # type: ignore[arg-type]


def train_tiny(settings: Settings, bootstrap: str, root: Path, seed: int) -> Path:
    ranker = {**TINY_TRAINING["ranker"], "side": FULL.model_dump()}  # type: ignore[dict-item]
    config = TrainConfig.model_validate({"dataset": Path("topics"), **TINY_TRAINING, "ranker": ranker, "seed": seed})
    return train(config, root / "store", settings.state_dir, data=load_from_topics(settings, bootstrap))


@pytest.fixture(scope="module")
def served(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serving")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{tag}.",
        app_id=f"reaseq-{tag}",
        state_dir=root / "state",
        log_level="INFO",
    )
    bootstrap = broker.bootstrap
    provision(settings, bootstrap, 1)
    worker = spawn_worker(settings, bootstrap, 1, "w0")
    world = generate(120, 40, 800, seed=3)
    publish_world(settings, bootstrap, world).close()
    version = train_tiny(settings, bootstrap, root, seed=1)
    ModelRepository(settings).publish(version)
    writer = spawn_async_worker(settings, bootstrap, "ids")  # new items' semantic IDs, for every replica
    triton = TritonServer(settings, bootstrap).start()
    try:
        yield Served(settings, bootstrap, world, triton, version)
    finally:
        triton.stop()
        stop_process(writer.pid, timeout_s=15)
        stop_process(worker.pid, timeout_s=15)


def runtime_starts(served: Served) -> list[dict[str, object]]:
    """The "serving runtime ready" lines of Triton's log, one per start of the ranker."""
    lines = served.triton.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and "serving runtime ready" in line]


def history_of(world: SyntheticWorld, user: str) -> set[str]:
    return {i.item_id for i in world.interactions if i.user_id == user}


def test_ranks_known_users_and_answers_unknown_ones(served: Served) -> None:
    client = served.client()
    user = served.world.interactions[0].user_id
    top = client.rank(user, k=5)
    assert top.source is RankSource.MODEL and len(top.items) == 5
    ids = [item.item_id for item in top.items]
    assert len(set(ids)) == 5 and not set(ids) & history_of(served.world, user)  # history excluded
    assert [i.score for i in top.items] == sorted((i.score for i in top.items), reverse=True)

    candidates = [served.world.items[7].item_id, "no-such-item", served.world.items[3].item_id]
    scored = client.rank(user, candidates=candidates)
    assert {i.item_id for i in scored.items} == {candidates[0], candidates[2]}
    assert scored.unknown == ["no-such-item"]
    assert scored.items[0].score >= scored.items[1].score

    cold = client.rank("someone-new", k=4)
    assert cold.source is RankSource.COLD_START and len(cold.items) == 4
    assert served.client("http").rank(user, k=5) == top  # both protocols, same answer


def test_wrk_drives_the_http_endpoint_with_the_clients_requests(served: Served) -> None:
    """bench-serving's outside client: each body the wrk script sends is a KServe v2 request the ranker answers as it
    answers our client, and wrk's report is read."""
    user = served.world.interactions[0].user_id
    candidates = [item.item_id for item in served.world.items[:20]]
    requests = [RankRequest(user_id=user, candidates=candidates), RankRequest(user_id=user, k=5)]
    url = f"http://{served.triton.endpoints.http_url}"
    post = urllib.request.Request(
        f"{url}/v2/models/ranker/infer", data=kserve_body(requests[1]), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(post, timeout=30) as answer:
        outputs = {output["name"]: output["data"] for output in json.loads(answer.read())["outputs"]}
    assert outputs["ITEM_IDS"] == [item.item_id for item in served.client().rank(user, k=5).items]
    cell = run_wrk(url, requests, concurrency=2, seconds=2.0)
    assert cell["requests"] > 0 and cell["errors"] == 0 and 0 < cell["p50_ms"] <= cell["p99_ms"]


def test_a_triton_named_by_settings_is_found_without_a_local_stack(served: Served, tmp_path: Path) -> None:
    """As in compose: the page and the CLI run beside Triton, not in its stack (no run state to find it by)."""
    endpoints = served.triton.endpoints
    elsewhere = served.settings.model_copy(update={"state_dir": tmp_path})
    assert triton_health(elsewhere).state == "off" and Recommender(elsewhere).recommend("anyone", 3)["served"] is False

    named = elsewhere.model_copy(
        update={
            "triton_host": endpoints.host,
            "triton_http_port": endpoints.http_port,
            "triton_grpc_port": endpoints.grpc_port,
            "triton_metrics_port": endpoints.metrics_port,
        }
    )
    health = triton_health(named)
    assert health.state == "ok" and f"grpc {endpoints.grpc_url}" in health.detail and "ready" in health.detail
    user = served.world.interactions[0].user_id
    view = Recommender(named).recommend(user, 3)
    assert view["served"] is True and view["source"] == RankSource.MODEL.value and len(view["items"]) == 3


def test_new_item_and_new_interaction_are_reflected(served: Served) -> None:
    client = served.client()
    now = datetime.now(UTC)
    new_item = CatalogItem(
        item_id=f"fresh-{uuid.uuid4().hex[:6]}",
        title="Ultralight waterproof trail jacket",
        brand="Copperleaf",
        categories=["Outdoors", "Jackets"],
        event_time=now,
    )
    known = served.world.interactions[0]
    send_contracts(served.bootstrap, topic_name(served.settings, ITEMS), [new_item], lambda m: m.item_id)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while (answer := client.rank(known.user_id, candidates=[new_item.item_id])).unknown:
        assert time.monotonic() < deadline, "new item never became rankable"
        time.sleep(0.2)
    assert [i.item_id for i in answer.items] == [new_item.item_id] and answer.source is RankSource.MODEL

    newcomer = f"user-new-{uuid.uuid4().hex[:6]}"
    assert client.rank(newcomer, k=3).source is RankSource.COLD_START
    click = Interaction(
        user_id=newcomer, item_id=new_item.item_id, kind=InteractionKind.PURCHASE, event_time=now + timedelta(seconds=1)
    )
    send_contracts(served.bootstrap, topic_name(served.settings, EVENTS), [click], lambda m: m.user_id)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while (answer := client.rank(newcomer, k=3)).source is RankSource.COLD_START:
        assert time.monotonic() < deadline, "new interaction never reached the ranker"
        time.sleep(0.2)
    assert len(answer.items) == 3 and new_item.item_id not in {i.item_id for i in answer.items}


def test_two_replicas_rank_new_items_alike(served: Served, tmp_path: Path) -> None:
    """A second tritonserver on the same version, its own replica: new items (two with one text, so one code prefix,
    which the second finds taken) and interactions on them get the same top-k lists and candidate scores from both."""
    now = utcnow()
    source = served.world.items[0]
    new_items = [
        CatalogItem(
            item_id=f"twin-{n}-{uuid.uuid4().hex[:6]}",
            title=source.title,
            description=source.description,
            brand=source.brand,
            categories=source.categories,
            event_time=now,
        )
        for n in range(2)
    ] + [
        CatalogItem(item_id=f"other-{n}-{uuid.uuid4().hex[:6]}", title=f"Folding camp stool {n}", event_time=now)
        for n in range(4)
    ]
    users = sorted({i.user_id for i in served.world.interactions})[:6]
    clicks = [
        Interaction(
            user_id=user, item_id=new.item_id, kind=InteractionKind.CLICK, event_time=now + timedelta(seconds=1)
        )
        for user, new in zip(users, new_items, strict=True)
    ]
    send_contracts(served.bootstrap, topic_name(served.settings, ITEMS), new_items, lambda m: m.item_id)  # type: ignore[attr-defined]
    send_contracts(served.bootstrap, topic_name(served.settings, EVENTS), clicks, lambda m: m.user_id)  # type: ignore[attr-defined]
    second_settings = served.settings.model_copy(update={"state_dir": tmp_path / "second"})
    ModelRepository(second_settings).publish(served.first_version)
    with TritonServer(second_settings, served.bootstrap) as second:
        clients = [served.client(), RankClient(second.endpoints.grpc_url, "grpc")]
        candidates = [new.item_id for new in new_items] + [item.item_id for item in served.world.items[:10]]

        def answers(client: RankClient) -> list[object]:
            return [(client.rank(u, k=10), client.rank(u, candidates=candidates)) for u in users]

        deadline = time.monotonic() + 60
        while any(scored.unknown for _, scored in answers(clients[1]) + answers(clients[0])):
            assert time.monotonic() < deadline, "the new items never became rankable on both replicas"
            time.sleep(0.5)
        first, other = answers(clients[0]), answers(clients[1])
    assert first == other
    assert all(len(scored.items) == len(candidates) for _, scored in first)


def test_the_distilled_ranker_reads_the_reasoning_steps_and_beyond_log_items_published_for_a_user(
    served: Served,
) -> None:
    client = served.client()
    user = max(i.user_id for i in served.world.interactions)  # not one the restart test compares
    candidates = [item.item_id for item in served.world.items[:15]]
    before = client.rank(user, candidates=candidates)
    pattern = PatternLibrary.load(served.first_version / REASONING_DIR)
    version = before.model_version
    steps = UserReasoning(
        user_id=user,
        history_version=99,
        structure=list(pattern.best.structure),
        steps=["s"] * len(pattern.best.structure),
        step_vectors=[[0.05] * 384 for _ in pattern.best.structure],
        pattern_version=pattern.version,
        model_version=version,
        created_at=utcnow(),
    )
    interests = InterestResult(
        user_id=user,
        history_version=99,
        interests=[InferredItem(item_id=candidates[0], confidence=0.9)],
        model_version=version,
        created_at=utcnow(),
    )
    send_contracts(served.bootstrap, topic_name(served.settings, USER_REASONING), [steps], lambda m: m.user_id)  # type: ignore[attr-defined]
    send_contracts(served.bootstrap, topic_name(served.settings, INTERESTS), [interests], lambda m: m.user_id)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while (after := client.rank(user, candidates=candidates)).items == before.items:
        assert time.monotonic() < deadline, "the published side inputs never changed the ranker's scores"
        time.sleep(0.2)
    assert {i.item_id for i in after.items} == set(candidates)


def test_restart_resumes_the_replica_and_answers_the_same(served: Served) -> None:
    client = served.client()
    users = sorted({i.user_id for i in served.world.interactions})[:6]
    candidates = [item.item_id for item in served.world.items[:20]]
    before = [(client.rank(u, k=5), client.rank(u, candidates=candidates)) for u in users]
    served.triton.stop()
    served.triton.start()
    client = served.client()
    after = [(client.rank(u, k=5), client.rank(u, candidates=candidates)) for u in users]
    assert after == before
    assert runtime_starts(served)[-1]["caught_up_records"] == 0  # resumed from its stored offsets, re-read nothing


def test_records_published_while_triton_is_down_are_served_after_restart(served: Served) -> None:
    served.triton.stop()
    now = utcnow()
    item = CatalogItem(
        item_id=f"while-down-{uuid.uuid4().hex[:6]}",
        title="Insulated steel camp mug",
        brand="Ridgeline",
        categories=["Outdoor", "Mugs"],
        event_time=now,
    )
    newcomer = f"user-while-down-{uuid.uuid4().hex[:6]}"
    later = now + timedelta(seconds=1)
    click = Interaction(user_id=newcomer, item_id=item.item_id, kind=InteractionKind.PURCHASE, event_time=later)
    send_contracts(served.bootstrap, topic_name(served.settings, ITEMS), [item], lambda m: m.item_id)  # type: ignore[attr-defined]
    send_contracts(served.bootstrap, topic_name(served.settings, EVENTS), [click], lambda m: m.user_id)  # type: ignore[attr-defined]
    published = (
        (ITEM_FEATURES, item.item_id),
        (ITEM_IDS, f"{version_of(served.first_version)}/{item.item_id}"),  # its semantic ID, from the ID writer
        (USER_FEATURES, newcomer),
    )
    for spec, key in published:  # on the topics before Triton is back
        features = TopicReader(served.bootstrap, topic_name(served.settings, spec))
        features.wait_for(lambda records, key=key: any(r.key == key.encode() for r in records), timeout_s=60)
        features.close()
    restarting = time.monotonic()
    served.triton.start()
    print(f"Triton started again: ready in {time.monotonic() - restarting:.1f}s")
    # Read from the stored offsets on: exactly the item's update and ID and the newcomer's, nothing lost or re-read.
    assert runtime_starts(served)[-1]["caught_up_records"] == 3
    client = served.client()
    scored = client.rank(served.world.interactions[0].user_id, candidates=[item.item_id])
    assert [i.item_id for i in scored.items] == [item.item_id] and scored.unknown == []
    assert client.rank(newcomer, k=3).source is RankSource.MODEL


def test_malformed_requests_get_clear_errors(served: Served) -> None:
    raw = triton_http.InferenceServerClient(served.triton.endpoints.http_url)

    def infer(**arrays: np.ndarray) -> str:
        inputs = []
        for name, array in arrays.items():
            tensor = triton_http.InferInput(name, list(array.shape), "BYTES" if array.dtype == np.object_ else "INT32")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException) as caught:
            raw.infer("ranker", inputs)
        return caught.value.message()

    assert "USER_ID" in infer(K=np.array([[5]], dtype=np.int32))
    assert "k" in infer(USER_ID=np.array([[b"u"]], dtype=np.object_), K=np.array([[0]], dtype=np.int32))
    assert "one user id" in infer(USER_ID=np.array([[b"a"], [b"b"]], dtype=np.object_))
    assert "user_id" in infer(USER_ID=np.array([[b""]], dtype=np.object_))
    with pytest.raises(RankRequestError, match="k"):  # the client maps the server's refusal, without retrying
        served.client().send(RankRequest.model_construct(user_id="u", candidates=None, k=1000))
    assert served.client().rank("someone", k=2).source is RankSource.COLD_START  # the server is fine


def test_bad_requests_mixed_into_good_traffic_fail_alone(served: Served) -> None:
    """Bad requests sent among good ones, eight at a time, so Triton batches them together: each bad one gets its own
    error or its documented answer, and every good one the answer it gets alone."""
    user = served.world.interactions[0].user_id
    known = [item.item_id for item in served.world.items[:30]]
    expected = served.client().rank(user, candidates=known)

    def text(*values: str) -> np.ndarray:
        return np.array([[value.encode() for value in values]], dtype=np.object_)

    bad: dict[str, tuple[dict[str, np.ndarray], str]] = {
        "empty candidate list": ({"USER_ID": text(user), "CANDIDATES": text()}, "candidates is empty"),
        "over the maximum": (
            {"USER_ID": text(user), "CANDIDATES": text(*(f"x{n}" for n in range(1001)))},
            "over the maximum of 1000",
        ),
        "two users in one request": ({"USER_ID": np.array([[b"a"], [b"b"]], dtype=np.object_)}, "one user id"),
        "k as text": ({"USER_ID": text(user), "K": text("five")}, "K"),
        "two values of k": (  # refused by Triton itself, by the model's input config
            {"USER_ID": text(user), "K": np.array([[3, 4]], dtype=np.int32)},
            "unexpected shape for input 'K'",
        ),
        "no user": ({"K": np.array([[5]], dtype=np.int32)}, "USER_ID"),
    }

    def send(arrays: dict[str, np.ndarray]) -> object:
        client = triton_http.InferenceServerClient(served.triton.endpoints.http_url)
        inputs = []
        for name, array in arrays.items():
            tensor = triton_http.InferInput(name, list(array.shape), "BYTES" if array.dtype == np.object_ else "INT32")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            return client.infer("ranker", inputs)
        except InferenceServerException as error:
            return error
        finally:
            client.close()

    good = {"USER_ID": text(user), "CANDIDATES": text(*known)}
    mixed = [("good", good)] * 24 + [(name, arrays) for name, (arrays, _) in bad.items()] * 3
    random.Random(5).shuffle(mixed)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda case: (case[0], send(case[1])), mixed))
    for name, answer in answers:
        if name == "good":
            assert not isinstance(answer, InferenceServerException), answer
            ids = [value.decode() for value in answer.as_numpy("ITEM_IDS").reshape(-1)]  # type: ignore[attr-defined]
            assert ids == [item.item_id for item in expected.items]
        else:
            assert isinstance(answer, InferenceServerException), name
            assert bad[name][1] in answer.message(), (name, answer.message())

    # documented answers: a repeated candidate is scored once, an unknown one listed apart, an unknown user cold-started
    repeated = served.client().rank(user, candidates=[known[0], known[1], known[0], "no-such-item"])
    assert [item.item_id for item in repeated.items] == sorted(
        [known[0], known[1]], key=lambda item: -next(i.score for i in repeated.items if i.item_id == item)
    )
    assert repeated.unknown == ["no-such-item"]
    assert served.client().rank("nobody-knows-me", candidates=known[:3]).source is RankSource.COLD_START


def test_promote_swaps_versions_without_failing_requests_and_rollback_restores(served: Served, tmp_path: Path) -> None:
    second = train_tiny(served.settings, served.bootstrap, tmp_path, seed=2)
    client = served.client()
    user = served.world.interactions[0].user_id
    first_name = client.rank(user, k=3).model_version
    failures: list[BaseException] = []
    versions_seen: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        own = served.client()
        while not stop.is_set():
            try:
                versions_seen.add(own.rank(user, k=3).model_version)
            except BaseException as error:
                failures.append(error)

    sender = threading.Thread(target=load)
    sender.start()
    try:
        number = promote(served.settings, served.triton.endpoints, second)
        time.sleep(1.0)
    finally:
        stop.set()
        sender.join()
    assert not failures
    assert served_version(served.triton.endpoints) == number
    new_name = client.rank(user, k=3).model_version
    assert new_name.endswith(second.name) and versions_seen >= {first_name, new_name}
    restored = rollback(served.settings, served.triton.endpoints)
    assert served_version(served.triton.endpoints) == restored
    assert client.rank(user, k=3).model_version == first_name
