"""The ranking service over a feature replica, without a broker: batches are applied as the follower would."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from models.ranker_inputs import SideInputs
from models.rqvae import RQVAEConfig, train_rqvae
from models.semantic_ids import SemanticIdTable
from models.tiger import TigerConfig, TigerRanker
from models.tokenizer import SemanticIdTokenizer
from reaseq.contracts import (
    HistoryEntry,
    InteractionKind,
    ItemFeatureUpdate,
    RankRequest,
    RankSource,
    UserFeatureUpdate,
)
from reaseq.settings import Settings
from serving.replica import FeatureReplica, FetchedBatch, _new_entries
from serving.service import RankerService
from tests.support import knowledge_result
from training.artifact import ModelArtifact
from training.registry import ITEMS_FILE

T0 = datetime(2026, 5, 1, tzinfo=UTC)
ITEMS = 40


def build_model(directory: Path, side: SideInputs) -> Path:
    """A model version over items i0..i39: RQ-VAE on random 384-d vectors (MiniLM's width), a tiny ranker."""
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(ITEMS, 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    ids = SemanticIdTable.build(
        train_rqvae(embeddings, RQVAEConfig(codebook_size=8, epochs=5), seed=0, device="cpu"), embeddings
    )
    tokenizer = SemanticIdTokenizer({int(k): v for k, v in ids.ids.items()}, ids.codes_per_level, num_user_buckets=10)
    config = TigerConfig(
        d_model=32, d_kv=8, num_heads=2, d_ff=32, num_encoder_layers=1, num_decoder_layers=1, side=side
    )
    ranker = TigerRanker(tokenizer, config, device="cpu")
    if side.knowledge:
        ranker.set_item_vectors(torch.zeros(ITEMS, side.vector_dim))
    ids.save(directory / "ids")
    ranker.save(directory / "ranker")
    (directory / ITEMS_FILE).write_text(json.dumps([f"i{n}" for n in range(ITEMS)]))
    (directory / "config.json").write_text("{}")
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("store") / "tiny" / "20260501T000000Z-test", SideInputs())


def open_service(model_dir: Path, replica_path: Path) -> RankerService:
    settings = Settings(state_dir=replica_path.parent)
    return RankerService(ModelArtifact.load(model_dir), FeatureReplica(replica_path, settings, "unused:9092"), settings)


def history(user: str, items: list[str], version: int) -> UserFeatureUpdate:
    entries = [
        HistoryEntry(item_id=i, kind=InteractionKind.CLICK, event_time=T0 + timedelta(seconds=n))
        for n, i in enumerate(items)
    ]
    return UserFeatureUpdate(user_id=user, version=version, history=entries, as_of=entries[-1].event_time)


def item(item_id: str, title: str, seconds: int) -> ItemFeatureUpdate:
    when = T0 + timedelta(seconds=seconds)
    return ItemFeatureUpdate(
        item_id=item_id,
        content_hash=item_id,
        title=title,
        brand=None,
        categories=["x"],
        price=None,
        event_time=when,
        first_seen=when,
    )


offsets = itertools.count(1)


def batch(**records: dict) -> FetchedBatch:
    return FetchedBatch(
        items=records.get("items", {}),
        users=records.get("users", {}),
        knowledge=records.get("knowledge", {}),
        positions={("features", 0): next(offsets)},
    )


def test_known_users_rank_unknown_users_get_popular_and_fresh(model_dir: Path, tmp_path: Path) -> None:
    service = open_service(model_dir, tmp_path / "replica")
    service.apply(batch(users={"u1": history("u1", ["i1", "i2"], 2), "u2": history("u2", ["i2", "i2", "i3"], 3)}))
    service.apply(batch(items={"i7": item("i7", "old", 0), "i9": item("i9", "newest", 50)}))

    top = service.rank([RankRequest(user_id="u1", k=5)])[0]
    assert top.source is RankSource.MODEL and len(top.items) == 5 and not {"i1", "i2"} & {i.item_id for i in top.items}
    scored = service.rank([RankRequest(user_id="u1", candidates=["i5", "nope", "i6"])])[0]
    assert {i.item_id for i in scored.items} == {"i5", "i6"} and scored.unknown == ["nope"]

    cold = service.rank([RankRequest(user_id="stranger", k=3)])[0]
    assert cold.source is RankSource.COLD_START
    assert [i.item_id for i in cold.items] == ["i2", "i1", "i9"]  # the most interacted, and the freshest item
    pooled = service.rank([RankRequest(user_id="stranger", candidates=["i3", "i2", "ghost"])])[0]
    assert [i.item_id for i in pooled.items] == ["i2", "i3"] and pooled.unknown == ["ghost"]


def test_new_items_get_ids_that_survive_a_restart(model_dir: Path, tmp_path: Path) -> None:
    service = open_service(model_dir, tmp_path / "replica")
    service.apply(batch(users={"u1": history("u1", ["i1", "i2"], 2)}))
    assert service.rank([RankRequest(user_id="u1", candidates=["n1"])])[0].unknown == ["n1"]
    service.apply(batch(items={"n1": item("n1", "A brand new lamp", 100), "n2": item("n2", "Another new lamp", 101)}))
    assigned = {key: service.artifact.ids[str(service.index_of[key])] for key in ("n1", "n2")}
    assert assigned["n1"] != assigned["n2"]
    requests = [RankRequest(user_id="u1", candidates=["n1", "n2", "i3"]), RankRequest(user_id="u1", k=8)]
    before = service.rank(requests)
    assert before[0].unknown == [] and len(before[0].items) == 3
    service.replica.close()

    again = open_service(model_dir, tmp_path / "replica")  # fresh artifact: only the replica remembers n1, n2
    assert {key: again.artifact.ids[str(again.index_of[key])] for key in ("n1", "n2")} == assigned
    assert again.rank(requests) == before
    again.replica.close()


def test_popularity_counts_only_interactions_an_update_adds() -> None:
    first = history("u", ["a", "b"], 2)
    assert _new_entries(None, first) == ["a", "b"]
    assert _new_entries(first, history("u", ["a", "b", "c"], 3)) == ["c"]
    assert _new_entries(first, first) == []  # a redelivered update adds nothing


def test_the_replica_keeps_item_knowledge_across_restarts(model_dir: Path, tmp_path: Path) -> None:
    result = knowledge_result("i3", 0.5)
    service = open_service(model_dir, tmp_path / "replica")
    assert service.apply(batch(knowledge={"i3": result})) == 1
    service.replica.close()
    again = open_service(model_dir, tmp_path / "replica")
    assert again.replica.knowledge("i3") == result and again.replica.knowledge("i4") is None
    again.replica.close()


def test_knowledge_vectors_published_since_training_reach_the_ranker_and_survive_a_restart(tmp_path: Path) -> None:
    model = build_model(tmp_path / "store" / "tiny" / "20260501T000000Z-k", SideInputs(knowledge=True, vector_dim=4))
    service = open_service(model, tmp_path / "replica")
    service.apply(batch(items={"n1": item("n1", "A brand new lamp", 100)}))
    service.apply(batch(knowledge={"n1": knowledge_result("n1", 0.5), "i3": knowledge_result("i3", -0.25)}))
    rows = lambda s: {key: s.ranker.item_vectors[s.index_of[key]].tolist() for key in ("n1", "i3", "i4")}  # noqa: E731
    expected = {"n1": [0.5] * 4, "i3": [-0.25] * 4, "i4": [0.0] * 4}
    assert rows(service) == expected
    service.replica.close()
    again = open_service(model, tmp_path / "replica")  # the saved vectors predate both: only the replica has them
    assert rows(again) == expected
    again.replica.close()
