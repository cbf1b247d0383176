"""Ranking metrics: Recall@k and NDCG@k with one relevant item per example, vectorised over the batch, and the
set-valued metrics of inferred interests (several held-out items per user, consistency, novelty).

The single-target entry points reduce to the target's 0-based rank (``inf`` when it is not ranked at all), so ranked
lists from generative retrieval and full score matrices are measured identically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

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


def metric_sums(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, torch.Tensor]:
    """Per-batch sums of ``recall@k`` (hit in the top k) and ``ndcg@k`` (``1 / log2(rank + 2)`` in the top k)."""
    sums: dict[str, torch.Tensor] = {}
    gain = 1.0 / torch.log2(ranks + 2.0)  # inf ranks give 0
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        inside = ranks < k
        sums[f"recall@{k}"] = inside.sum(dtype=torch.float64)
        sums[f"ndcg@{k}"] = torch.where(inside, gain, torch.zeros_like(gain)).sum()
    return sums


class MetricAccumulator:
    """Sums metrics over streamed batches; ``result()`` gives the means over every example added."""

    def __init__(self, ks: Sequence[int] = DEFAULT_KS) -> None:
        self.ks = tuple(ks)
        self.count = 0
        self._sums: dict[str, torch.Tensor] = {}

    def add_ranks(self, ranks: torch.Tensor) -> None:
        # Sums stay on the device until result(): no host sync per batch.
        for name, value in metric_sums(ranks, self.ks).items():
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self.count += int(ranks.numel())

    def add_ranked(self, ranked: torch.Tensor, targets: torch.Tensor) -> None:
        self.add_ranks(ranks_in_lists(ranked, targets))

    def add_scores(
        self, scores: torch.Tensor, targets: torch.Tensor, exclude: Sequence[Sequence[int]] | None = None
    ) -> None:
        self.add_ranks(ranks_in_scores(scores, targets, exclude))

    def result(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no examples added")
        return {name: float(total.item()) / self.count for name, total in self._sums.items()}


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
