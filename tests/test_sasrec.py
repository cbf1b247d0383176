"""SASRec baseline: learns a planted sequential pattern, evaluated by full ranking on the leave-one-out split."""

from __future__ import annotations

import random

import pytest
import torch

from training.datasets import SequenceData, leave_one_out
from training.sasrec import SASRecConfig, left_pad, train_sasrec

ITEMS = 40


def cyclic_data(users: int, seed: int) -> SequenceData:
    """Each user walks the cycle 0 -> 1 -> ... -> 39 -> 0 from a random start: the next item is always determined."""
    rng = random.Random(seed)
    sequences = {}
    for user in range(users):
        start, length = rng.randrange(ITEMS), rng.randint(5, 12)
        sequences[str(user)] = [(start + step) % ITEMS for step in range(length)]
    return SequenceData([str(i) for i in range(ITEMS)], sequences, None, "cycle")


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_sasrec_learns_a_planted_pattern(loss: str) -> None:
    torch.set_num_threads(1)
    data = cyclic_data(300, seed=1)
    config = SASRecConfig(
        hidden=32, dropout=0.1, max_length=12, loss=loss, epochs=30, eval_every=10, batch_size=64, learning_rate=5e-3
    )
    model, result = train_sasrec(data, leave_one_out(data, config.max_length), config)
    assert result["test"]["recall@10"] > 0.9  # random ranking of 40 items gives 0.25
    assert result["history"][0]["epoch"] == 10
    scores = model.scores([[3, 4, 5]])
    assert scores.shape == (1, ITEMS) and 6 in scores.topk(3).indices[0].tolist()


def test_left_pad_keeps_the_most_recent_items_shifted_by_one() -> None:
    padded = left_pad([[5, 6, 7], []], 2, torch.device("cpu"))
    assert padded.tolist() == [[7, 8], [0, 0]]
