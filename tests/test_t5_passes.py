"""The T5 passes' dropout: the CPU's cheaper mask drops the asked share, keeps the expectation, and follows the seed."""

from __future__ import annotations

import pytest
import torch

from models.t5_passes import dropout


def test_the_cpu_dropout_mask_drops_the_asked_share_and_keeps_the_mean() -> None:
    ones = torch.ones(400_000)
    for p in (0.1, 0.3):
        out = dropout(ones, p)
        assert (out == 0).float().mean().item() == pytest.approx(p, abs=0.005)
        assert out.mean().item() == pytest.approx(1.0, abs=0.01)
        assert out.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]
    assert dropout(ones, 0.0) is ones
    torch.manual_seed(5)
    first = dropout(ones, 0.1)
    torch.manual_seed(5)
    assert torch.equal(first, dropout(ones, 0.1))
    grad = torch.ones(10, requires_grad=True)
    dropout(grad, 0.5).sum().backward()
    assert set(grad.grad.unique().tolist()) <= {0.0, 2.0}
