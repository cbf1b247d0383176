"""RQ-VAE training and semantic IDs on synthetic clustered embeddings; the published index format."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.rqvae import RQVAE, RQVAEConfig, train_rqvae
from models.semantic_ids import SemanticIdTable, load_published_ids

CLUSTERS, PER_CLUSTER, PER_SUBCLUSTER, DIM = 20, 30, 6, 384
# Fewer first-level codes than clusters, so a cluster has no room to split over several first codes.
CONFIG = RQVAEConfig(codebook_size=16, epochs=100)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """600 unit vectors around 20 random centres, each cluster made of 5 subclusters; and each one's cluster."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(CLUSTERS), PER_CLUSTER)
    sublabels = np.repeat(np.arange(len(labels) // PER_SUBCLUSTER), PER_SUBCLUSTER)
    centres = rng.normal(size=(CLUSTERS, DIM))
    offsets = 0.5 * rng.normal(size=(len(labels) // PER_SUBCLUSTER, DIM))
    points = centres[labels] + offsets[sublabels] + 0.1 * rng.normal(size=(len(labels), DIM))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), labels


@pytest.fixture(scope="module")
def model(clustered: tuple[np.ndarray, np.ndarray]) -> RQVAE:
    return train_rqvae(clustered[0], CONFIG, seed=3, device="cpu")


def test_training_lowers_the_loss_and_codes_follow_clusters(
    model: RQVAE, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    points, labels = clustered
    assert len(model.loss_history) == CONFIG.epochs
    assert model.loss_history[-1] < 0.5 * model.loss_history[0]
    first = model.codes(points)[:, 0]
    purity = [Counter(first[labels == cluster]).most_common(1)[0][1] / PER_CLUSTER for cluster in range(CLUSTERS)]
    assert np.mean(purity) > 0.9


def test_training_is_reproducible_with_the_seed(model: RQVAE, clustered: tuple[np.ndarray, np.ndarray]) -> None:
    again = train_rqvae(clustered[0], CONFIG, seed=3, device="cpu")
    np.testing.assert_array_equal(again.codes(clustered[0]), model.codes(clustered[0]))


def test_ids_are_unique_and_deterministic(model: RQVAE, clustered: tuple[np.ndarray, np.ndarray]) -> None:
    table = SemanticIdTable.build(model, clustered[0])
    ids = list(table.ids.values())
    assert len(table) == len(clustered[0]) and len(set(ids)) == len(ids)
    assert all(len(semantic_id) == 4 for semantic_id in ids)
    assert table.codes_per_level[:3] == [16, 16, 16] and table.codes_per_level[3] >= 16
    assert all(code < size for semantic_id in ids for code, size in zip(semantic_id, table.codes_per_level))
    again = SemanticIdTable.build(model, clustered[0])
    assert again.ids == table.ids and again.version == table.version
    assert table.item_of(table["17"]) == "17"


def test_items_with_the_same_codes_get_collision_codes_in_order(
    model: RQVAE, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    same = np.repeat(clustered[0][:1], 3, axis=0)
    table = SemanticIdTable.build(model, same, keys=["a", "b", "c"])
    prefix = tuple(model.codes(same[:1])[0].tolist())
    assert [table[key] for key in "abc"] == [(*prefix, 0), (*prefix, 1), (*prefix, 2)]
    assert table.stats()["prefix_collision_rate"] == pytest.approx(2 / 3)


def test_assign_new_is_stable_and_never_moves_existing_ids(
    model: RQVAE, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    points = clustered[0]
    table = SemanticIdTable.build(model, points[:500])
    before = dict(table.ids)

    arrivals = {f"new-{index}": points[index] for index in range(500, 600)}
    assigned = {key: table.assign_new(key, vector) for key, vector in arrivals.items()}
    assert {key: table.assign_new(key, vector) for key, vector in arrivals.items()} == assigned
    assert table.assign_new("new-500", points[0]) == assigned["new-500"], "an ID is kept even if the item changes"
    assert {key: table[key] for key in before} == before
    assert len(set(table.ids.values())) == len(table) == 600
    for key, vector in arrivals.items():
        assert assigned[key][:3] == tuple(model.codes(vector[None])[0].tolist())

    # A twin of an existing item shares its codes and takes the next collision code of that prefix.
    crowding = Counter(semantic_id[:3] for semantic_id in table.ids.values())
    original = min(before, key=lambda key: crowding[before[key][:3]])
    prefix = before[original][:3]
    assert table.assign_new("twin", points[int(original)]) == (*prefix, crowding[prefix])


def test_assign_new_refuses_a_full_prefix(model: RQVAE, clustered: tuple[np.ndarray, np.ndarray]) -> None:
    built = SemanticIdTable.build(model, clustered[0][:1], keys=["only"])
    table = SemanticIdTable(built.ids, [16, 16, 16, 1], built.version, model)
    with pytest.raises(ValueError, match="full"):
        table.assign_new("twin", clustered[0][0])


def test_save_and_load_round_trip(model: RQVAE, clustered: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    points = clustered[0]
    table = SemanticIdTable.build(model, points[:550])
    table.assign_new("late", points[560])
    table.save(tmp_path / "ids")

    loaded = SemanticIdTable.load(tmp_path / "ids")
    assert loaded.ids == table.ids
    assert (loaded.version, loaded.codes_per_level) == (table.version, table.codes_per_level)
    assert loaded.model is not None
    np.testing.assert_array_equal(loaded.model.codes(points), model.codes(points))
    assert loaded.assign_new("later", points[570]) == table.assign_new("later", points[570])

    config = json.loads((tmp_path / "ids" / "config.json").read_text())
    assert config["input_dim"] == DIM and config["seed"] == 3 and config["version"] == table.version
    assert config["rqvae"]["levels"] == 3 and config["rqvae"]["beta"] == 0.25
    assert config["stats"]["items"] == 551


def test_published_ids(tmp_path: Path) -> None:
    path = tmp_path / "Tiny.rqvae-index.json"
    path.write_text(
        json.dumps(
            {
                "0": ["<a_114>", "<b_32>", "<c_79>", "<d_183>"],
                "1": ["<a_114>", "<b_217>", "<c_99>", "<d_228>"],
                "2": ["<a_150>", "<b_249>", "<c_251>", "<d_196>"],
                "3": ["<a_114>", "<b_32>", "<c_79>", "<d_183>"],
            }
        )
    )
    published = load_published_ids(path)
    assert published == {0: (114, 32, 79, 183), 1: (114, 217, 99, 228), 2: (150, 249, 251, 196), 3: (114, 32, 79, 183)}

    table = SemanticIdTable.from_published(published)
    assert table["2"] == (150, 249, 251, 196) and table.codes_per_level == [256, 256, 256, 256]
    assert table.item_of((114, 32, 79, 183)) == "0", "a shared published ID stays with its earliest item"
    assert table["3"] == (114, 32, 79, 184), "a later holder gets the next free collision code of its prefix"
    assert table.stats()["shared_ids"] == 0 and table.stats()["reassigned"] == 1
    with pytest.raises(RuntimeError):
        table.assign_new("4", np.zeros(DIM, dtype=np.float32))

    table.save(tmp_path / "published")
    loaded = SemanticIdTable.load(tmp_path / "published")
    assert (loaded.ids, loaded.version, loaded.model) == (table.ids, table.version, None)

    path.write_text(json.dumps({"0": ["<b_1>", "<a_2>", "<c_3>", "<d_4>"]}))
    with pytest.raises(ValueError, match="level-0"):
        load_published_ids(path)


def test_restore_reapplies_assignments_and_refuses_clashes(
    model: RQVAE, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    points, _ = clustered
    original = SemanticIdTable.build(model, points[:100])
    late = original.assign_new("late", points[150])
    fresh = SemanticIdTable.build(model, points[:100])
    fresh.restore("late", late)
    assert fresh["late"] == late and fresh.item_of(late) == "late"
    assert fresh.assign_new("later", points[150]) != late  # the restored ID is taken for later items too
    with pytest.raises(ValueError, match="clashes"):
        fresh.restore("intruder", late)
    with pytest.raises(ValueError, match="clashes"):
        fresh.restore("late", (*late[:-1], late[-1] + 1))
