"""TIGER: semantic-ID tokenizer, prefix trie, constrained retrieval, scoring, training and persistence (CPU)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from models.ranker_inputs import SideInputs, TigerBatch, collate
from models.tiger import TigerConfig, TigerRanker
from models.tokenizer import EOS, PAD, SemanticIdTokenizer
from models.trie import CodeTrie
from training.batches import length_batches

LEVELS = [8, 8, 8]
NUM_ITEMS = 60
SMALL = TigerConfig(d_model=64, d_kv=16, num_heads=4, d_ff=128, num_encoder_layers=2, num_decoder_layers=2, dropout=0.0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_codes(count: int, codes_per_level: list[int], seed: int) -> dict[int, tuple[int, ...]]:
    rng = random.Random(seed)
    combos = rng.sample(list(itertools.product(*(range(width) for width in codes_per_level))), count)
    return dict(enumerate(combos))


@pytest.fixture(scope="module")
def tokenizer() -> SemanticIdTokenizer:
    return SemanticIdTokenizer(random_codes(NUM_ITEMS, LEVELS, seed=1), LEVELS, num_user_buckets=50)


@pytest.fixture(scope="module")
def ranker(tokenizer: SemanticIdTokenizer) -> TigerRanker:
    return TigerRanker(tokenizer, SMALL, device="cpu")


def requests(count: int, seed: int) -> tuple[list[str], list[list[int]]]:
    rng = random.Random(seed)
    users = [f"user-{seed}-{index}" for index in range(count)]
    return users, [[rng.randrange(NUM_ITEMS) for _ in range(rng.randint(0, 8))] for _ in users]


def test_tokenizer_round_trip_and_layout(tokenizer: SemanticIdTokenizer) -> None:
    for item, codes in tokenizer.item_codes.items():
        tokens = tokenizer.encode_target(item)
        assert tokens == [offset + code for offset, code in zip(tokenizer.offsets, codes, strict=True)]
        assert tokenizer.decode(tokens) == item
        assert tokenizer.decode([*tokens, EOS, PAD]) == item
    history = [3, 7, 12]
    encoded = tokenizer.encode_history("alice", [3, 7, 999, 12])  # 999 has no semantic ID: skipped
    assert encoded == [
        tokenizer.user_token("alice"),
        *itertools.chain.from_iterable(tokenizer.encode_target(item) for item in history),
        EOS,
    ]
    # the user hash is stable across processes (blake2b, not hash()) and lands in the user block
    assert tokenizer.user_token("alice") == tokenizer.user_offset + 29
    assert all(tokenizer.user_offset <= tokenizer.user_token(f"u{i}") < tokenizer.vocab_size for i in range(200))
    assert tokenizer.vocab_size == 2 + sum(LEVELS) + 50
    first = tokenizer.encode_target(0)
    assert tokenizer.decode(first[:-1]) is None  # too short
    assert tokenizer.decode([first[1], first[0], first[2]]) is None  # codes in the wrong level blocks
    unused = next(c for c in itertools.product(*map(range, LEVELS)) if c not in tokenizer.item_codes.values())
    assert tokenizer.decode([offset + code for offset, code in zip(tokenizer.offsets, unused)]) is None


def test_trie_allows_exactly_the_valid_continuations(tokenizer: SemanticIdTokenizer) -> None:
    trie = tokenizer.trie
    sequences = set(tokenizer.item_codes.values())
    assert len(trie) == NUM_ITEMS
    for length in range(len(LEVELS)):
        for prefix in itertools.product(*(range(width) for width in LEVELS[:length])):
            expected = sorted({seq[length] for seq in sequences if seq[:length] == prefix})
            assert trie.allowed(prefix) == expected
    assert trie.allowed((99,)) == []
    assert trie.allowed(next(iter(sequences))) == []
    for item, codes in tokenizer.item_codes.items():
        assert trie.lookup(codes) == item
    with pytest.raises(ValueError, match="share"):
        CodeTrie({0: (1, 2), 1: (1, 2)}, [4, 4])
    with pytest.raises(ValueError, match="out of range"):
        CodeTrie({0: (1, 4)}, [4, 4])


def test_items_added_to_a_trie_answer_as_a_trie_built_with_them_and_tables_stay_narrow() -> None:
    codes = random_codes(40, LEVELS, seed=2)
    first, later = dict(list(codes.items())[:30]), dict(list(codes.items())[30:])
    base = CodeTrie(first, LEVELS)
    extended, whole = base.with_items(later), CodeTrie(codes, LEVELS)
    assert len(base) == 30 and len(extended) == len(whole) == 40
    for length in range(len(LEVELS)):
        for prefix in itertools.product(*(range(width) for width in LEVELS[:length])):
            assert extended.allowed(prefix) == whole.allowed(prefix)
            assert base.allowed(prefix) == sorted({seq[length] for seq in first.values() if seq[:length] == prefix})
    assert all(extended.lookup(seq) == item for item, seq in codes.items())
    assert all(base.lookup(seq) is None for seq in later.values())  # the trie requests read is left as it was
    # a level's table is as wide as its largest code in use, not its codebook: the collision level stays small
    collisions = CodeTrie({0: (1, 2, 0), 1: (1, 2, 1), 2: (3, 0, 0)}, [8, 8, 256])
    assert collisions.tables[-1].shape == (2, 2)
    assert collisions.with_items({3: (1, 2, 5)}).tables[-1].shape == (2, 6)  # widened by a larger code
    assert collisions.allowed((1, 2)) == [0, 1] and collisions.lookup((1, 2, 7)) is None
    with pytest.raises(ValueError, match="share"):
        collisions.with_items({4: (3, 0, 0)})


def test_collate_pads_and_truncates(tokenizer: SemanticIdTokenizer) -> None:
    batch = collate(tokenizer, ["a", "b"], [list(range(30)), [5]], targets=[1, 2], max_history=20)
    assert batch.input_ids.shape == (2, 1 + 20 * len(LEVELS) + 1)
    assert batch.attention_mask[1].sum() == 1 + len(LEVELS) + 1
    assert batch.input_ids[0].tolist() == tokenizer.encode_history("a", list(range(10, 30)))
    assert (batch.input_ids[1][batch.attention_mask[1] == 0] == PAD).all()
    assert batch.labels is not None
    assert batch.labels.tolist() == [tokenizer.encode_target(1), tokenizer.encode_target(2)]


def test_recommend_returns_distinct_valid_items_sorted(ranker: TigerRanker) -> None:
    users, histories = requests(6, seed=2)
    items, scores = ranker.recommend(users, histories, k=10, beam_size=20)
    assert items.shape == scores.shape == (6, 10)
    for row, row_scores in zip(items.tolist(), scores):
        assert all(item in ranker.tokenizer.item_codes for item in row)
        assert len(set(row)) == 10
        assert torch.all(row_scores[:-1] >= row_scores[1:])
    # the best beam is the best item: no item has a higher likelihood than the first one returned
    every = ranker.score(users, histories, [list(range(NUM_ITEMS))] * len(users))
    for row_scores, all_scores in zip(scores, every):
        assert row_scores[0] == pytest.approx(float(all_scores.max()), abs=1e-4)


def test_recommend_pads_small_catalogs_and_excludes_history() -> None:
    tiny = SemanticIdTokenizer(random_codes(5, LEVELS, seed=3), LEVELS, num_user_buckets=4)
    ranker = TigerRanker(tiny, SMALL, device="cpu")
    items, scores = ranker.recommend(["u"], [[0, 1]], k=8, beam_size=8)
    assert sorted(items[0, :5].tolist()) == [0, 1, 2, 3, 4]
    assert items[0, 5:].tolist() == [-1, -1, -1]
    assert torch.isinf(scores[0, 5:]).all() and torch.isfinite(scores[0, :5]).all()

    items, _ = ranker.recommend(["u"], [[0, 1]], k=8, beam_size=8, exclude_history=True)
    assert sorted(items[0, :3].tolist()) == [2, 3, 4] and items[0, 3:].tolist() == [-1] * 5


def test_score_matches_teacher_forcing_and_beam_scores(ranker: TigerRanker) -> None:
    users, histories = requests(4, seed=4)
    items, beam_scores = ranker.recommend(users, histories, k=10, beam_size=20)
    candidates = [[*row, 10000] for row in items.tolist()]  # 10_000 is not an item
    scored = ranker.score(users, histories, candidates)
    for row, beam_row in zip(scored, beam_scores):
        assert torch.allclose(row[:-1], beam_row, atol=1e-4)
        assert row[-1] == float("-inf")

    # the stock T5 forward (the training path) gives the same log-likelihoods
    ranker.eval()
    for user, history, row, values in zip(users, histories, items.tolist(), scored):
        batch = ranker.batch([user] * len(row), [history] * len(row), row)
        assert batch.labels is not None
        with torch.no_grad():
            output = ranker.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        expected = output.logits.log_softmax(-1).gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1).sum(-1)
        assert torch.allclose(values[:-1], expected, atol=1e-4)

    ragged = ranker.score(["a", "b", "c"], [[1], [], [2, 3]], [[4, 5, 6], [], [-7]])
    assert [len(row) for row in ragged] == [3, 0, 1] and ragged[2][0] == float("-inf")
    assert [len(row) for row in ranker.score(["a"], [[1]], [[]])] == [0]


def test_an_untrained_ranker_starts_near_a_uniform_guess(tokenizer: SemanticIdTokenizer) -> None:
    # an output head drawn at T5's untied std of 1 starts the logits ~sqrt(d_model) wide, a loss several times this
    users, histories = requests(32, seed=11)
    targets = [random.Random(index).randrange(NUM_ITEMS) for index in range(len(users))]
    fresh = TigerRanker(tokenizer, SMALL, device="cpu")
    assert fresh.loss(fresh.batch(users, histories, targets)).item() < math.log(tokenizer.vocab_size) + 1


def cycle_examples(count: int, seed: int) -> tuple[list[str], list[list[int]], list[int]]:
    """Windows of the cycle 0 -> 1 -> ... -> 59 -> 0 with the next item as target."""
    rng = random.Random(seed)
    users, histories, targets = [], [], []
    for index in range(count):
        start, length = rng.randrange(NUM_ITEMS), rng.randint(1, 6)
        users.append(f"cycle-{seed}-{index}")
        histories.append([(start + step) % NUM_ITEMS for step in range(length)])
        targets.append((start + length) % NUM_ITEMS)
    return users, histories, targets


def test_training_learns_a_planted_pattern(tokenizer: SemanticIdTokenizer) -> None:
    torch.manual_seed(0)
    ranker = TigerRanker(tokenizer, SMALL, device="cpu")
    users, histories, targets = cycle_examples(1024, seed=5)
    windows = (slice((step * 64) % 1024, (step * 64) % 1024 + 64) for step in range(300))
    fit_batches(ranker, (ranker.batch(users[rows], histories[rows], targets[rows]) for rows in windows))
    recall = cycle_recall(ranker)
    assert recall > 0.9, f"Recall@10 {recall:.2f} (chance {10 / NUM_ITEMS:.2f})"
    assert ranker.training  # recommend restores the caller's mode


def fit_batches(ranker: TigerRanker, batches: Iterable[TigerBatch]) -> None:
    """AdamW at 3e-3 over ``batches``, in training mode."""
    optimizer = torch.optim.AdamW(ranker.parameters(), lr=3e-3)
    ranker.train()
    for batch in batches:
        loss = ranker.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def cycle_recall(ranker: TigerRanker) -> float:
    """Recall@10 of the cycle's next item on windows not trained on."""
    test_users, test_histories, test_targets = cycle_examples(200, seed=6)
    items, _ = ranker.recommend(test_users, test_histories, k=10, beam_size=20)
    return sum(target in row for target, row in zip(test_targets, items.tolist())) / len(test_targets)


def test_save_load_round_trip(ranker: TigerRanker, tmp_path: Path) -> None:
    ranker.save(tmp_path / "tiger")
    loaded = TigerRanker.load(tmp_path / "tiger", device="cpu")
    assert loaded.config == ranker.config
    assert loaded.tokenizer.item_codes == ranker.tokenizer.item_codes
    users, histories = requests(5, seed=7)
    expected_items, expected_scores = ranker.recommend(users, histories)
    items, scores = loaded.recommend(users, histories)
    assert torch.equal(items, expected_items) and torch.equal(scores, expected_scores)
    candidates = [[1, 2, 3]] * 5
    for got, want in zip(loaded.score(users, histories, candidates), ranker.score(users, histories, candidates)):
        assert torch.equal(got, want)
    # the seed alone fixes the initial weights
    again = TigerRanker(ranker.tokenizer, SMALL, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ranker.state_dict().values()))


def test_add_items_makes_late_items_rankable_and_keeps_old_ones(tokenizer: SemanticIdTokenizer) -> None:
    ranker = TigerRanker(tokenizer, SMALL, device="cpu")
    taken = set(tokenizer.item_codes.values())
    late = {
        NUM_ITEMS + n: codes
        for n, codes in enumerate(c for c in itertools.product(range(8), repeat=3) if c not in taken)
        if n < 2
    }
    before = ranker.score(["u"], [[1, 2]], [[0, 5]])[0]
    assert torch.isinf(ranker.score(["u"], [[1, 2]], [[NUM_ITEMS]])[0]).all()
    ranker.add_items({**late, 0: (9, 9, 9)})  # an existing index keeps its codes
    assert ranker.tokenizer.item_codes[0] == tokenizer.item_codes[0]
    assert torch.equal(ranker.score(["u"], [[1, 2]], [[0, 5]])[0], before)
    assert torch.isfinite(ranker.score(["u"], [[1, 2]], [list(late)])[0]).all()
    items, _ = ranker.recommend(["u"], [[1, 2]], k=NUM_ITEMS + 2, beam_size=NUM_ITEMS + 2)
    assert set(late) <= set(items[0].tolist())


CAUSAL = SMALL.model_copy(update={"history_attention": "causal", "max_history": 3})


def prefix_examples(sequences: dict[str, list[int]], max_history: int) -> tuple[list[str], list[list[int]], list[int]]:
    """Every prefix of each sequence with its next item, as ``leave_one_out`` lays out training examples."""
    users, histories, targets = [], [], []
    for user, sequence in sequences.items():
        for at in range(1, len(sequence)):
            users.append(user)
            histories.append(sequence[max(0, at - max_history) : at])
            targets.append(sequence[at])
    return users, histories, targets


def test_the_own_training_pass_equals_the_stock_t5_forward(ranker: TigerRanker) -> None:
    users, histories = requests(6, seed=12)
    targets = list(range(6))
    batch = ranker.batch(users, histories, targets)
    ranker.eval()
    with torch.no_grad():
        stock = ranker.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        assert ranker.loss(batch).item() == pytest.approx(stock.item(), abs=1e-5)
    ranker.train()


def test_one_pass_trains_every_target_as_its_own_prefix_example_would(tokenizer: SemanticIdTokenizer) -> None:
    ranker = TigerRanker(tokenizer, CAUSAL, device="cpu")
    sequences = {"long": [1, 2, 3, 4, 5, 6, 7, 8], "short": [9, 10, 11], "pair": [12, 13]}
    examples = ranker.training_examples(*prefix_examples(sequences, CAUSAL.max_history))
    # windows of max_history + 1 = 4 items from the newest, sharing one item: 8 items -> 3 + 3 + 1 targets
    assert sorted(examples.target_counts.tolist()) == [1, 1, 2, 3, 3]
    assert int(examples.target_counts.sum()) == sum(len(sequence) - 1 for sequence in sequences.values())
    ranker.eval()
    with torch.no_grad():
        one_pass = ranker.loss(examples.select(np.arange(len(examples)))).item()
        # the same targets, each encoded on its own: the history its window gives it, causal, without eos
        each = []
        for user, sequence in sequences.items():
            end = len(sequence)
            while end > 1:
                start = max(0, end - CAUSAL.max_history - 1)
                each += [
                    ranker.loss(ranker.batch([user], [sequence[start:at]], [sequence[at]])).item()
                    for at in range(start + 1, end)
                ]
                end = start + 1
    assert one_pass == pytest.approx(sum(each) / len(each), abs=1e-5)
    # a row selection trims to the selected windows' own targets
    short = int(np.argmin(examples.target_counts))
    assert examples.select(np.array([short])).labels.shape == (1, 1, len(LEVELS))


def test_causal_history_attention_reads_no_later_item_and_takes_no_per_example_side_inputs(
    tokenizer: SemanticIdTokenizer,
) -> None:
    ranker = TigerRanker(tokenizer, CAUSAL.model_copy(update={"max_history": 20}), device="cpu")
    batch = ranker.batch(["u"], [[1, 2, 3]])
    assert EOS not in batch.input_ids[0].tolist() and batch.slots is not None
    assert batch.slots[0].tolist() == [-1] + [0] * 3 + [1] * 3 + [2] * 3
    # the encoding of the first items does not change with what follows them: a one-pass target sees only its past
    ranker.eval()
    longer = ranker._encode(ranker.batch(["u"], [[1, 2, 3]]))
    shorter = ranker._encode(ranker.batch(["u"], [[1, 2]]))
    assert torch.allclose(longer.keys[0][..., :7, :], shorter.keys[0], atol=1e-5)
    with pytest.raises(ValueError, match="side inputs"):
        TigerConfig(history_attention="causal", side=SideInputs(reasoning="structured"))


def test_one_pass_training_learns_a_planted_pattern(tokenizer: SemanticIdTokenizer) -> None:
    torch.manual_seed(0)
    ranker = TigerRanker(tokenizer, CAUSAL.model_copy(update={"max_history": 6}), device="cpu")
    rng = random.Random(8)
    sequences = {
        f"cycle-{n}": [(start + step) % NUM_ITEMS for step in range(rng.randint(3, 9))]
        for n, start in enumerate(rng.choices(range(NUM_ITEMS), k=300))
    }
    examples = ranker.training_examples(*prefix_examples(sequences, 6))
    rng = np.random.default_rng(0)
    epochs = (length_batches(examples.lengths, examples.target_counts, 64, rng) for _ in range(25))
    fit_batches(ranker, (examples.select(rows) for batches in epochs for rows in batches))
    recall = cycle_recall(ranker)
    assert recall > 0.9, f"Recall@10 {recall:.2f} (chance {10 / NUM_ITEMS:.2f})"
