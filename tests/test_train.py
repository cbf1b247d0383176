"""The training pipeline end to end on a small generated dataset: IDs from text, ranker, metrics, artefacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytest import approx

from infra.synthetic import generate
from models.diffusion import InterestDiffusion
from models.semantic_ids import SemanticIdTable
from models.text_encoder import DEFAULT_MODEL, TextEncoder
from models.tiger import TigerRanker
from models.tokenizer import SemanticIdTokenizer
from reasoning.knowledge import enriched_text
from reasoning.patterns import REASONING_DIR, PatternLibrary
from reasoning.user_reasoner import STRUCTURES, WINDOWS
from tests.support import TINY_TRAINING
from training.datasets import Examples, load_dataset
from training.distillation import item_knowledge
from training.errors import ConfigError, DatasetError
from training.metrics import metric_values
from training.train import TEST_RANKS_FILE, TrainConfig, config_from, cooldown_factor, evaluate, train


def write_lcrec(folder: Path, n_items: int, n_users: int, n_events: int) -> None:
    """A generated world in the LC-Rec JSON format (as in ../shared/data/amazon-scientific)."""
    world = generate(n_items, n_users, n_events, seed=21)
    index = {item.item_id: i for i, item in enumerate(world.items)}
    sequences: dict[str, list[int]] = {}
    for interaction in world.interactions:
        sequences.setdefault(str(int(interaction.user_id.split("-")[1])), []).append(index[interaction.item_id])
    items = {
        str(i): {
            "title": it.title,
            "description": it.description,
            "brand": it.brand or "",
            "categories": ",".join(it.categories),
        }
        for i, it in enumerate(world.items)
    }
    folder.mkdir()
    (folder / "Tiny.inter.json").write_text(json.dumps(sequences))
    (folder / "Tiny.item.json").write_text(json.dumps(items))


def test_training_writes_a_loadable_versioned_model(tmp_path: Path) -> None:
    write_lcrec(tmp_path / "tiny", n_items=120, n_users=60, n_events=900)
    config = TrainConfig.model_validate({"dataset": tmp_path / "tiny", **TINY_TRAINING})
    version = train(config, tmp_path / "store", tmp_path / "state")
    assert version.parent == tmp_path / "store" / "Tiny"
    metrics = json.loads((version / "metrics.json").read_text())
    assert set(metrics["test"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert metrics["users"] == 60 and metrics["items"] == 120
    ranks = np.load(version / TEST_RANKS_FILE)  # one per test user, and they give the reported figures
    assert ranks.shape == (60,) and metric_values(torch.from_numpy(ranks))["ndcg@10"].mean().item() == approx(
        metrics["test"]["ndcg@10"]
    )
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    ids = SemanticIdTable.load(version / "ids")
    assert len(ids) == 120 and len(set(ids.ids.values())) == 120  # every item has its own ID
    ranker = TigerRanker.load(version / "ranker")
    items, _ = ranker.recommend(["0"], [[0, 1, 2]], k=5, beam_size=10)
    assert all(0 <= item < 120 for item in items[0].tolist())
    assert TrainConfig.model_validate_json((version / "config.json").read_text()) == config
    interests = InterestDiffusion.load(version / "interests")
    assert metrics["interests"]["test"].keys() == {"hit_rate@4", "recall@4", "ndcg@4"}
    assert all(0 <= item < 120 for item in interests.infer([[0, 1, 2]]).items[0].tolist())


def test_a_time_budget_stops_training_after_a_validated_epoch(tmp_path: Path) -> None:
    write_lcrec(tmp_path / "tiny", n_items=60, n_users=30, n_events=300)
    fields = {**TINY_TRAINING, "epochs": 6, "eval_every": 3, "max_minutes": 0, "interest_model": False}
    version = train(
        TrainConfig.model_validate({"dataset": tmp_path / "tiny", **fields}), tmp_path / "store", tmp_path / "state"
    )
    metrics = json.loads((version / "metrics.json").read_text())
    assert [entry["epoch"] for entry in metrics["history"]] == [1] and metrics["stopped_by_time"]
    assert "valid" in metrics["history"][0], "the last epoch before the stop is validated, so its weights are kept"
    assert (version / "ranker").exists()


def test_training_stops_when_validation_stops_improving_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    write_lcrec(tmp_path / "tiny", n_items=60, n_users=30, n_events=300)
    fields = {**TINY_TRAINING, "epochs": 40, "eval_every": 1, "patience": 2, "interest_model": False}
    version = train(
        TrainConfig.model_validate({"dataset": tmp_path / "tiny", **fields}), tmp_path / "store", tmp_path / "state"
    )
    metrics = json.loads((version / "metrics.json").read_text())
    scores = [entry["valid"]["ndcg@10"] for entry in metrics["history"]]
    assert metrics["best_valid_ndcg@10"] == max(scores) and metrics["best_epoch"] == 1 + scores.index(max(scores))
    assert metrics["converged"] and metrics["epochs_run"] == len(scores) == metrics["best_epoch"] + 2 < 40
    assert metrics["wall_s"] > 0 and not metrics["stopped_by_time"]


def test_semantic_ids_from_knowledge_enriched_text(tmp_path: Path) -> None:
    write_lcrec(tmp_path / "tiny", n_items=60, n_users=30, n_events=300)
    data = load_dataset(tmp_path / "tiny")
    encoder = TextEncoder(DEFAULT_MODEL, cache_dir=tmp_path / "embeddings")
    chains = item_knowledge(data, encoder)
    assert sorted(chains) == list(range(60))  # the dataset has no knowledge topic: the embedded reasoner fills it
    text = enriched_text(data.item_text[0], chains[0])  # type: ignore[index]
    assert text.startswith(data.item_text[0][:300]) and "usage; scenarios:" in text and "needs;" in text  # type: ignore[index]
    config = TrainConfig.model_validate(
        {"dataset": tmp_path / "tiny", **TINY_TRAINING, "item_text": "knowledge", "interest_model": False}
    )
    by_knowledge = SemanticIdTable.load(train(config, tmp_path / "store", tmp_path / "state") / "ids")
    by_catalog = SemanticIdTable.load(
        train(config.model_copy(update={"item_text": "catalog"}), tmp_path / "store", tmp_path / "state") / "ids"
    )
    assert len(by_knowledge) == 60 and dict(by_knowledge.ids) != dict(by_catalog.ids)


def test_the_full_distilled_model_trains_with_mined_patterns_and_cross_fitted_interests(tmp_path: Path) -> None:
    write_lcrec(tmp_path / "tiny", n_items=60, n_users=40, n_events=500)
    side = {"knowledge": True, "reasoning": "structured", "beyond_log": True, "max_beyond_log": 4}
    fields = {**TINY_TRAINING, "ranker": {**TINY_TRAINING["ranker"], "side": side}, "item_text": "knowledge"}  # type: ignore[dict-item]
    version = train(
        TrainConfig.model_validate({"dataset": tmp_path / "tiny", **fields}), tmp_path / "store", tmp_path / "state"
    )
    library = PatternLibrary.load(version / REASONING_DIR)
    assert len(library.candidates) == len(STRUCTURES) * len(WINDOWS) and library.best == library.candidates[0]
    assert all(pattern.structure[-1] == "target" for pattern in library.candidates)
    metrics = json.loads((version / "metrics.json").read_text())
    assert metrics["side_inputs"]["pattern"]["structure"] == list(library.best.structure)
    beyond_log = metrics["side_inputs"]["beyond_log"]
    assert [fold["epochs_run"] for fold in beyond_log["folds"]] == [TINY_TRAINING["interests"]["epochs"]] * 2  # type: ignore[index]
    assert all(not fold["converged"] and 1 <= fold["best_epoch"] <= fold["epochs_run"] for fold in beyond_log["folds"])
    assert set(beyond_log["target_among_items"]) == {"train", "valid", "test"}
    assert all(0.0 <= share <= 1.0 for share in beyond_log["target_among_items"].values())
    ranker = TigerRanker.load(version / "ranker")
    assert ranker.config.side.reasoning == "structured" and ranker.item_vectors.shape == (60, 384)
    assert ranker.item_vectors.abs().sum(1).gt(0).all()  # every item has a knowledge vector


def test_the_warm_up_raises_the_learning_rate_from_zero(tmp_path: Path) -> None:
    write_lcrec(tmp_path / "tiny", n_items=60, n_users=30, n_events=300)
    fields = {**TINY_TRAINING, "epochs": 1, "lr_schedule": "inverse_sqrt", "interest_model": False}

    def parameters_moved(warmup_steps: int) -> bool:
        config = TrainConfig.model_validate({"dataset": tmp_path / "tiny", **fields, "warmup_steps": warmup_steps})
        trained = TigerRanker.load(train(config, tmp_path / "store", tmp_path / "state") / "ranker")
        initial = TigerRanker(trained.tokenizer, trained.config)  # the same seeded initialisation
        return any(
            not torch.allclose(a, b, atol=1e-6)
            for a, b in zip(trained.model.parameters(), initial.model.parameters(), strict=True)
        )

    assert not parameters_moved(10**9), "an epoch deep in a long warm-up barely moves the weights"
    assert parameters_moved(0)


def test_the_cooldown_holds_the_peak_then_falls_to_zero_at_the_budget() -> None:
    rates = [cooldown_factor(step, 100, left, 0.2) for step, left in [(0, 1.0), (50, 1.0), (500, 0.5), (500, 0.1)]]
    assert rates == approx([0.0, 0.5, 1.0, 0.5])
    assert cooldown_factor(500, 100, 0.0, 0.2) == cooldown_factor(500, 100, -0.3, 0.2) == 0.0, "past the budget: zero"
    with pytest.raises(ValueError, match="set max_minutes"):
        TrainConfig.model_validate({"dataset": "x", "lr_schedule": "cooldown"})


def test_a_bad_config_or_dataset_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^bad\.json: interests: Input should be a valid dictionary.*\(got null\)$"):
        config_from({"dataset": "x", "interests": None}, "bad.json")
    write_lcrec(tmp_path / "tiny", n_items=20, n_users=10, n_events=60)
    (tmp_path / "bad.json").write_text(json.dumps({"interests": None, "epochs": "many"}))
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "train", str(tmp_path / "tiny"), "--config", str(tmp_path / "bad.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in out, out
    assert "interests: Input should be a valid dictionary" in out and "epochs: Input should be a valid integer" in out
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(tmp_path / "missing")


def test_evaluation_sorts_by_history_length_yet_returns_each_examples_rank_in_order() -> None:
    from tests.test_tiger import LEVELS, SMALL, random_codes

    tokenizer = SemanticIdTokenizer(random_codes(40, LEVELS, seed=1), LEVELS, num_user_buckets=10)
    ranker = TigerRanker(tokenizer, SMALL, device="cpu")
    rng = np.random.default_rng(4)
    histories = [rng.integers(0, 40, rng.integers(1, 12)).tolist() for _ in range(30)]
    users = [f"u{n}" for n in range(30)]
    ranked, _ = ranker.recommend(users, histories, k=10, beam_size=10)
    targets = [int(ranked[n, n % 10]) for n in range(30)]  # example n's target is its own n % 10-th item
    examples = Examples(users, histories, targets)
    config = TrainConfig(dataset=Path("unused"), eval_batch_size=7, beam_size=10)
    one_by_one = [n % 10 for n in range(30)]
    assert evaluate(ranker, examples, config).ranks().tolist() == one_by_one
    # a limit takes a fixed random sample, the same at every call, rather than the first examples
    sample = evaluate(ranker, examples, config, limit=10).ranks()
    assert sample.tolist() == evaluate(ranker, examples, config, limit=10).ranks().tolist() and len(sample) == 10
    assert sample.tolist() != one_by_one[:10]
