"""The distilled ranker's side inputs: their encoder layout, that the model learns from them, and persistence."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models.ranker_inputs import SideInputs, UserContext, collate, collate_all
from models.tiger import TigerConfig, TigerRanker
from models.tokenizer import EOS, PAD, SemanticIdTokenizer
from tests.test_tiger import LEVELS, random_codes

ITEMS = 40
DIM = 16

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(**side: object) -> TigerConfig:
    return TigerConfig(
        d_model=48,
        d_kv=16,
        num_heads=3,
        d_ff=96,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout=0.0,
        side=SideInputs(vector_dim=DIM, max_steps=3, **side),  # type: ignore[arg-type]
    )


def tokenizer() -> SemanticIdTokenizer:
    return SemanticIdTokenizer(random_codes(ITEMS, LEVELS, seed=2), LEVELS, num_user_buckets=10)


def test_layout_puts_steps_after_the_user_and_beyond_log_after_the_history() -> None:
    tok = tokenizer()
    steps = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    context = UserContext(steps=steps, beyond_log=[5, 6])
    structured = collate(
        tok, ["u"], [[1, 2]], contexts=[context], side=config(reasoning="structured", beyond_log=True).side
    )
    L = len(LEVELS)
    assert structured.input_ids[0, 1:4].tolist() == [PAD] * 3 and structured.step_slots[0, :4].tolist() == [-1, 0, 1, 2]  # type: ignore[union-attr]
    assert structured.input_ids[0, 4 : 4 + L].tolist() == tok.encode_target(1)
    assert structured.token_items[0, 4 : 4 + 2 * L].tolist() == [1] * L + [2] * L  # type: ignore[union-attr]
    assert structured.segments[0].tolist() == [0] * (4 + 2 * L) + [1] * (2 * L) + [0]  # type: ignore[union-attr]
    assert structured.input_ids[0, 4 + 4 * L].item() == EOS
    pooled = collate(tok, ["u"], [[1, 2]], contexts=[context], side=config(reasoning="pooled").side)
    assert pooled.step_slots[0, :3].tolist() == [-1, 0, -1]  # type: ignore[union-attr]
    assert torch.allclose(pooled.steps[0, 0], torch.from_numpy(steps.mean(0)))  # type: ignore[index]
    plain = collate(tok, ["u"], [[1, 2]])
    assert plain.input_ids[0].tolist() == tok.encode_history("u", [1, 2]) and plain.steps is None


@pytest.mark.parametrize(
    "side", [{}, {"reasoning": "structured", "beyond_log": True, "knowledge": True}, {"reasoning": "pooled"}]
)
def test_rows_of_examples_collated_once_are_the_batch_collate_builds(side: dict[str, object]) -> None:
    tok, rng = tokenizer(), random.Random(5)
    users = [f"u{index}" for index in range(50)]
    histories = [[rng.randrange(ITEMS) for _ in range(rng.randint(1, 25))] for _ in users]
    targets = [rng.randrange(ITEMS) for _ in users]
    contexts = [  # some examples without steps, some with fewer than the most
        UserContext(
            None if index % 4 == 0 else np.random.default_rng(index).random((1 + index % 3, DIM), dtype=np.float32),
            [rng.randrange(ITEMS) for _ in range(index % 5)],
        )
        for index in range(len(users))
    ]
    sides = config(**side).side
    everything = collate_all(tok, users, histories, targets, 20, contexts, sides, torch.device("cpu"), chunk=16)
    for rows in ([0, 4, 8], [3, 17, 40, 2], list(range(50))[::-1]):
        built = collate(
            tok,
            [users[i] for i in rows],
            [histories[i] for i in rows],
            [targets[i] for i in rows],
            20,
            [contexts[i] for i in rows],
            sides,
        )
        selected = everything.select(np.array(rows))
        for name, value in vars(built).items():
            other = getattr(selected, name)
            assert (value is None and other is None) or torch.equal(value, other), name


def planted(
    count: int, seed: int, signal: np.ndarray
) -> tuple[list[str], list[list[int]], list[int], list[UserContext]]:
    """The next item is random and the history says nothing about it; a step vector or the beyond-log items do."""
    rng = random.Random(seed)
    users, histories, targets, contexts = [], [], [], []
    for index in range(count):
        target = rng.randrange(ITEMS)
        noise = rng.randrange(ITEMS)
        users.append(f"u{index % 10}")
        histories.append([rng.randrange(ITEMS) for _ in range(3)])
        targets.append(target)
        contexts.append(UserContext(steps=np.stack([signal[noise], signal[target]]), beyond_log=[target]))
    return users, histories, targets, contexts


@pytest.mark.parametrize("side", [{"reasoning": "structured"}, {"beyond_log": True}, {}])
def test_the_ranker_learns_what_only_the_side_inputs_carry(side: dict[str, object]) -> None:
    signal = np.random.default_rng(0).normal(size=(ITEMS, DIM)).astype(np.float32)
    signal /= np.linalg.norm(signal, axis=1, keepdims=True)
    ranker = TigerRanker(tokenizer(), config(**side), device="cpu")
    users, histories, targets, contexts = planted(1200, 0, signal)
    optimiser = torch.optim.AdamW(ranker.parameters(), lr=3e-3)
    ranker.train()
    for _ in range(6):
        for start in range(0, len(users), 64):
            rows = slice(start, start + 64)
            loss = ranker.loss(ranker.batch(users[rows], histories[rows], targets[rows], contexts[rows]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    users, histories, targets, contexts = planted(200, 1, signal)
    items, _ = ranker.recommend(users, histories, k=1, beam_size=5, contexts=contexts)
    accuracy = float((items[:, 0] == torch.tensor(targets)).float().mean())
    if side:
        assert accuracy > 0.6
    else:
        assert accuracy < 0.15  # the baseline sees only the history: chance is 1/40


def test_side_inputs_and_item_vectors_survive_save_and_load(tmp_path: Path) -> None:
    ranker = TigerRanker(tokenizer(), config(knowledge=True, reasoning="structured", beyond_log=True), device="cpu")
    ranker.set_item_vectors(torch.randn(ITEMS, DIM))
    ranker.save(tmp_path / "ranker")
    loaded = TigerRanker.load(tmp_path / "ranker", "cpu")
    assert torch.equal(loaded.item_vectors, ranker.item_vectors)
    context = [UserContext(steps=np.ones((2, DIM), dtype=np.float32), beyond_log=[3])]
    assert torch.equal(
        ranker.recommend(["u"], [[1, 2]], contexts=context)[0], loaded.recommend(["u"], [[1, 2]], contexts=context)[0]
    )
