"""SASRec (Kang and McAuley 2018, "Self-Attentive Sequential Recommendation"): the ID-based baseline of TIGER's table.

A causal transformer over item-ID embeddings (shared with the output layer) predicts the next item at every
position. Trained as in the paper with binary cross-entropy against one sampled negative per position (the
TIGER paper's SASRec row comes from that setup); ``loss="ce"`` trains against all items instead. Evaluation is
full ranking over all items, on the same leave-one-out split and metrics as the generative ranker.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from models.device import default_device
from reaseq.progress import progress_bar
from training.datasets import Examples, SequenceData, Split
from training.early_stopping import EarlyStopping
from training.metrics import MetricAccumulator

log = logging.getLogger(__name__)


class SASRecConfig(BaseModel):
    """The paper's setting for the sparse Amazon sets: 2 blocks, 1 head, width 64 (here 2 heads of 32), dropout 0.5."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    max_length: int = 50
    loss: Literal["bce", "ce"] = "bce"
    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 1e-3
    eval_every: int = 5
    patience: int = 5
    eval_batch_size: int = 512
    seed: int = 42


class SASRec(torch.nn.Module):
    def __init__(self, num_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.num_items = num_items
        self.items = torch.nn.Embedding(num_items + 1, config.hidden, padding_idx=0)  # index 0 pads; item i is i + 1
        self.positions = torch.nn.Embedding(config.max_length, config.hidden)
        self.dropout = torch.nn.Dropout(config.dropout)
        layer = torch.nn.TransformerEncoderLayer(
            config.hidden,
            config.heads,
            config.hidden,
            config.dropout,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = torch.nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(config.hidden)
        # small embeddings, as in the reference implementations: PyTorch's N(0, 1) times sqrt(d) swamps the
        # positions and gives huge initial logits
        for embedding in (self.items, self.positions):
            torch.nn.init.normal_(embedding.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, d] of left-padded item sequences [B, L] (0 = padding, items shifted by one)."""
        length = sequences.size(1)
        positions = torch.arange(length, device=sequences.device)
        hidden = self.items(sequences) * self.config.hidden**0.5 + self.positions(positions)
        hidden = self.dropout(hidden) * (sequences > 0).unsqueeze(-1)
        causal = torch.nn.Transformer.generate_square_subsequent_mask(length, device=sequences.device)
        hidden = self.encoder(hidden, mask=causal, is_causal=True)
        return self.norm(hidden)

    @torch.no_grad()
    def scores(self, histories: list[list[int]]) -> torch.Tensor:
        """Scores of every item [B, num_items] as the next item after each history (item indices, oldest first)."""
        hidden = self(left_pad(histories, self.config.max_length, self.items.weight.device))[:, -1]
        return hidden @ self.items.weight[1:].T


def left_pad(rows: list[list[int]], length: int, device: torch.device) -> torch.Tensor:
    """The last ``length`` items of each row, shifted by one (0 pads on the left)."""
    out = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        tail = row[-length:]
        if tail:
            out[index, length - len(tail) :] = torch.tensor(tail) + 1
    return out.to(device)


def training_sequences(data: SequenceData) -> list[list[int]]:
    """Each user's items without the validation and test targets (the leave-one-out protocol)."""
    return [items[:-2] for items in data.sequences.values() if len(items) >= 3]


def loss_of(model: SASRec, batch: torch.Tensor) -> torch.Tensor:
    inputs, targets = batch[:, :-1], batch[:, 1:]
    hidden = model(inputs)
    mask = targets > 0
    if model.config.loss == "ce":
        logits = hidden[mask] @ model.items.weight[1:].T
        return F.cross_entropy(logits, targets[mask] - 1)
    negatives = torch.randint(1, model.num_items + 1, targets.shape, device=targets.device)
    positive = (hidden * model.items(targets)).sum(-1)[mask]
    negative = (hidden * model.items(negatives)).sum(-1)[mask]
    return F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive)) + F.binary_cross_entropy_with_logits(
        negative, torch.zeros_like(negative)
    )


def evaluate(model: SASRec, examples: Examples, batch_size: int) -> dict[str, float]:
    """Recall and NDCG at 5 and 10, ranking the target among all items."""
    model.eval()
    metrics = MetricAccumulator()
    device = model.items.weight.device
    for start in range(0, len(examples), batch_size):
        histories = examples.histories[start : start + batch_size]
        targets = torch.tensor(examples.targets[start : start + batch_size], device=device)
        metrics.add_scores(model.scores(histories), targets)
    return metrics.result()


def train_sasrec(
    data: SequenceData, split: Split, config: SASRecConfig | None = None
) -> tuple[SASRec, dict[str, object]]:
    """Train with early stopping on validation NDCG@10; returns the best model and its test metrics."""
    config = config or SASRecConfig()
    torch.manual_seed(config.seed)
    device = default_device()
    model = SASRec(data.num_items, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.98))
    sequences = left_pad(training_sequences(data), config.max_length + 1, device)
    stopper, best_state, history = EarlyStopping("ndcg@10", config.patience), None, []
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(sequences), generator=generator)
        total = 0.0
        for start in progress_bar(range(0, len(order), config.batch_size), f"sasrec {epoch}/{config.epochs}"):
            loss = loss_of(model, sequences[order[start : start + config.batch_size].to(device)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        stopper.epochs_run = epoch
        if epoch % config.eval_every and epoch != config.epochs:
            continue
        valid = evaluate(model, split.valid, config.eval_batch_size)
        mean_loss = total / max(1, len(order) // config.batch_size)
        history.append({"epoch": epoch, "loss": mean_loss, "valid": valid, "wall_s": round(stopper.seconds, 1)})
        if stopper.check(epoch, valid["ndcg@10"]):
            best_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        elif stopper.converged:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    test = evaluate(model, split.test, config.eval_batch_size)
    return model, {"test": test, "history": history, **stopper.report(), "device": str(device)}
