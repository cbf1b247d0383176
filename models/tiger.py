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

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import T5Config, T5ForConditionalGeneration

from models import t5_passes
from models.beam_search import beam_search, extend_prefixes
from models.device import default_device
from models.ranker_inputs import (
    CollatedExamples,
    SideInputs,
    TigerBatch,
    UserContext,
    collate,
    collate_all,
    collate_sequences,
    pad_rows,
)
from models.t5_passes import Memory
from models.tokenizer import EOS, IGNORE, PAD, SemanticIdTokenizer

SIDE_FILE = "side.safetensors"


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
    # users hashed into this many tokens, one before each history (TIGER's 2,000); 1 gives every user the same
    # token, a start-of-history marker, as the open reproductions that read the history alone
    user_buckets: int = Field(default=2000, ge=1)
    # "causal": each history item reads only the items before it (and the user token), so one encoder pass over a
    # sequence serves all of its targets in training, and no eos closes the history; "bidirectional" is T5's and
    # the paper's. Causal reading leaves no place for per-example side inputs (reasoning steps, beyond-log items).
    history_attention: Literal["bidirectional", "causal"] = "bidirectional"
    seed: int = 0  # weight initialisation
    side: SideInputs = SideInputs()

    @model_validator(mode="after")
    def _causal_reads_only_the_history(self) -> TigerConfig:
        if self.history_attention == "causal" and self.side.per_example:
            raise ValueError(
                "causal history attention takes no per-example side inputs (reasoning steps, beyond-log items)"
            )
        return self


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
                position = torch.nn.Embedding(side.max_steps, width)
                # zeros at first: an N(0, 1) row is a fixed offset larger than the projected step it is added to
                torch.nn.init.zeros_(position.weight)
                self.side["step_position"] = position
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
            self.tokenizer,
            users,
            histories,
            targets,
            self.config.max_history,
            contexts,
            self.config.side,
            self.device,
            self.causal,
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
            return collate_sequences(
                self.tokenizer, users, histories, targets, self.config.max_history, self.config.side, self.device
            )
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
        batch = batch.to(self.device)
        if batch.labels is None:
            raise ValueError("the batch has no targets")
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
            banned = pad_rows(histories, self.device) if exclude_history else None
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
        items = pad_rows(candidates, torch.device("cpu"))
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
                log_probs, past = self._log_probs(tokens, memory, past)  # [B, prefixes, vocab]
                totals += log_probs[torch.arange(size, device=self.device)[:, None], node, targets[..., level]]
                if level + 1 < levels:
                    tokens, node, past = extend_prefixes(node, targets[..., level], log_probs.size(-1), past)
        totals = totals.cpu().masked_fill(~known, float("-inf"))
        return [totals[row, : len(items)] for row, items in enumerate(candidates)]

    def add_items(self, item_codes: Mapping[int, Sequence[int]]) -> None:
        """Make items that arrived after training rankable: a new tokenizer and trie, swapped in whole.

        The vocabulary is unchanged (codes stay within each level's codebook), so the weights serve the new
        items as they are; an item index that exists already keeps its codes.
        """
        self.use_tokenizer(self.tokenizer.with_items(item_codes))

    def use_tokenizer(self, tokenizer: SemanticIdTokenizer) -> None:
        """Swap in a tokenizer (the current one ``with_items``): building it is the slow part, this is quick."""
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
            ranker.side.load_state_dict(
                {name[5:]: value for name, value in tensors.items() if name.startswith("side.")}
            )
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
        if (
            side.reasoning != "none"
            and batch.step_slots is not None
            and batch.steps is not None
            and batch.steps.size(1)
        ):
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

    def _decode(
        self, tokens: torch.Tensor, memory: Memory, past: t5_passes.Cache | None = None
    ) -> tuple[torch.Tensor, t5_passes.Cache]:
        return t5_passes.decode(self.model.decoder, tokens, memory, past)

    def _log_probs(
        self, tokens: torch.Tensor, memory: Memory, past: t5_passes.Cache | None
    ) -> tuple[torch.Tensor, t5_passes.Cache]:
        """One decoder step: log-probabilities over the whole vocabulary after ``tokens`` [B, n, q], and the cache."""
        hidden, past = self._decode(tokens, memory, past)
        return self.model.lm_head(hidden[:, :, -1]).log_softmax(-1), past

    def _beam_search(
        self, memory: Memory, beam_size: int, banned: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tables = [getattr(self, f"trie_level_{level}") for level in range(self.tokenizer.num_levels)]
        return beam_search(
            lambda tokens, past: self._log_probs(tokens, memory, past),
            memory.mask.size(0),
            tables,
            self.tokenizer,
            beam_size,
            banned,
        )
