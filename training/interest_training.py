"""Training and evaluating the interest diffusion model on the ranker's data and semantic IDs.

The split matches the ranker's leave-one-out protocol: per user with at least three interactions, the last two
items (the ranker's validation and test targets) are the held-out future, and the items before them are both
the training sequence and, at evaluation, the prompt. Nothing held out is ever trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from models.diffusion import DiffusionConfig, InterestDiffusion, training_windows
from models.tokenizer import SemanticIdTokenizer
from reaseq.progress import progress_bar
from training.datasets import SequenceData
from training.early_stopping import EarlyStopping
from training.metrics import set_metrics
from training.registry import INTERESTS_DIR

HELD_OUT = 2


class InterestTrainConfig(BaseModel):
    """Training of the interest model; ``max_minutes`` bounds a CPU run by time as well as by epochs."""

    model_config = ConfigDict(extra="forbid")

    model: DiffusionConfig = DiffusionConfig()
    epochs: int = 30
    max_minutes: float | None = 20.0
    patience: int | None = 3  # validation checks without a gain in NDCG before stopping; None: only the budget stops it
    eval_every: int = 1  # epochs between validation checks
    max_eval_users: int | None = 2000  # users sampled for validation: inference, not training, is what it costs
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    eval_batch_size: int = 64
    seed: int = 42


@dataclass(frozen=True)
class FutureSplit:
    users: list[str]
    histories: list[list[int]]  # training sequence = prompt at evaluation, oldest first
    futures: list[list[int]]  # the held-out items that follow


def future_split(data: SequenceData, held_out: int = HELD_OUT) -> FutureSplit:
    """Per user with at least ``held_out + 1`` interactions: everything before the last ``held_out`` items, and them."""
    return _hold_out(data.sequences.items(), held_out)


def _hold_out(sequences: Iterable[tuple[str, list[int]]], held_out: int) -> FutureSplit:
    split = FutureSplit([], [], [])
    for user, sequence in sequences:
        if len(sequence) <= held_out:
            continue
        split.users.append(user)
        split.histories.append(sequence[:-held_out])
        split.futures.append(sequence[-held_out:])
    return split


def train_interest_model(
    tokenizer: SemanticIdTokenizer,
    split: FutureSplit,
    config: InterestTrainConfig,
    device: torch.device | str | None = None,
) -> tuple[InterestDiffusion, dict[str, object]]:
    """Fit on every window of the training sequences less each one's last ``HELD_OUT`` items, which validate it (NDCG
    at the horizon) every ``eval_every`` epochs; stop after ``patience`` checks without a gain, or at the budget, and
    keep the best weights. Returns the model, its history and how it stopped."""
    torch.manual_seed(config.seed)
    model = InterestDiffusion(tokenizer, config.model, device)
    valid = _hold_out(zip(split.users, split.histories, strict=True), HELD_OUT)
    kept = set(valid.users)
    shorter = [history for user, history in zip(split.users, split.histories, strict=True) if user not in kept]
    histories, futures = training_windows(valid.histories + shorter, config.model.max_history, config.model.horizon)
    if not histories:
        raise ValueError("no training windows: every user needs at least two interactions before the held-out ones")
    rng = np.random.default_rng(config.seed)
    sample = np.arange(len(valid.users))
    if config.max_eval_users is not None and len(sample) > config.max_eval_users:
        sample = np.sort(rng.choice(sample, config.max_eval_users, replace=False))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    order = np.arange(len(histories))
    metric = f"ndcg@{config.model.horizon}"
    stopper, history, best_weights = EarlyStopping(metric, config.patience), [], None
    for epoch in range(1, config.epochs + 1):
        model.train()
        rng.shuffle(order)
        total = 0.0
        for start in progress_bar(range(0, len(order), config.batch_size), f"interests {epoch}/{config.epochs}"):
            rows = order[start : start + config.batch_size]
            loss = model.loss([histories[i] for i in rows], [futures[i] for i in rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(rows)
        entry: dict[str, object] = {"epoch": epoch, "loss": round(total / len(order), 4)}
        out_of_time = config.max_minutes is not None and stopper.seconds > config.max_minutes * 60
        if len(sample) and (epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time):
            model.eval()
            ranked = infer_all(model, [valid.histories[i] for i in sample], batch_size=config.eval_batch_size)
            entry[f"valid_{metric}"] = score = round(
                set_metrics(ranked, [valid.futures[i] for i in sample], config.model.horizon)[metric], 5
            )
            if stopper.check(epoch, score):
                best_weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
        stopper.epochs_run = epoch
        history.append(entry)
        tqdm.write(json.dumps(entry))
        if stopper.converged or out_of_time:
            break
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return model, {"history": history, "windows": len(histories), **stopper.report()}


def infer_all(
    model: InterestDiffusion, histories: Sequence[Sequence[int]], steps: int | None = None, batch_size: int = 64
) -> list[list[int]]:
    """The inferred items of every history, most confident first (-1 pads); ``steps`` defaults to the model's."""
    ranked: list[list[int]] = []
    for start in progress_bar(range(0, len(histories), batch_size), "inferring interests", "batch"):
        ranked.extend(model.infer(histories[start : start + batch_size], steps).items.tolist())
    return ranked


def evaluate_interests(
    model: InterestDiffusion, split: FutureSplit, steps: int | None = None, batch_size: int = 64
) -> dict[str, float]:
    """Hit rate, recall and NDCG at the horizon of the inferred items against each user's held-out future."""
    ranked = infer_all(model, split.histories, steps, batch_size)
    return set_metrics(ranked, split.futures, model.config.horizon)


def train_and_save(
    tokenizer: SemanticIdTokenizer, data: SequenceData, config: InterestTrainConfig, version_dir: Path
) -> dict[str, object]:
    """Train on ``data``, evaluate on its held-out futures, save to ``<version_dir>/interests/``; returns the metrics."""
    split = future_split(data)
    model, training = train_interest_model(tokenizer, split, config)
    model.save(version_dir / INTERESTS_DIR)
    metrics = {"test": evaluate_interests(model, split, batch_size=config.eval_batch_size), **training}
    (version_dir / INTERESTS_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
