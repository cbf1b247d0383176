"""Beyond-log interests: a LLaDA-style masked-diffusion transformer over semantic-ID tokens.

ReaSeq's latent reasoning infers what a user would do next beyond what the logs show. Here a bidirectional
transformer (no causal mask) reads the semantic-ID tokens of the user's recent items as a prompt, followed by
a block of ``horizon`` future items whose tokens are masked, and predicts every masked token at once. Each
position is one item slot: the sum of its L code-token embeddings (a masked code contributes its level's mask
embedding), so a sequence is H + N positions rather than (H + N) * L, and per-level heads predict each code.

Training follows LLaDA (Nie et al. 2025): draw ``t ~ U(0, 1]``, mask each future token with probability ``t``,
and weight the cross-entropy of the masked tokens by ``1/t``; the prompt is never masked. Sampling starts from
a fully masked block and, over ``steps`` forward passes, commits the most confident predictions and leaves the
rest masked for the next pass (low-confidence remasking). It commits whole items: a slot's item distribution is
the product of its per-level code probabilities over the catalog's real items, minus the user's history and the
items already committed, so every answer is a valid, new, distinct item.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from safetensors.torch import load_model, save_model

from models.device import default_device
from models.tokenizer import SemanticIdTokenizer

PAD = 0
MASK = 1  # code tokens start at 2, as in the ranker's tokenizer, so its item table is shared


class DiffusionConfig(BaseModel):
    """Model size and block shape; the defaults infer 10 items from the last 20 in a few milliseconds a user on CPU."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = 128
    num_heads: int = 4
    d_ff: int = 512
    num_layers: int = 3
    dropout: float = 0.1
    max_history: int = 20  # prompt: the most recent items
    horizon: int = 10  # future items per block: how many interests one sampling run infers
    sampling_steps: int = 5  # forward passes per inference; 1 commits every slot at once
    seed: int = 0

    @model_validator(mode="after")
    def _steps_fit_horizon(self) -> DiffusionConfig:
        if not 1 <= self.sampling_steps <= self.horizon:
            raise ValueError(f"sampling_steps must be in [1, horizon={self.horizon}], got {self.sampling_steps}")
        return self


@dataclass(frozen=True)
class Inferred:
    """Per user, ``horizon`` item indices, most confident first, and their confidences in [0, 1]."""

    items: torch.Tensor  # [B, N] long; -1 where the catalog ran out of allowed items
    confidences: torch.Tensor  # [B, N] float


class InterestDiffusion(torch.nn.Module):
    """Masked-diffusion language model over item semantic IDs: LLaDA loss and constrained low-confidence remasking."""

    item_tokens: torch.Tensor
    item_codes: torch.Tensor
    item_columns: torch.Tensor

    def __init__(
        self,
        tokenizer: SemanticIdTokenizer,
        config: DiffusionConfig | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.config = config or DiffusionConfig()
        c, levels = self.config, tokenizer.num_levels
        self.vocab_size = tokenizer.user_offset  # specials + every level's codes; no user tokens
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.token_embedding = torch.nn.Embedding(self.vocab_size, c.d_model, padding_idx=PAD)
            self.slot_embedding = torch.nn.Embedding(c.max_history + c.horizon, c.d_model)
            self.level_embedding = torch.nn.Embedding(levels, c.d_model)
            layer = torch.nn.TransformerEncoderLayer(
                c.d_model, c.num_heads, c.d_ff, c.dropout, activation="gelu", batch_first=True, norm_first=True
            )
            self.encoder = torch.nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
            self.norm = torch.nn.LayerNorm(c.d_model)
            # one head per level over that level's codes only: a masked token of level l is one of them
            self.heads = torch.nn.ModuleList(torch.nn.Linear(c.d_model, width) for width in tokenizer.codes_per_level)
        table = tokenizer.target_table
        self.register_buffer("item_tokens", table.clone(), persistent=False)  # [I, L] input tokens, -1: no item
        codes = table - torch.tensor(tokenizer.offsets)
        self.register_buffer("item_codes", codes.masked_fill(table < 0, -1), persistent=False)  # [I, L] codes
        columns = codes + torch.tensor([0, *itertools.accumulate(tokenizer.codes_per_level)][:levels])
        # [I, L]: each code's column among all levels' codes; absent items' rows are masked by the sampler
        self.register_buffer("item_columns", columns.masked_fill(table < 0, 0), persistent=False)
        self._known: list[bool] = (table[:, 0] >= 0).tolist()
        self.to(device or default_device())

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def num_levels(self) -> int:
        return self.tokenizer.num_levels

    def prompt(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Tokens [B, H + N, L]: the last H known history items right-aligned, then a masked block."""
        c = self.config
        items = torch.full((len(histories), c.max_history), -1, dtype=torch.long)
        for row, history in enumerate(histories):
            known = [item for item in history if 0 <= item < len(self._known) and self._known[item]][-c.max_history :]
            items[row, c.max_history - len(known) :] = torch.tensor(known, dtype=torch.long)
        items = items.to(self.device)
        tokens = self.item_tokens[items.clamp(min=0)].masked_fill((items < 0).unsqueeze(-1), PAD)
        block = torch.full((len(histories), c.horizon, self.num_levels), MASK, dtype=torch.long, device=self.device)
        return torch.cat([tokens, block], dim=1)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per level, the log-probabilities of the block's codes at that level [B, N, codes of the level]."""
        c = self.config
        codes = self.token_embedding(tokens) + self.level_embedding.weight  # [B, S, L, d]: a mask differs per level
        hidden = codes.sum(2) + self.slot_embedding.weight
        hidden = self.encoder(hidden, src_key_padding_mask=tokens[..., 0] == PAD)
        block = self.norm(hidden[:, c.max_history :])
        return [head(block).log_softmax(-1) for head in self.heads]

    def loss(self, histories: Sequence[Sequence[int]], futures: Sequence[Sequence[int]]) -> torch.Tensor:
        """LLaDA's objective on one batch: 1/t-weighted cross-entropy of the masked future tokens.

        Future slots beyond a user's known future stay masked and carry no loss, as at inference, where the
        whole block is masked. Normalised per example by its number of future tokens.
        """
        c = self.config
        tokens = self.prompt(histories)
        padded = torch.full((len(futures), c.horizon), -1, dtype=torch.long)
        for row, future in enumerate(futures):
            known = [item for item in future if 0 <= item < self.item_tokens.size(0)][: c.horizon]
            padded[row, : len(known)] = torch.tensor(known, dtype=torch.long)
        padded = padded.to(self.device)
        targets = self.item_tokens[padded.clamp(min=0)].masked_fill((padded < 0).unsqueeze(-1), -1)  # [B, N, L]
        codes = self.item_codes[padded.clamp(min=0)]
        real = targets >= 0
        t = torch.rand(len(futures), 1, 1, device=self.device).clamp(min=1e-3)
        masked = real & (torch.rand(targets.shape, device=self.device) < t)
        tokens[:, c.max_history :] = torch.where(real & ~masked, targets, tokens[:, c.max_history :])
        nll = -torch.stack(
            [
                log_probs.gather(-1, codes[..., level].clamp(min=0).unsqueeze(-1)).squeeze(-1)
                for level, log_probs in enumerate(self(tokens))
            ],
            dim=-1,
        )  # [B, N, L]
        per_example = nll.where(masked, 0.0).sum((1, 2)) / t.flatten() / real.sum((1, 2)).clamp(min=1)
        return per_example[real.flatten(1).any(1)].mean()

    @torch.inference_mode()
    def infer(self, histories: Sequence[Sequence[int]], steps: int | None = None) -> Inferred:
        """``horizon`` beyond-log items per user by low-confidence remasking over ``steps`` passes.

        Pass ``s`` commits slots until ``ceil(N * s / steps)`` are committed, most confident first; each
        commit removes its item from every other slot of that user. ``histories`` may hold items unknown to the
        model (they are skipped); every history item is excluded from the answer.
        """
        steps = steps or self.config.sampling_steps
        if not 1 <= steps <= self.config.horizon:
            raise ValueError(f"steps must be in [1, {self.config.horizon}], got {steps}")
        was_training = self.training
        self.eval()
        try:
            return self._sample(histories, steps)
        finally:
            self.train(was_training)

    def _sample(self, histories: Sequence[Sequence[int]], steps: int) -> Inferred:
        c = self.config
        size, horizon = len(histories), c.horizon
        tokens = self.prompt(histories)
        # Built on the host and moved once: indexing a device tensor row by row costs a transfer per user.
        allowed = torch.tensor(self._known).repeat(size, 1)  # [B, I]
        seen = [
            (row, item) for row, history in enumerate(histories) for item in history if 0 <= item < len(self._known)
        ]
        if seen:
            allowed[tuple(torch.tensor(seen).T)] = False
        allowed = allowed.to(self.device)
        rows = torch.arange(size, device=self.device)
        items = torch.full((size, horizon), -1, dtype=torch.long, device=self.device)
        confidences = torch.zeros((size, horizon), device=self.device)
        open_slots = torch.ones((size, horizon), dtype=torch.bool, device=self.device)
        committed = 0
        for step in range(1, steps + 1):
            target = math.ceil(horizon * step / steps) if step < steps else horizon
            picks = target - committed
            scores = self._item_scores(self(tokens)).masked_fill_(~allowed.unsqueeze(1), float("-inf"))  # [B, N, I]
            log_norm = scores.logsumexp(-1, keepdim=True)  # [B, N, 1]
            # A pass commits at most `picks` items per user, so each slot's best item still allowed after any of
            # them is among its top picks + 1; the softmax over what stays allowed is the pass-start probability
            # divided by the mass that stays, so the full catalog is scored once per pass, not once per commit.
            top_scores, top_items = scores.topk(min(picks + 1, scores.size(-1)), dim=-1)  # [B, N, k]
            top_probs = (top_scores - log_norm).exp().nan_to_num(0.0)
            taken = torch.zeros((size, horizon), device=self.device)  # pass-start mass of this pass's commits
            for _ in range(picks):
                live = top_probs.where(allowed.gather(1, top_items.flatten(1)).view_as(top_items), 0.0)
                best_prob, best_at = live.max(-1)  # [B, N]
                best_item = top_items.gather(-1, best_at.unsqueeze(-1)).squeeze(-1)
                # the lower bound keeps float rounding from lifting a probability above one when little mass stays
                best_prob = (best_prob / torch.maximum(1.0 - taken, live.sum(-1))).nan_to_num(0.0)
                best_prob = best_prob.masked_fill(~open_slots, -1.0)
                slot = best_prob.argmax(-1)  # [B]
                prob, item = best_prob[rows, slot], best_item[rows, slot]
                found = prob > 0
                order = horizon - open_slots.sum(1)  # commits so far: the output position
                items[rows[found], order[found]] = item[found]
                confidences[rows[found], order[found]] = prob[found]
                open_slots[rows, slot] = False
                allowed[rows[found], item[found]] = False
                tokens[rows[found], c.max_history + slot[found]] = self.item_tokens[item[found]]
                taken[rows[found]] += (scores[rows[found], :, item[found]] - log_norm[rows[found], :, 0]).exp()
            committed = target
        order = confidences.argsort(
            dim=-1, descending=True, stable=True
        )  # a later pass may be surer than an earlier one
        return Inferred(items.gather(1, order).cpu(), confidences.gather(1, order).cpu())

    def _item_scores(self, log_probs: list[torch.Tensor]) -> torch.Tensor:
        """Log-probability of every catalog item in every slot [B, N, I]: the sum of its levels' code log-probs.

        One ``embedding_bag`` over the concatenated levels, with the slots as the embedding dimension, then one
        transposing copy: about four times faster on CPU than gathering and adding a [B, N, I] tensor per level.
        """
        size, horizon = log_probs[0].shape[:2]
        table = torch.cat(log_probs, -1).flatten(0, 1).T.contiguous()  # [all codes, B * N]
        scores = torch.nn.functional.embedding_bag(self.item_columns, table, mode="sum")  # [I, B * N]
        return scores.T.contiguous().view(size, horizon, -1)

    def save(self, directory: str | Path) -> None:
        """Write config.json (model config and semantic-ID table) and model.safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"config": self.config.model_dump(), "tokenizer": self.tokenizer.to_json()}
        (directory / "config.json").write_text(json.dumps(meta))
        save_model(self, str(directory / "model.safetensors"))

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str | None = None) -> InterestDiffusion:
        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text())
        model = cls(SemanticIdTokenizer.from_json(meta["tokenizer"]), DiffusionConfig(**meta["config"]), device)
        load_model(model, str(directory / "model.safetensors"), device=str(model.device))
        return model.eval()


def training_windows(
    sequences: Sequence[Sequence[int]], max_history: int, horizon: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Every cut of every sequence into (the ``max_history`` items before it, the ``horizon`` items from it)."""
    histories, futures = [], []
    for sequence in sequences:
        for cut in range(1, len(sequence)):
            histories.append(list(sequence[max(0, cut - max_history) : cut]))
            futures.append(list(sequence[cut : cut + horizon]))
    return histories, futures
