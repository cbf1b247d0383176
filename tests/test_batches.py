"""Length-cut training batches: every row once, about the asked targets each, little padding, random order."""

from __future__ import annotations

import numpy as np

from training.batches import length_batches


def test_every_row_once_in_batches_of_about_the_asked_targets() -> None:
    rng = np.random.default_rng(0)
    lengths, targets = rng.integers(2, 80, 5000), rng.integers(1, 20, 5000)
    batches = length_batches(lengths, targets, 256, np.random.default_rng(1))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(5000))
    sizes = np.array([targets[batch].sum() for batch in batches])
    assert (sizes[sizes < 200] > 0).all() and (sizes <= 256 + 19).all()  # a row's targets are never split
    assert (sizes >= 200).mean() > 0.9
    # within a batch the rows are of about one length: far less padding than random batches of the same rows
    padded = sum(int(lengths[batch].max()) * len(batch) for batch in batches)
    shuffled = np.random.default_rng(2).permutation(5000)
    random_batches = np.array_split(shuffled, len(batches))
    random_padded = sum(int(lengths[batch].max()) * len(batch) for batch in random_batches)
    assert padded - lengths.sum() < 0.1 * (random_padded - lengths.sum())


def test_prefix_examples_make_full_batches_in_a_new_order_each_epoch() -> None:
    lengths, targets = np.arange(1000) % 37, np.ones(1000, dtype=np.int64)
    rng = np.random.default_rng(3)
    first, second = length_batches(lengths, targets, 64, rng), length_batches(lengths, targets, 64, rng)
    assert sum(len(batch) == 64 for batch in first) == 1000 // 64
    assert [batch.tolist() for batch in first] != [batch.tolist() for batch in second]
