"""An epoch's training batches: random, yet each of rows of about one length, so little of a batch is padding."""

from __future__ import annotations

import numpy as np


def length_batches(
    lengths: np.ndarray, targets: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50
) -> list[np.ndarray]:
    """Row indices of each batch of an epoch, in random order.

    Rows are shuffled, cut into pools of about ``pool`` batches, sorted by ``lengths`` within a pool and cut into
    batches of about ``batch_size`` targets (``targets``: a row's targets, 1 for a prefix example). Sorting only
    within a pool keeps which rows meet in a batch random; the batches' order is shuffled too.
    """
    order = rng.permutation(len(lengths))
    before = np.cumsum(targets[order]) - targets[order]  # targets ahead of each row in the shuffled order
    batches: list[np.ndarray] = []
    for rows in np.split(order, np.flatnonzero(np.diff(before // (batch_size * pool))) + 1):
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        ahead = np.cumsum(targets[rows]) - targets[rows]
        batches += np.split(rows, np.flatnonzero(np.diff(ahead // batch_size)) + 1)
    rng.shuffle(batches)
    return batches
