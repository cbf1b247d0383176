"""Recall@k / NDCG@k against hand-computed values: padding, ties, exclusion and streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.metrics import (
    MetricAccumulator,
    full_ranking_metrics,
    ranked_list_metrics,
    ranks_in_lists,
    ranks_in_scores,
    relative_gain,
)

INF = float("inf")
RANKED = torch.tensor([[3, 7, 1, -1, -1], [5, 2, 9, 4, 8], [-1, -1, -1, -1, -1], [0, 6, 6, 2, 1]])
TARGETS = torch.tensor([1, 8, 0, 6])


def ndcg(rank: int) -> float:
    return 1 / math.log2(rank + 2)


def test_ranks_in_lists_handle_padding_and_repeats() -> None:
    # target 0 does not match the -1 padding; a repeated item counts at its first position
    assert ranks_in_lists(RANKED, TARGETS).tolist() == [2, 4, INF, 1]


def test_ranked_list_metrics_by_hand() -> None:
    got = ranked_list_metrics(RANKED, TARGETS, ks=(1, 3, 5, 10))
    want = {
        "recall@1": 0.0,
        "ndcg@1": 0.0,
        "recall@3": 2 / 4,
        "ndcg@3": (ndcg(2) + ndcg(1)) / 4,
        "recall@5": 3 / 4,
        "ndcg@5": (ndcg(2) + ndcg(4) + ndcg(1)) / 4,
        "recall@10": 3 / 4,  # lists shorter than k: nothing beyond them is a hit
        "ndcg@10": (ndcg(2) + ndcg(4) + ndcg(1)) / 4,
    }
    assert got == pytest.approx(want)
    assert set(ranked_list_metrics(RANKED, TARGETS)) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}


def test_full_ranking_ties_count_against_the_target() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    targets = torch.tensor([2, 4])
    assert ranks_in_scores(scores, targets).tolist() == [2, 4]  # 0.9 above, 0.5 tied; all tied: last
    got = full_ranking_metrics(scores, targets, ks=(1, 3))
    assert got == pytest.approx({"recall@1": 0.0, "ndcg@1": 0.0, "recall@3": 0.5, "ndcg@3": ndcg(2) / 2})


def test_full_ranking_exclusion_mask() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5, 0.2], [0.3, 0.2, 0.1, 0.0, 0.4]])
    targets = torch.tensor([2, 0])
    assert ranks_in_scores(scores, targets, [[1], []]).tolist() == [1, 1]
    assert ranks_in_scores(scores, targets, [[1, 3], [4, 4]]).tolist() == [0, 0]  # duplicates are harmless
    assert ranks_in_scores(scores, targets, [[2], [0, 1]]).tolist() == [2, 1]  # the target is never masked
    assert scores[0, 1] == 0.9  # the caller's scores are not modified
    got = full_ranking_metrics(scores, targets, ks=(1,), exclude=[[1, 3], []])
    assert got == pytest.approx({"recall@1": 0.5, "ndcg@1": 0.5})
    with pytest.raises(ValueError, match="rows"):
        ranks_in_scores(scores, targets, [[1]])


def test_full_ranking_agrees_with_sorting_and_ranked_lists() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 200, generator=generator)  # continuous: no ties
    targets = torch.randint(0, 200, (64,), generator=generator)
    order = scores.argsort(dim=1, descending=True)
    assert ranks_in_scores(scores, targets).tolist() == (order == targets[:, None]).int().argmax(dim=1).tolist()
    assert full_ranking_metrics(scores, targets) == pytest.approx(ranked_list_metrics(order[:, :10], targets))


def test_accumulator_streams_batches_to_the_same_means() -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(50, 30, generator=generator)
    targets = torch.randint(0, 30, (50,), generator=generator)
    exclude = [[(i * 7) % 30] for i in range(50)]
    accumulator = MetricAccumulator()
    for start in range(0, 50, 16):
        accumulator.add_scores(scores[start : start + 16], targets[start : start + 16], exclude[start : start + 16])
    assert accumulator.count == 50
    assert accumulator.ranks().tolist() == ranks_in_scores(scores, targets, exclude).tolist()  # in the order added
    assert accumulator.result() == pytest.approx(full_ranking_metrics(scores, targets, exclude=exclude))

    lists = MetricAccumulator(ks=(3,))
    lists.add_ranked(RANKED[:2], TARGETS[:2])
    lists.add_ranked(RANKED[2:], TARGETS[2:])
    assert lists.result() == pytest.approx(ranked_list_metrics(RANKED, TARGETS, ks=(3,)))


def test_relative_gain_has_an_interval_that_excludes_zero_only_for_a_real_gain() -> None:
    rng = np.random.default_rng(0)
    baseline = np.where(rng.random(4000) < 0.05, rng.random(4000), 0.0)  # NDCG-like: mostly misses
    better = baseline.copy()
    better[rng.random(4000) < 0.03] += 0.5
    noisy = np.where(rng.random(4000) < 0.05, rng.random(4000), 0.0)  # same distribution, other users hit
    gain = relative_gain(better, baseline)
    assert gain["relative"] == pytest.approx(better.mean() / baseline.mean() - 1) and gain["ci95"][0] > 0.1
    low, high = relative_gain(noisy, baseline)["ci95"]
    assert low < 0 < high
    assert relative_gain(baseline, baseline) == {"relative": 0.0, "ci95": [0.0, 0.0]}
    one_hit = np.zeros(4000)
    one_hit[0] = 1.0
    assert relative_gain(better, one_hit)["ci95"] is None  # most resamples miss the baseline's only hit
    with pytest.raises(ValueError, match="paired"):
        relative_gain(better[:10], baseline)


def test_accumulator_rejects_empty_and_bad_k() -> None:
    with pytest.raises(ValueError, match="no examples"):
        MetricAccumulator().result()
    with pytest.raises(ValueError, match="positive"):
        ranked_list_metrics(RANKED, TARGETS, ks=(0,))
