"""Recall@k and NDCG@k with one relevant item per example, vectorised over the batch.

Both entry points reduce to the target's 0-based rank (``inf`` when it is not ranked at all), so ranked
lists from generative retrieval and full score matrices are measured identically.
"""

from __future__ import annotations

from collections.abc import Sequence

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
