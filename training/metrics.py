"""Ranking metrics: Recall@k and NDCG@k with one relevant item per example, vectorised over the batch, and the
set-valued metrics of inferred interests (several held-out items per user, consistency, novelty).

The single-target entry points reduce to the target's 0-based rank (``inf`` when it is not ranked at all), so ranked
lists from generative retrieval and full score matrices are measured identically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.stats import bootstrap

DEFAULT_KS = (5, 10)


def ranks_in_lists(ranked: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based position of each target in its ranked list ``[B, K]`` (first occurrence); ``inf`` if absent.

    Padding (any value that is not a valid index, e.g. -1) never matches a target.
    """
    hits = ranked == targets.to(ranked.device).unsqueeze(1)
    first = hits.int().argmax(dim=1).to(torch.float64)
    return torch.where(hits.any(dim=1), first, torch.full_like(first, float("inf")))


def ranks_in_scores(
    scores: torch.Tensor, targets: torch.Tensor, exclude: Sequence[Sequence[int]] | None = None
) -> torch.Tensor:
    """Rank of each target among all ``N`` items of ``scores [B, N]``.

    Rank = number of other items scoring at least as high as the target: ties count against the target,
    so a model that scores everything equally gets the worst rank, not the best. Items in ``exclude[b]``
    (e.g. the history) are set to ``-inf`` first; the target itself is never excluded.
    """
    targets = targets.to(scores.device).long()
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)
    if exclude is not None:
        if len(exclude) != scores.shape[0]:
            raise ValueError(f"exclude has {len(exclude)} rows, scores has {scores.shape[0]}")
        lengths = torch.tensor([len(items) for items in exclude], device=scores.device)
        columns = torch.tensor([i for items in exclude for i in items], dtype=torch.long, device=scores.device)
        scores = scores.clone()
        scores[torch.repeat_interleave(rows, lengths), columns] = float("-inf")
    at_least = scores >= target_scores
    at_least[rows, targets] = False
    return at_least.sum(dim=1).to(torch.float64)


def metric_values(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, torch.Tensor]:
    """Per example, ``recall@k`` (hit in the top k) and ``ndcg@k`` (``1 / log2(rank + 2)`` in the top k)."""
    values: dict[str, torch.Tensor] = {}
    gain = 1.0 / torch.log2(ranks + 2.0)  # inf ranks give 0
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        inside = ranks < k
        values[f"recall@{k}"] = inside.to(torch.float64)
        values[f"ndcg@{k}"] = torch.where(inside, gain, torch.zeros_like(gain))
    return values


class MetricAccumulator:
    """Collects the target ranks of streamed batches; ``result()`` gives the means over every example added."""

    def __init__(self, ks: Sequence[int] = DEFAULT_KS) -> None:
        self.ks = tuple(ks)
        self._ranks: list[torch.Tensor] = []

    @property
    def count(self) -> int:
        return sum(int(ranks.numel()) for ranks in self._ranks)

    def add_ranks(self, ranks: torch.Tensor) -> None:
        self._ranks.append(ranks)  # left on the device until the end: no host sync per batch

    def add_ranked(self, ranked: torch.Tensor, targets: torch.Tensor) -> None:
        self.add_ranks(ranks_in_lists(ranked, targets))

    def add_scores(
        self, scores: torch.Tensor, targets: torch.Tensor, exclude: Sequence[Sequence[int]] | None = None
    ) -> None:
        self.add_ranks(ranks_in_scores(scores, targets, exclude))

    def ranks(self) -> np.ndarray:
        """Every example's 0-based target rank in the order added (``inf``: not ranked)."""
        if not self._ranks:
            raise ValueError("no examples added")
        return torch.cat([ranks.cpu() for ranks in self._ranks]).numpy()

    def result(self) -> dict[str, float]:
        return {
            name: float(values.mean())
            for name, values in metric_values(torch.from_numpy(self.ranks()), self.ks).items()
        }


def relative_gain(
    candidate: np.ndarray, baseline: np.ndarray, resamples: int = 2000, seed: int = 0
) -> dict[str, object]:
    """How much higher the mean of ``candidate`` is than that of ``baseline``, relatively, with a 95% interval from a
    paired bootstrap over examples: the two hold one metric value per example of the same test set, so each
    resample draws the same examples for both and the interval reflects which users happened to be tested.
    The interval is None where it is undefined (some resample of the baseline is all zeros)."""
    if candidate.shape != baseline.shape or candidate.ndim != 1:
        raise ValueError(f"paired values of one test set expected, got shapes {candidate.shape} and {baseline.shape}")

    def gain(ours: np.ndarray, theirs: np.ndarray, axis: int = -1) -> np.ndarray:
        return ours.mean(axis) / theirs.mean(axis) - 1.0

    with np.errstate(divide="ignore", invalid="ignore"):  # the undefined case is reported as None below
        interval = bootstrap(
            (candidate, baseline),
            gain,
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            batch=200,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
    bounds = [float(interval.low), float(interval.high)]
    # None where some resample's baseline has no hit at all (a tiny test set): the ratio has no interval there.
    return {"relative": float(gain(candidate, baseline)), "ci95": bounds if np.isfinite(bounds).all() else None}


def mean_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
    """A 95% bootstrap interval of the mean of one value per test example."""
    interval = bootstrap(
        (values,),
        np.mean,
        vectorized=True,
        n_resamples=resamples,
        batch=200,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return [float(interval.low), float(interval.high)]


def ranked_list_metrics(
    ranked: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean recall@k and ndcg@k of ranked lists ``[B, K]`` of item indices (``-1`` pads short lists)."""
    accumulator = MetricAccumulator(ks)
    accumulator.add_ranked(ranked, targets)
    return accumulator.result()


def full_ranking_metrics(
    scores: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    exclude: Sequence[Sequence[int]] | None = None,
) -> dict[str, float]:
    """Mean recall@k and ndcg@k ranking each target against all items (see ``ranks_in_scores`` for ties)."""
    accumulator = MetricAccumulator(ks)
    accumulator.add_scores(scores, targets, exclude)
    return accumulator.result()


def set_metrics(ranked: Sequence[Sequence[int]], relevant: Sequence[Sequence[int]], k: int) -> dict[str, float]:
    """Means over users of hit rate, recall and NDCG at ``k`` when each user has a set of relevant items.

    Hit rate: any relevant item in the top ``k``. Recall: the share of the user's relevant items found.
    NDCG: binary gains, normalised by the best ordering of ``min(k, |relevant|)`` hits. Users without relevant
    items are skipped; ``-1`` entries pad short lists.
    """
    hits = recall = ndcg = 0.0
    users = 0
    for items, truth in zip(ranked, relevant, strict=True):
        wanted = set(truth)
        if not wanted:
            continue
        users += 1
        gains = [1.0 if item in wanted else 0.0 for item in list(items)[:k]]
        found = sum(gains)
        hits += found > 0
        recall += found / len(wanted)
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(wanted))))
        ndcg += sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains)) / ideal
    if users == 0:
        raise ValueError("no user has relevant items")
    return {f"hit_rate@{k}": hits / users, f"recall@{k}": recall / users, f"ndcg@{k}": ndcg / users}


def semantic_consistency(
    ranked: Sequence[Sequence[int]], histories: Sequence[Sequence[int]], embeddings: torch.Tensor
) -> float:
    """Mean cosine similarity between each recommended item and the centroid of its user's history.

    ``embeddings`` are item vectors [I, D]; the centroid is of the unit vectors, then re-normalised.
    """
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    total, count = 0.0, 0
    for items, history in zip(ranked, histories, strict=True):
        picked = [item for item in items if item >= 0]
        if not picked or not history:
            continue
        centroid = torch.nn.functional.normalize(unit[list(history)].mean(0), dim=0)
        total += float((unit[picked] @ centroid).sum())
        count += len(picked)
    return total / max(count, 1)


def novelty(
    ranked: Sequence[Sequence[int]], histories: Sequence[Sequence[int]], categories: Mapping[int, Sequence[str]]
) -> float:
    """Share of recommended items none of whose categories occur in the user's history (items without categories skipped)."""
    novel, count = 0, 0
    for items, history in zip(ranked, histories, strict=True):
        seen = {name for item in history for name in categories.get(item, ())}
        for item in items:
            names = categories.get(item)
            if item < 0 or not names:
                continue
            count += 1
            novel += not seen.intersection(names)
    return novel / max(count, 1)
