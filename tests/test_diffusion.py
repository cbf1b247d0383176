"""The interest diffusion model: LLaDA training learns a planted pattern; the sampler's answers are always valid."""

from __future__ import annotations

import math
import random

import pytest
import torch

from models.diffusion import DiffusionConfig, InterestDiffusion, training_windows
from models.tokenizer import SemanticIdTokenizer
from training.datasets import SequenceData
from training.interest_training import InterestTrainConfig, evaluate_interests, future_split, train_interest_model
from training.metrics import novelty, semantic_consistency, set_metrics

ITEMS = 48
STRIDE = 5  # the planted pattern: a user's next item is always the previous one plus STRIDE (mod ITEMS)


def tokenizer() -> SemanticIdTokenizer:
    return SemanticIdTokenizer({i: (i // 16, (i // 4) % 4, i % 4) for i in range(ITEMS)}, [3, 4, 4])


def planted(users: int, seed: int = 0) -> SequenceData:
    rng = random.Random(seed)
    sequences = {}
    for user in range(users):
        start, length = rng.randrange(ITEMS), rng.randint(7, 12)
        sequences[f"u{user}"] = [(start + STRIDE * k) % ITEMS for k in range(length)]
    return SequenceData([str(i) for i in range(ITEMS)], sequences, None, "planted")


CONFIG = InterestTrainConfig(
    model=DiffusionConfig(d_model=64, num_heads=4, d_ff=128, num_layers=2, max_history=5, horizon=3, sampling_steps=3),
    epochs=20,  # a budget patience stops well before
    batch_size=128,
    learning_rate=3e-3,
    max_minutes=None,
)


@pytest.fixture(scope="module")
def trained() -> tuple[InterestDiffusion, dict[str, object]]:
    return train_interest_model(tokenizer(), future_split(planted(300)), CONFIG, "cpu")


def test_training_reduces_the_loss_and_sampling_recovers_the_planted_pattern(trained) -> None:
    model, report = trained
    losses = [entry["loss"] for entry in report["history"]]  # type: ignore[index]
    assert losses[-1] < losses[0] / 3
    held_out = future_split(planted(50, seed=1))
    metrics = evaluate_interests(model, held_out)
    assert metrics["recall@3"] > 0.9  # both held-out items are the next two steps of the pattern
    inferred = model.infer([[0, 5, 10]]).items[0].tolist()
    assert set(inferred[:2]) <= {15, 20, 25} and 15 in inferred


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_sampler_returns_only_distinct_valid_items_outside_the_history(steps: int) -> None:
    # sparse catalog: item indices 0..59 with only even ones known, so "valid" is a real constraint
    codes = {i: (i // 20, (i // 4) % 5, i % 4) for i in range(0, 60, 2)}
    model = InterestDiffusion(SemanticIdTokenizer(codes, [3, 5, 4]), CONFIG.model, "cpu")  # untrained: arbitrary logits
    generator = random.Random(3)
    histories = [[generator.choice(range(60)) for _ in range(generator.randint(0, 12))] for _ in range(40)]
    histories.append(list(range(0, 54, 2)))  # leaves exactly 3 allowed items
    result = model.infer(histories, steps)
    for items, confidences, history in zip(result.items.tolist(), result.confidences.tolist(), histories, strict=True):
        assert len(set(items)) == len(items)
        assert all(item in codes and item not in history for item in items)
        assert all(0.0 < c <= 1.0 for c in confidences)
    assert sorted(result.items[-1].tolist()) == [54, 56, 58]


def sample_by_definition(model: InterestDiffusion, history: list[int], steps: int) -> tuple[list[int], list[float]]:
    """One user, as the sampler is defined: every commit takes a fresh softmax over the items still allowed."""
    c = model.config
    tokens = model.prompt([history])
    allowed = torch.tensor([known and item not in history for item, known in enumerate(model._known)])
    open_slots, commits, committed = list(range(c.horizon)), [], 0
    for step in range(1, steps + 1):
        target = math.ceil(c.horizon * step / steps)
        log_probs = model(tokens)
        scores = sum(level[0][:, model.item_codes[:, index].clamp(min=0)] for index, level in enumerate(log_probs))
        for _ in range(target - committed):
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)  # [N, I]
            slot = max(open_slots, key=lambda s: probs[s].max().item())
            open_slots.remove(slot)
            prob, item = probs[slot].max(0)
            if prob > 0:
                commits.append((prob.item(), item.item()))
                allowed[item] = False
                tokens[0, c.max_history + slot] = model.item_tokens[item]
        committed = target
    commits.sort(key=lambda commit: -commit[0])
    padding = c.horizon - len(commits)
    return [item for _, item in commits] + [-1] * padding, [prob for prob, _ in commits] + [0.0] * padding


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_the_batched_sampler_commits_what_the_definition_commits(trained, steps: int) -> None:
    trained_model, _ = trained
    untrained = InterestDiffusion(tokenizer(), CONFIG.model.model_copy(update={"seed": 4}), "cpu")  # flat distributions
    generator = random.Random(steps)
    histories = [[generator.randrange(ITEMS) for _ in range(generator.randint(0, 14))] for _ in range(60)]
    histories += [[0, 5, 10], list(range(ITEMS - 2))]  # a confident user; one with fewer items left than slots
    for model in (trained_model, untrained.eval()):
        result = model.infer(histories, steps)
        with torch.inference_mode():
            expected = [sample_by_definition(model, history, steps) for history in histories]
        assert result.items.tolist() == [items for items, _ in expected]
        torch.testing.assert_close(
            result.confidences, torch.tensor([probs for _, probs in expected]), rtol=0, atol=1e-5
        )


def test_sampler_marks_slots_it_cannot_fill() -> None:
    model = InterestDiffusion(tokenizer(), CONFIG.model, "cpu")
    result = model.infer([list(range(ITEMS - 1))])
    assert result.items[0].tolist() == [ITEMS - 1, -1, -1]
    assert result.confidences[0, 1:].tolist() == [0.0, 0.0]


def test_training_windows_never_include_the_held_out_future() -> None:
    rng = random.Random(5)
    sequences = {
        f"u{u}": [u * 30 + i for i in rng.sample(range(30), rng.randint(2, 15))] for u in range(30)
    }  # disjoint
    split = future_split(SequenceData([str(i) for i in range(1000)], sequences, None, "random"))
    assert len(split.users) == sum(len(s) > 2 for s in sequences.values())
    for user, history, future in zip(split.users, split.histories, split.futures, strict=True):
        assert history + future == sequences[user] and len(future) == 2
    held_out = {item for future in split.futures for item in future}
    histories, futures = training_windows(split.histories, 5, 3)
    assert histories and all(len(h) <= 5 and 1 <= len(f) <= 3 for h, f in zip(histories, futures, strict=True))
    assert not held_out & {item for h, f in zip(histories, futures, strict=True) for item in h + f}


def test_save_and_load_give_the_same_inference(trained, tmp_path) -> None:
    model, _ = trained
    model.save(tmp_path / "interests")
    loaded = InterestDiffusion.load(tmp_path / "interests", "cpu")
    histories = [[1, 6, 11], [30], []]
    assert torch.equal(model.infer(histories).items, loaded.infer(histories).items)


def test_set_metrics_consistency_and_novelty() -> None:
    metrics = set_metrics([[3, 1, -1], [7, 8, 9]], [[1, 2], [5]], k=3)
    assert metrics["hit_rate@3"] == 0.5 and metrics["recall@3"] == 0.25
    assert metrics["ndcg@3"] == pytest.approx((1 / 1.5849625) / (1 + 1 / 1.5849625) / 2)
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert semantic_consistency([[2, 1]], [[0]], embeddings) == pytest.approx(0.5)
    categories = {0: ["a"], 1: ["b"], 2: ["a", "c"]}
    assert novelty([[1, 2, 5]], [[0]], categories) == pytest.approx(0.5)


def test_training_stops_once_validation_stops_improving_and_says_so(trained) -> None:
    _, report = trained
    scores = [entry["valid_ndcg@3"] for entry in report["history"]]  # type: ignore[index]
    assert len(scores) == report["epochs_run"] and report["best_valid_ndcg@3"] == max(scores)
    assert report["best_epoch"] == 1 + scores.index(max(scores))
    # The planted pattern is learnt long before the epoch budget: patience, not the budget, stops it.
    assert report["converged"] and report["epochs_run"] == report["best_epoch"] + CONFIG.patience < CONFIG.epochs  # type: ignore[operator]
