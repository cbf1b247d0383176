"""TIGER: generative retrieval over semantic IDs (Rajput et al. 2023, "Recommender Systems with Generative Retrieval").

A T5 encoder reads a user token and the semantic IDs of the user's recent items; the decoder generates the next
item's semantic ID, one code per level. Beam search is constrained by a prefix trie of the catalog's code
sequences, so every generated sequence is a real item.

Training and inference run the passes of ``models.t5_passes`` over the T5 weights instead of ``generate``/
``forward``: the decoder states of all beams, candidates or training targets of one user attend to that user's
cross-attention keys and values, projected once per user. With causal history attention one encoder pass over a
user's sequence trains every target in it, as SASRec trains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import T5Config, T5ForConditionalGeneration

from models import t5_passes
from models.device import default_device
from models.t5_passes import Memory
from models.trie import CodeTrie

SIDE_FILE = "side.safetensors"
PAD = 0  # also the decoder start token, as in T5
EOS = 1
IGNORE = -100  # label of a padded target position (cross-entropy's ignore_index)
NUM_SPECIAL = 2



class SemanticIdTokenizer:
    """Token vocabulary: [pad, eos] + one block per code level + ``num_user_buckets`` user tokens.

    Code ``c`` of level ``l`` is token ``offsets[l] + c``. Users are hashed with blake2b (stable across processes
    and machines, unlike ``hash``) into the user buckets, as in TIGER.
    """

    def __init__(
        self,
        item_codes: Mapping[int, Sequence[int]],
        codes_per_level: Sequence[int],
        num_user_buckets: int = 2000,
    ) -> None:
        self.item_codes = {int(item): tuple(int(c) for c in codes) for item, codes in item_codes.items()}
        self.codes_per_level = list(codes_per_level)
        self.num_user_buckets = num_user_buckets
        self.trie = CodeTrie(self.item_codes, self.codes_per_level)  # also validates the table
        self.offsets = [NUM_SPECIAL + sum(self.codes_per_level[:level]) for level in range(self.num_levels)]
        self.user_offset = NUM_SPECIAL + sum(self.codes_per_level)
        self.vocab_size = self.user_offset + num_user_buckets
        # item index -> its L code tokens (-1 rows where no item has that index): vectorised target lookup
        self.target_table = torch.full((max(self.item_codes, default=-1) + 1, self.num_levels), -1, dtype=torch.long)
        if self.item_codes:
            items = torch.tensor(list(self.item_codes), dtype=torch.long)
            codes = torch.tensor(list(self.item_codes.values()), dtype=torch.long)
            self.target_table[items] = codes + torch.tensor(self.offsets, dtype=torch.long)

    @property
    def num_levels(self) -> int:
        return len(self.codes_per_level)

    def user_token(self, user: str) -> int:
        digest = hashlib.blake2b(user.encode(), digest_size=8).digest()
        return self.user_offset + int.from_bytes(digest, "big") % self.num_user_buckets

    def encode_target(self, item: int) -> list[int]:
        """The item's L code tokens. No eos: every semantic ID has length L and decoding stops after L codes."""
        return [offset + code for offset, code in zip(self.offsets, self.item_codes[item], strict=True)]

    def encode_history(self, user: str, history: Sequence[int]) -> list[int]:
        """[user] + the codes of each history item (most recent last) + [eos].

        Items without a semantic ID (e.g. published after the table was built) are skipped, so serving never
        fails on a new item; truncating to the most recent items is the caller's choice.
        """
        tokens = [self.user_token(user)]
        for item in history:
            if item in self.item_codes:
                tokens.extend(self.encode_target(item))
        tokens.append(EOS)
        return tokens

    def decode(self, tokens: Sequence[int]) -> int | None:
        """The item whose code tokens are ``tokens`` (trailing eos/pad ignored), or None if there is none."""
        tokens = list(tokens)
        while tokens and tokens[-1] in (PAD, EOS):
            tokens.pop()
        if len(tokens) != self.num_levels:
            return None
        codes = [token - offset for token, offset in zip(tokens, self.offsets, strict=True)]
        if any(not 0 <= code < width for code, width in zip(codes, self.codes_per_level, strict=True)):
            return None
        return self.trie.lookup(codes)

    def to_json(self) -> dict[str, Any]:
        return {
            "codes_per_level": self.codes_per_level,
            "num_user_buckets": self.num_user_buckets,
            "item_codes": [[item, *codes] for item, codes in sorted(self.item_codes.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SemanticIdTokenizer:
        item_codes = {row[0]: row[1:] for row in data["item_codes"]}
        return cls(item_codes, data["codes_per_level"], data["num_user_buckets"])


class SideInputs(BaseModel):
    """What the distilled ranker reads beside the history's semantic IDs; all off is the TIGER baseline.

    - ``knowledge``: each history item's knowledge vector, projected, is added to the embeddings of its codes;
    - ``reasoning``: the user's reasoning steps, one encoder position per step with a step-position embedding
      (``structured``, the order preserved), or their mean in one position (``pooled``);
    - ``beyond_log``: the codes of the user's inferred beyond-log items as a second segment after the history.
    """

    model_config = ConfigDict(extra="forbid")

    knowledge: bool = False
    reasoning: Literal["none", "pooled", "structured"] = "none"
    beyond_log: bool = False
    vector_dim: int = 384  # width of item knowledge and step vectors (MiniLM)
    max_steps: int = 4
    max_beyond_log: int = 10

    @property
    def any(self) -> bool:
        return self.knowledge or self.per_example

    @property
    def per_example(self) -> bool:
        """Whether some input differs between the prefixes of one sequence (steps, beyond-log items)."""
        return self.reasoning != "none" or self.beyond_log


@dataclass(frozen=True)
class UserContext:
    """Per example, the side inputs that are not in the history: ordered step vectors and beyond-log items."""

    steps: np.ndarray | None = None  # [steps, vector_dim]
    beyond_log: Sequence[int] = ()  # item indices, most confident first


class TigerConfig(BaseModel):
    """Model size of the paper (4+4 layers, 6 heads of 64, MLP 1024, width 128, dropout 0.1)."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = 128
    d_kv: int = 64
    num_heads: int = 6
    d_ff: int = 1024
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    dropout: float = 0.1
    max_history: int = 20  # most recent items fed to the encoder
    # "causal": each history item reads only the items before it (and the user token), so one encoder pass over a
    # sequence serves all of its targets in training, and no eos closes the history; "bidirectional" is T5's and
    # the paper's. Causal reading leaves no place for per-example side inputs (reasoning steps, beyond-log items).
    history_attention: Literal["bidirectional", "causal"] = "bidirectional"
    seed: int = 0  # weight initialisation
    side: SideInputs = SideInputs()

    @model_validator(mode="after")
    def _causal_reads_only_the_history(self) -> TigerConfig:
        if self.history_attention == "causal" and self.side.per_example:
            raise ValueError("causal history attention takes no per-example side inputs (reasoning steps, beyond-log items)")
        return self


@dataclass(frozen=True)
class TigerBatch:
    """Right-padded encoder inputs and, for training, the target code tokens; side inputs when the model has them."""

    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]
    labels: torch.Tensor | None = None  # [B, L], or [B, T, L] for every target of a sequence (padded with IGNORE)
    token_items: torch.Tensor | None = None  # [B, S] history item of each code token, -1 elsewhere
    step_slots: torch.Tensor | None = None  # [B, S] step position of each step token, -1 elsewhere
    segments: torch.Tensor | None = None  # [B, S] 1 on beyond-log tokens
    steps: torch.Tensor | None = None  # [B, steps, vector_dim]
    slots: torch.Tensor | None = None  # causal: [B, S] history position of each code token, -1 elsewhere
    target_limits: torch.Tensor | None = None  # [B, T] target t reads history positions below its limit

    def to(self, device: torch.device | str) -> TigerBatch:
        values = (getattr(self, field.name) for field in fields(self))
        return TigerBatch(*(None if value is None else value.to(device) for value in values))


def collate(
    tokenizer: SemanticIdTokenizer,
    users: Sequence[str],
    histories: Sequence[Sequence[int]],
    targets: Sequence[int] | None = None,
    max_history: int = 20,
    contexts: Sequence[UserContext] | None = None,
    side: SideInputs | None = None,
    causal: bool = False,
) -> TigerBatch:
    """Tokenize and pad examples (the last ``max_history`` items of each history) into a batch.

    Encoder layout: [user] [one position per reasoning step] [history codes] [beyond-log codes] [eos]; without
    side inputs it is ``encode_history``'s. ``causal`` (causal history attention): no eos, and each code token's
    history position in ``slots``.
    """
    side = side or SideInputs()
    rows: list[tuple[list[int], ...]] = []  # tokens, items, step slots, segments, history slots
    step_rows: list[np.ndarray] = []
    for index, (user, history) in enumerate(zip(users, histories, strict=True)):
        context = contexts[index] if contexts is not None else UserContext()
        tokens, items, step_slots, segments, slots = [tokenizer.user_token(user)], [-1], [-1], [0], [-1]
        steps = _step_inputs(context.steps, side)
        step_rows.append(steps)
        for position in range(len(steps)):
            tokens.append(PAD)  # its embedding is replaced by the step's
            items.append(-1)
            step_slots.append(position)
            segments.append(0)
            slots.append(-1)
        parts = [(list(history)[-max_history:], 0)]
        if side.beyond_log:
            parts.append((list(context.beyond_log)[: side.max_beyond_log], 1))
        for part, segment in parts:
            for position, item in enumerate(part):
                if item in tokenizer.item_codes:
                    codes = tokenizer.encode_target(item)
                    tokens += codes
                    items += [item if segment == 0 else -1] * len(codes)
                    step_slots += [-1] * len(codes)
                    segments += [segment] * len(codes)
                    slots += [position] * len(codes)
        if not causal:
            tokens.append(EOS)
            items.append(-1)
            step_slots.append(-1)
            segments.append(0)
            slots.append(-1)
        rows.append((tokens, items, step_slots, segments, slots))
    width = max(len(row[0]) for row in rows)
    columns = [torch.full((len(rows), width), _PADDING[name], dtype=torch.long) for name in _COLUMNS]
    for row, values in enumerate(rows):
        for column, value in zip(columns, values, strict=True):
            column[row, : len(value)] = torch.tensor(value)
    input_ids, token_items, step_slots, segments_tensor, slots = columns
    attention_mask = (torch.arange(width) < torch.tensor([len(row[0]) for row in rows]).unsqueeze(1)).long()
    labels = None
    if targets is not None:
        labels = torch.tensor([tokenizer.encode_target(item) for item in targets], dtype=torch.long)
    history_slots = slots if causal else None
    if not side.any:
        return TigerBatch(input_ids, attention_mask, labels, slots=history_slots)
    most = max(len(steps) for steps in step_rows)
    steps = torch.zeros((len(rows), most, side.vector_dim))
    for row, values in enumerate(step_rows):
        if len(values):
            steps[row, : len(values)] = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return TigerBatch(input_ids, attention_mask, labels, token_items, step_slots, segments_tensor, steps, history_slots)


# What ``collate`` pads each field with, so that a row selection of a wider batch trims to the same tensors.
_PADDING = {"input_ids": PAD, "attention_mask": 0, "token_items": -1, "step_slots": -1, "segments": 0, "slots": -1}
_COLUMNS = ("input_ids", "token_items", "step_slots", "segments", "slots")  # collate's per-token lists, in its order


@dataclass(frozen=True)
class CollatedExamples:
    """Examples tokenized and padded once, so that a training batch is a row selection rather than a ``collate``:
    that Python work per example, repeated every epoch, otherwise paces a small ranker on a GPU."""

    batch: TigerBatch  # every example, padded to the longest; on the model's device
    # Kept on the host, so that trimming a selection to its own width never waits for the device.
    lengths: np.ndarray  # tokens of each row
    step_counts: np.ndarray  # step vectors of each row
    target_counts: np.ndarray  # targets of each row: 1 for a prefix example, the sequence's targets in one-pass rows

    def __len__(self) -> int:
        return len(self.lengths)

    def select(self, rows: np.ndarray) -> TigerBatch:
        """The batch that ``collate`` builds from these rows: padded to their own longest row, step and target count."""
        index = torch.as_tensor(rows, device=self.batch.input_ids.device)
        width, count = int(self.lengths[rows].max()), int(self.step_counts[rows].max())
        targets = int(self.target_counts[rows].max())
        values: dict[str, torch.Tensor | None] = {}
        for field in fields(TigerBatch):
            value = getattr(self.batch, field.name)
            if value is None:
                values[field.name] = None
            elif field.name == "labels":
                values[field.name] = value[index, :targets] if value.dim() == 3 else value[index]
            elif field.name == "target_limits":
                values[field.name] = value[index, :targets]
            elif field.name == "steps":
                values[field.name] = value[index, :count]
            else:
                values[field.name] = value[index, :width]
        return TigerBatch(**values)


def collate_all(
    tokenizer: SemanticIdTokenizer,
    users: Sequence[str],
    histories: Sequence[Sequence[int]],
    targets: Sequence[int] | None,
    max_history: int,
    contexts: Sequence[UserContext] | None,
    side: SideInputs,
    device: torch.device,
    causal: bool = False,
    chunk: int = 4096,
) -> CollatedExamples:
    """``collate`` over all examples, a chunk at a time (to bound the Python lists), joined at the widest chunk."""
    parts = [
        collate(
            tokenizer, users[start : start + chunk], histories[start : start + chunk],
            None if targets is None else targets[start : start + chunk], max_history,
            None if contexts is None else contexts[start : start + chunk], side, causal,
        )
        for start in range(0, len(users), chunk)
    ]
    width = max(part.input_ids.size(1) for part in parts)
    count = max((part.steps.size(1) for part in parts if part.steps is not None), default=0)
    joined: dict[str, torch.Tensor | None] = {}
    for field in fields(TigerBatch):
        values = [getattr(part, field.name) for part in parts]
        if values[0] is None:
            joined[field.name] = None
        elif field.name == "labels":
            joined[field.name] = torch.cat(values)
        elif field.name == "steps":
            joined[field.name] = torch.cat([F.pad(value, (0, 0, 0, count - value.size(1))) for value in values])
        else:
            joined[field.name] = torch.cat([F.pad(value, (0, width - value.size(1)), value=_PADDING[field.name]) for value in values])
    batch = TigerBatch(**joined)
    steps = np.zeros(len(users), dtype=np.int64) if batch.step_slots is None else (batch.step_slots >= 0).sum(1).numpy()
    return CollatedExamples(batch.to(device), batch.attention_mask.sum(1).numpy(), steps, np.ones(len(users), dtype=np.int64))


def collate_sequences(
    tokenizer: SemanticIdTokenizer,
    users: Sequence[str],
    histories: Sequence[Sequence[int]],
    targets: Sequence[int],
    max_history: int,
    side: SideInputs,
    device: torch.device,
) -> CollatedExamples:
    """Per-prefix training examples regrouped into sequences whose targets all train in one pass (causal history).

    Each user's items are cut, from the newest, into windows of ``max_history + 1``: the window's first item is
    history only, and each later item is a target that reads the window's items before it. Successive windows share
    one item, so every item the examples target is a target once; a target in a long sequence reads at most
    ``max_history`` items, as its prefix example would, fewer near a window's start.
    """
    owners: list[str] = []
    inputs: list[list[int]] = []
    outputs: list[list[int]] = []
    for user, sequence in _sequences(users, histories, targets):
        end = len(sequence)
        while end > 1:
            start = max(0, end - max_history - 1)
            owners.append(user)
            inputs.append(sequence[start : end - 1])
            outputs.append(sequence[start + 1 : end])
            end = start + 1
    examples = collate_all(tokenizer, owners, inputs, None, max_history, None, side, device, causal=True)
    counts = np.array([len(row) for row in outputs], dtype=np.int64)
    items = _pad_rows(outputs, torch.device("cpu"))  # [N, T], -1 beyond each row's targets
    labels = tokenizer.target_table[items.clamp(min=0)]
    labels = labels.masked_fill((items < 0).unsqueeze(-1) | (labels < 0), IGNORE)
    # target t of a window (0-based) reads the window's history positions 0..t
    limits = torch.arange(1, items.size(1) + 1).expand_as(items).contiguous()
    batch = replace(examples.batch, labels=labels.to(device), target_limits=limits.to(device))
    return CollatedExamples(batch, examples.lengths, examples.step_counts, counts)


def _sequences(users: Sequence[str], histories: Sequence[Sequence[int]], targets: Sequence[int]) -> Iterator[tuple[str, list[int]]]:
    """Each user's items from its prefix examples, which come consecutively and in order (as ``leave_one_out``'s)."""
    for user, group in itertools.groupby(range(len(users)), key=users.__getitem__):
        rows = list(group)
        for previous, row in itertools.pairwise(rows):
            if not histories[row] or histories[row][-1] != targets[previous]:
                raise ValueError(f"user {user}'s examples are not the prefixes of one sequence in order")
        yield user, [*histories[rows[0]], *(targets[row] for row in rows)]


def _step_inputs(steps: np.ndarray | None, side: SideInputs) -> np.ndarray:
    """The step vectors the encoder reads: none, their mean (pooled), or the first ``max_steps`` in order."""
    if side.reasoning == "none" or steps is None or len(steps) == 0:
        return np.zeros((0, side.vector_dim), dtype=np.float32)
    if side.reasoning == "pooled":
        return np.asarray(steps, dtype=np.float32).mean(axis=0, keepdims=True)
    return np.asarray(steps, dtype=np.float32)[: side.max_steps]


class TigerRanker(torch.nn.Module):
    """T5 encoder-decoder over semantic-ID tokens: training loss, constrained beam-search retrieval, scoring."""

    def __init__(
        self,
        tokenizer: SemanticIdTokenizer,
        config: TigerConfig | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.config = config or TigerConfig()
        t5_config = T5Config(
            vocab_size=tokenizer.vocab_size,
            d_model=self.config.d_model,
            d_kv=self.config.d_kv,
            d_ff=self.config.d_ff,
            num_layers=self.config.num_encoder_layers,
            num_decoder_layers=self.config.num_decoder_layers,
            num_heads=self.config.num_heads,
            dropout_rate=self.config.dropout,
            feed_forward_proj="relu",
            pad_token_id=PAD,
            eos_token_id=EOS,
            decoder_start_token_id=PAD,
            # untied: the vocabulary is tiny, and T5's tied head rescales its input, one more thing to mirror
            tie_word_embeddings=False,
            use_cache=False,
        )
        side, width = self.config.side, self.config.d_model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.model = T5ForConditionalGeneration(t5_config)
            # T5 draws an untied head with std 1, sized for the tied head's input scaled by d_model ** -0.5: here
            # that would start the logits about sqrt(d_model) wide (a first-epoch loss near 14), so scale it alike
            torch.nn.init.normal_(self.model.lm_head.weight, std=width**-0.5)
            self.side = torch.nn.ModuleDict()
            if side.knowledge:
                self.side["knowledge"] = torch.nn.Linear(side.vector_dim, width, bias=False)
            if side.reasoning != "none":
                self.side["steps"] = torch.nn.Linear(side.vector_dim, width)
            if side.reasoning == "structured":
                self.side["step_position"] = torch.nn.Embedding(side.max_steps, width)
                # zeros at first: an N(0, 1) row is a fixed offset larger than the projected step it is added to
                torch.nn.init.zeros_(self.side["step_position"].weight)
            if side.beyond_log:
                self.side["segment"] = torch.nn.Embedding(2, width)
        # item index -> knowledge vector (zeros: none); data, not weights, so set by the trainer and the server
        self.register_buffer("item_vectors", torch.zeros((0, side.vector_dim)), persistent=False)
        for level, table in enumerate(tokenizer.trie.tables):
            # derived from the tokenizer, so not saved with the weights
            self.register_buffer(f"trie_level_{level}", table, persistent=False)
        self.to(device or default_device())

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    def batch(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[int]],
        targets: Sequence[int] | None = None,
        contexts: Sequence[UserContext] | None = None,
    ) -> TigerBatch:
        """``collate`` with this model's history length and side inputs, on this model's device."""
        return collate(
            self.tokenizer, users, histories, targets, self.config.max_history, contexts, self.config.side, self.causal
        ).to(self.device)

    def collate_all(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[int]],
        targets: Sequence[int] | None = None,
        contexts: Sequence[UserContext] | None = None,
    ) -> CollatedExamples:
        """``collate_all`` with this model's history length and side inputs, on this model's device."""
        return collate_all(
            self.tokenizer, users, histories, targets, self.config.max_history, contexts, self.config.side, self.device, self.causal
        )

    def training_examples(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[int]],
        targets: Sequence[int],
        contexts: Sequence[UserContext] | None = None,
    ) -> CollatedExamples:
        """Prefix examples as training rows: one per sequence window with causal history attention (all of its
        targets in one pass), else one per example."""
        if self.causal:
            return collate_sequences(self.tokenizer, users, histories, targets, self.config.max_history, self.config.side, self.device)
        return self.collate_all(users, histories, targets, contexts)

    @property
    def causal(self) -> bool:
        return self.config.history_attention == "causal"

    def set_item_vectors(self, vectors: torch.Tensor) -> None:
        """Knowledge vectors by item index [I, vector_dim]; rows of zeros for items without knowledge."""
        self.item_vectors = vectors.float().to(self.device)

    def loss(self, batch: TigerBatch) -> torch.Tensor:
        """Mean cross-entropy of the target codes under teacher forcing, over every target of the batch.

        Labels [B, L] hold one target per row; [B, T, L] with ``target_limits`` hold every target of a sequence
        (rows of -100 pad), each decoded against the history before it, so the history is encoded once.
        """
        if batch.labels is None:
            raise ValueError("the batch has no targets")
        batch = batch.to(self.device)
        labels = batch.labels if batch.labels.dim() == 3 else batch.labels.unsqueeze(1)
        tokens = F.pad(labels[..., :-1], (1, 0), value=PAD).clamp(min=PAD)  # shifted right; padding rows read pad
        hidden, _ = self._decode(tokens, self._encode(batch))
        logits = self.model.lm_head(hidden)
        return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE)

    @torch.inference_mode()
    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[int]],
        k: int = 10,
        beam_size: int = 20,
        exclude_history: bool = False,
        contexts: Sequence[UserContext] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items per user by trie-constrained beam search, best first.

        Returns item indices [B, k] (-1 where fewer than ``k`` items were found) and their log-likelihoods [B, k]
        (-inf there). Items are distinct because each item has one code sequence. With ``exclude_history`` the
        user's history items (all of them, not only the encoded window) are removed at the last level, so they
        never take a final beam; off by default because the paper's evaluation does not exclude them.
        """
        if not 0 < k <= beam_size:
            raise ValueError(f"need 0 < k <= beam_size, got k={k}, beam_size={beam_size}")
        with self._evaluating():
            memory = self._encode(self.batch(users, histories, contexts=contexts))
            banned = _pad_rows(histories, self.device) if exclude_history else None
            items, scores = self._beam_search(memory, beam_size, banned)
        short = k - items.size(1)
        if short > 0:
            items = F.pad(items, (0, short), value=-1)
            scores = F.pad(scores, (0, short), value=float("-inf"))
        return items[:, :k].cpu(), scores[:, :k].cpu()

    @torch.inference_mode()
    def score(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[int]],
        contexts: Sequence[UserContext] | None = None,
    ) -> list[torch.Tensor]:
        """Log-likelihood of each candidate's code sequence given the user's history, -inf for unknown items.

        The decoder walks the candidates' prefix trie level by level with a key/value cache, so a prefix that
        several candidates share (the start token for all of them, often a first code) is decoded once.
        """
        levels = self.tokenizer.num_levels
        width = max((len(row) for row in candidates), default=0)
        if width == 0:
            return [torch.empty(0) for _ in candidates]
        size = len(candidates)
        table = self.tokenizer.target_table
        items = _pad_rows(candidates, torch.device("cpu"))
        items = items.masked_fill((items < 0) | (items >= table.size(0)), -1)
        known = items >= 0
        known[known.clone()] = table[items[known], 0] >= 0
        targets = table[items.clamp(min=0)].masked_fill(~known.unsqueeze(-1), PAD).to(self.device)
        with self._evaluating():
            memory = self._encode(self.batch(users, histories, contexts=contexts))
            tokens = torch.full((size, 1, 1), PAD, dtype=torch.long, device=self.device)
            node = torch.zeros((size, width), dtype=torch.long, device=self.device)  # each candidate's prefix row
            totals = torch.zeros((size, width), device=self.device)
            past = None
            for level in range(levels):
                hidden, past = self._decode(tokens, memory, past)
                log_probs = self.model.lm_head(hidden[:, :, -1]).log_softmax(-1)  # [B, prefixes, vocab]
                totals += log_probs[torch.arange(size, device=self.device)[:, None], node, targets[..., level]]
                if level + 1 < levels:
                    tokens, node, past = _extend_prefixes(node, targets[..., level], log_probs.size(-1), past)
        totals = totals.cpu().masked_fill(~known, float("-inf"))
        return [totals[row, : len(items)] for row, items in enumerate(candidates)]

    def add_items(self, item_codes: Mapping[int, Sequence[int]]) -> None:
        """Make items that arrived after training rankable: a new tokenizer and trie, swapped in whole.

        The vocabulary is unchanged (codes stay within each level's codebook), so the weights serve the new
        items as they are; an item index that exists already keeps its codes.
        """
        self.use_tokenizer(self.tokenizer_with(item_codes))

    def tokenizer_with(self, item_codes: Mapping[int, Sequence[int]]) -> SemanticIdTokenizer:
        """The current tokenizer plus ``item_codes`` (existing indices keep theirs); the model is unchanged."""
        merged = {**{int(item): tuple(codes) for item, codes in item_codes.items()}, **self.tokenizer.item_codes}
        return SemanticIdTokenizer(merged, self.tokenizer.codes_per_level, self.tokenizer.num_user_buckets)

    def use_tokenizer(self, tokenizer: SemanticIdTokenizer) -> None:
        """Swap in a tokenizer from ``tokenizer_with``: building it is the slow part, this is quick."""
        for level, table in enumerate(tokenizer.trie.tables):
            setattr(self, f"trie_level_{level}", table.to(self.device))
        self.tokenizer = tokenizer

    def save(self, directory: str | Path) -> None:
        """Write config.json (model config and semantic-ID table) and model.safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"config": self.config.model_dump(), "tokenizer": self.tokenizer.to_json()}
        (directory / "config.json").write_text(json.dumps(meta))
        save_model(self.model, str(directory / "model.safetensors"))
        if self.config.side.any:
            tensors = {f"side.{name}": value for name, value in self.side.state_dict().items()}
            save_file({**tensors, "item_vectors": self.item_vectors.contiguous()}, str(directory / SIDE_FILE))

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str | None = None) -> TigerRanker:
        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text())
        ranker = cls(SemanticIdTokenizer.from_json(meta["tokenizer"]), TigerConfig(**meta["config"]), device)
        load_model(ranker.model, str(directory / "model.safetensors"), device=str(ranker.device))
        if ranker.config.side.any:
            tensors = load_file(str(directory / SIDE_FILE), device=str(ranker.device))
            ranker.side.load_state_dict({name[5:]: value for name, value in tensors.items() if name.startswith("side.")})
            ranker.set_item_vectors(tensors["item_vectors"])
        return ranker

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for the duration, then back to the caller's mode."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def _inputs_embeds(self, batch: TigerBatch) -> torch.Tensor:
        """Token embeddings plus the side inputs (vectors are scaled by sqrt(width) to token-embedding size)."""
        embeds = self.model.shared(batch.input_ids)
        side = self.config.side
        scale = side.vector_dim**0.5
        if side.knowledge and batch.token_items is not None:
            count = self.item_vectors.size(0)
            table = F.pad(self.item_vectors, (0, 0, 0, 1))  # row ``count``: zeros, for tokens without a vector
            items = batch.token_items.masked_fill((batch.token_items < 0) | (batch.token_items >= count), count)
            embeds = embeds + self.side["knowledge"](table[items] * scale)
        if side.reasoning != "none" and batch.step_slots is not None and batch.steps is not None and batch.steps.size(1):
            slots = batch.step_slots.clamp(min=0)
            vectors = batch.steps.gather(1, slots.unsqueeze(-1).expand(-1, -1, batch.steps.size(-1)))
            steps = self.side["steps"](vectors * scale)
            if side.reasoning == "structured":
                steps = steps + self.side["step_position"](slots)
            embeds = torch.where((batch.step_slots >= 0).unsqueeze(-1), steps, embeds)
        if side.beyond_log and batch.segments is not None:
            embeds = embeds + self.side["segment"](batch.segments)
        return embeds

    def _encode(self, batch: TigerBatch) -> Memory:
        """The encoder pass and each decoder layer's cross-attention keys and values, projected once per row.

        With causal history attention each history item reads the user token, the items before it and itself; a
        batch with ``target_limits`` (every target of a sequence) lets target t read the history items before it.
        """
        valid = batch.attention_mask.bool()
        allowed = valid.unsqueeze(1)  # [B, 1, S]
        if self.config.history_attention == "causal":
            if batch.slots is None:
                raise ValueError("causal history attention needs the batch's history slots")
            allowed = allowed & (batch.slots.unsqueeze(1) <= batch.slots.unsqueeze(2))
        states = t5_passes.encode(self.model.encoder, self._inputs_embeds(batch), allowed)
        reads = valid.unsqueeze(1)
        if batch.target_limits is not None and batch.slots is not None:
            reads = reads & (batch.slots.unsqueeze(1) < batch.target_limits.unsqueeze(2))  # [B, targets, S]
            reads = reads.repeat_interleave(self.tokenizer.num_levels, dim=1)  # one row per decoder position
        return t5_passes.memory(self.model.decoder, states, reads)

    def _decode(self, tokens: torch.Tensor, memory: Memory, past: t5_passes.Cache | None = None) -> tuple[torch.Tensor, t5_passes.Cache]:
        return t5_passes.decode(self.model.decoder, tokens, memory, past)

    def _beam_search(
        self, memory: Memory, beam_size: int, banned: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items [B, n] and log-likelihoods [B, n] of the best n <= beam_size valid code sequences, best first."""
        size = memory.mask.size(0)
        tokens = torch.full((size, 1, 1), PAD, dtype=torch.long, device=self.device)  # newest token of each beam
        nodes = torch.zeros((size, 1), dtype=torch.long, device=self.device)  # trie node each beam has reached
        scores = torch.zeros((size, 1), device=self.device)
        past = None
        last = self.tokenizer.num_levels - 1
        for level, (offset, width) in enumerate(zip(self.tokenizer.offsets, self.tokenizer.codes_per_level)):
            table: torch.Tensor = getattr(self, f"trie_level_{level}")
            hidden, past = self._decode(tokens, memory, past)
            # log-softmax over the whole vocabulary, so scores are the model's likelihoods, as ``score`` computes them
            log_probs = self.model.lm_head(hidden[:, :, -1]).log_softmax(-1)[..., offset : offset + width]
            # dead beams (score -inf, node -1) index row 0 harmlessly: their score keeps them out
            children = table[nodes.clamp(min=0)].long()  # [B, beams, width]
            candidates = (scores.unsqueeze(-1) + log_probs).masked_fill(children < 0, float("-inf"))
            if banned is not None and level == last:
                seen = (children.unsqueeze(-1) == banned[:, None, None, :]).any(-1)
                candidates = candidates.masked_fill(seen, float("-inf"))
            scores, picked = candidates.flatten(1).topk(min(beam_size, candidates[0].numel()), dim=1)
            nodes = children.flatten(1).gather(1, picked)
            beams = candidates.size(1)
            rows = (torch.arange(size, device=self.device).unsqueeze(1) * beams + picked // width).flatten()
            past = [(key[rows], value[rows]) for key, value in past]
            tokens = (picked % width + offset).unsqueeze(-1)
        return nodes.masked_fill(scores == float("-inf"), -1), scores


def _extend_prefixes(
    node: torch.Tensor, token: torch.Tensor, vocab: int, past: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The next level of the candidates' prefix trie: its distinct prefixes per user (padded to the widest user),
    each candidate's row among them, and the key/value cache of each row's parent prefix."""
    size, rows = node.size(0), past[0][0].size(0) // node.size(0)
    keys = node * vocab + token  # a prefix = (parent row, appended token)
    distinct = [torch.unique(row, return_inverse=True) for row in keys]
    widest = max(values.numel() for values, _ in distinct)
    prefixes = torch.zeros((size, widest), dtype=torch.long, device=node.device)  # padding repeats row 0's prefix
    for row, (values, _) in enumerate(distinct):
        prefixes[row, : values.numel()] = values
        prefixes[row, values.numel():] = values[0]
    next_node = torch.stack([inverse for _, inverse in distinct])
    parents = (torch.arange(size, device=node.device)[:, None] * rows + prefixes // vocab).flatten()
    cache = [(key[parents], value[parents]) for key, value in past]
    return (prefixes % vocab).unsqueeze(-1), next_node, cache


def _pad_rows(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Ragged item rows as a [B, max len] tensor padded with -1, which matches only absent (masked) trie entries."""
    width = max((len(row) for row in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)
    for index, row in enumerate(rows):
        out[index, : len(row)] = torch.tensor(list(row), dtype=torch.long)
    return out.to(device)
