"""What the ranker reads: side inputs beside the history, and examples tokenized and padded into batches (one
example per prefix, or every target of a sequence window for one causal pass)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from models.tokenizer import EOS, IGNORE, PAD, SemanticIdTokenizer


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
        values = ((field.name, getattr(self, field.name)) for field in fields(self))
        return replace(self, **{name: value.to(device) for name, value in values if value is not None})


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
    input_ids, token_items, step_tensor, segments_tensor, slot_tensor = columns
    attention_mask = (torch.arange(width) < torch.tensor([len(row[0]) for row in rows]).unsqueeze(1)).long()
    labels = None
    if targets is not None:
        labels = torch.tensor([tokenizer.encode_target(item) for item in targets], dtype=torch.long)
    history_slots = slot_tensor if causal else None
    if not side.any:
        return TigerBatch(input_ids, attention_mask, labels, slots=history_slots)
    most = max(len(steps) for steps in step_rows)
    step_vectors = torch.zeros((len(rows), most, side.vector_dim))
    for row, vectors in enumerate(step_rows):
        if len(vectors):
            step_vectors[row, : len(vectors)] = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
    return TigerBatch(
        input_ids, attention_mask, labels, token_items, step_tensor, segments_tensor, step_vectors, history_slots
    )


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
        return TigerBatch(**values)  # type: ignore[arg-type]  # the two required fields are never None


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
            tokenizer,
            users[start : start + chunk],
            histories[start : start + chunk],
            None if targets is None else targets[start : start + chunk],
            max_history,
            None if contexts is None else contexts[start : start + chunk],
            side,
            causal,
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
            joined[field.name] = torch.cat(
                [F.pad(value, (0, width - value.size(1)), value=_PADDING[field.name]) for value in values]
            )
    batch = TigerBatch(**joined)  # type: ignore[arg-type]  # the two required fields are never None
    steps = np.zeros(len(users), dtype=np.int64) if batch.step_slots is None else (batch.step_slots >= 0).sum(1).numpy()
    return CollatedExamples(
        batch.to(device), batch.attention_mask.sum(1).numpy(), steps, np.ones(len(users), dtype=np.int64)
    )


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
    items = pad_rows(outputs, torch.device("cpu"))  # [N, T], -1 beyond each row's targets
    labels = tokenizer.target_table[items.clamp(min=0)]
    labels = labels.masked_fill((items < 0).unsqueeze(-1) | (labels < 0), IGNORE)
    # target t of a window (0-based) reads the window's history positions 0..t
    limits = torch.arange(1, items.size(1) + 1).expand_as(items).contiguous()
    batch = replace(examples.batch, labels=labels.to(device), target_limits=limits.to(device))
    return CollatedExamples(batch, examples.lengths, examples.step_counts, counts)


def _sequences(
    users: Sequence[str], histories: Sequence[Sequence[int]], targets: Sequence[int]
) -> Iterator[tuple[str, list[int]]]:
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


def pad_rows(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Ragged item rows as a [B, max len] tensor padded with -1, which matches only absent (masked) trie entries."""
    width = max((len(row) for row in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)
    for index, row in enumerate(rows):
        out[index, : len(row)] = torch.tensor(list(row), dtype=torch.long)
    return out.to(device)
