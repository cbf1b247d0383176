"""The ranking service over a feature replica, without a broker: batches are applied as the follower would."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.ranker_inputs import SideInputs
from reaseq.contracts import (
    HistoryEntry,
    InteractionKind,
    ItemSemanticId,
    RankRequest,
    RankSource,
    UserFeatureUpdate,
)
from reaseq.settings import Settings
from serving.replica import FeatureReplica, FetchedBatch, _new_entries
from serving.service import RankerService
from tests.support import knowledge_result
from tests.support.versions import T0, build_model, item
from training.artifact import ModelArtifact


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


offsets = itertools.count(1)


def batch(**records: Any) -> FetchedBatch:
    return FetchedBatch(
        items=records.get("items", {}),
        users=records.get("users", {}),
        knowledge=records.get("knowledge", {}),
        ids=records.get("ids", []),
        positions={("features", 0): next(offsets)},
    )


def semantic_id(
    service: RankerService, item_id: str, codes: tuple[int, ...], version: str | None = None
) -> ItemSemanticId:
    """What the ID writer publishes for an item of ``service``'s version (or another)."""
    return ItemSemanticId(model_version=version or service.version, item_id=item_id, codes=list(codes), assigned_at=T0)


def free_codes(service: RankerService, count: int) -> list[tuple[int, ...]]:
    """Codes no trained item holds: trained prefixes with the next collision codes, as the writer would give."""
    table = ModelArtifact.load(service.artifact.directory).ids
    rng = np.random.default_rng(5)
    return [table.assign_new(f"new/{n}", rng.normal(size=384).astype(np.float32)) for n in range(count)]


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


def test_new_items_take_the_published_ids_which_survive_a_restart(model_dir: Path, tmp_path: Path) -> None:
    service = open_service(model_dir, tmp_path / "replica")
    service.apply(batch(users={"u1": history("u1", ["i1", "i2"], 2)}))
    n1, n2, n3 = free_codes(service, 3)
    service.apply(batch(items={"n1": item("n1", "A brand new lamp", 100), "n2": item("n2", "Another new lamp", 101)}))
    assert service.rank([RankRequest(user_id="u1", candidates=["n1"])])[0].unknown == ["n1"], "no ID published yet"
    service.apply(
        batch(
            ids=[
                semantic_id(service, "n1", n1),
                semantic_id(service, "n2", n2, version="another-version"),  # not this version's: ignored
                semantic_id(service, "n2", n2),
                semantic_id(service, "n1", n3),  # a second ID for n1: the first one published stands
            ]
        )
    )
    assigned = {key: service.artifact.ids[str(service.index_of[key])] for key in ("n1", "n2")}
    assert assigned == {"n1": n1, "n2": n2}
    requests = [RankRequest(user_id="u1", candidates=["n1", "n2", "i3"]), RankRequest(user_id="u1", k=8)]
    before = service.rank(requests)
    assert before[0].unknown == [] and len(before[0].items) == 3
    service.replica.close()

    again = open_service(model_dir, tmp_path / "replica")  # fresh artifact: only the replica remembers n1, n2
    assert {key: again.artifact.ids[str(again.index_of[key])] for key in ("n1", "n2")} == assigned
    assert again.rank(requests) == before
    again.replica.close()


def test_replicas_fed_the_same_ids_rank_new_items_alike(model_dir: Path, tmp_path: Path) -> None:
    """Two replicas that saw the items in different orders, and one bad ID among them, answer the same."""
    first, second = open_service(model_dir, tmp_path / "a"), open_service(model_dir, tmp_path / "b")
    codes = free_codes(first, 4)
    taken = first.artifact.ids["3"]  # i3's code: a new item cannot have it
    ids = [semantic_id(first, f"n{n}", c) for n, c in enumerate(codes)] + [semantic_id(first, "clash", taken)]
    items = {f"n{n}": item(f"n{n}", f"new thing {n}", 100 + n) for n in range(4)}
    users = {"u1": history("u1", ["i1", "n0", "i2"], 3)}
    first.apply(batch(items=items, ids=ids, users=users))
    second.apply(batch(items=dict(reversed(items.items())), users=users))
    second.apply(batch(ids=ids))
    requests = [RankRequest(user_id="u1", candidates=["n3", "n1", "i4", "clash"]), RankRequest(user_id="u1", k=10)]
    answers = first.rank(requests)
    assert answers == second.rank(requests) and answers[0].unknown == ["clash"]
    first.replica.close()
    second.replica.close()


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
    service.apply(batch(ids=[semantic_id(service, "n1", free_codes(service, 1)[0])]))  # its ID after its knowledge
    rows = lambda s: {key: s.ranker.item_vectors[s.index_of[key]].tolist() for key in ("n1", "i3", "i4")}  # noqa: E731
    expected = {"n1": [0.5] * 4, "i3": [-0.25] * 4, "i4": [0.0] * 4}
    assert rows(service) == expected
    service.replica.close()
    again = open_service(model, tmp_path / "replica")  # the saved vectors predate both: only the replica has them
    assert rows(again) == expected
    again.replica.close()
