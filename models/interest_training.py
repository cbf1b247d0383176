"""Training and evaluating the interest diffusion model on the ranker's data and semantic IDs.

The split matches the ranker's leave-one-out protocol: per user with at least three interactions, the last two
items (the ranker's validation and test targets) are the held-out future, and the items before them are both
the training sequence and, at evaluation, the prompt. Nothing held out is ever trained on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from models.datasets import SequenceData
from models.diffusion import DiffusionConfig, InterestDiffusion, training_windows
from models.metrics import set_metrics
from models.progress import progress_bar
from models.store import INTERESTS_DIR
from models.tiger import SemanticIdTokenizer

HELD_OUT = 2


class InterestTrainConfig(BaseModel):
    """Training of the interest model; ``max_minutes`` bounds a CPU run by time as well as by epochs."""

    model_config = ConfigDict(extra="forbid")

    model: DiffusionConfig = DiffusionConfig()
    epochs: int = 30
    max_minutes: float | None = 20.0
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
    split = FutureSplit([], [], [])
    for user, sequence in data.sequences.items():
        if len(sequence) <= held_out:
            continue
        split.users.append(user)
        split.histories.append(sequence[:-held_out])
        split.futures.append(sequence[-held_out:])
    return split


def train_interest_model(
    tokenizer: SemanticIdTokenizer, split: FutureSplit, config: InterestTrainConfig, device: torch.device | str | None = None
) -> tuple[InterestDiffusion, dict[str, object]]:
    """Fit on every window of the training sequences; returns the model and its loss history."""
    torch.manual_seed(config.seed)
    model = InterestDiffusion(tokenizer, config.model, device)
    histories, futures = training_windows(split.histories, config.model.max_history, config.model.horizon)
    if not histories:
        raise ValueError("no training windows: every user needs at least two interactions before the held-out ones")
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    order = np.arange(len(histories))
    started, history = time.monotonic(), []
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
        history.append({"epoch": epoch, "loss": round(total / len(order), 4)})
        tqdm.write(json.dumps(history[-1]))
        if config.max_minutes is not None and time.monotonic() - started > config.max_minutes * 60:
            break
    model.eval()
    return model, {"history": history, "windows": len(histories), "train_seconds": round(time.monotonic() - started, 1)}


def infer_all(
    model: InterestDiffusion, histories: Sequence[Sequence[int]], steps: int | None = None, batch_size: int = 64
) -> list[list[int]]:
    """The inferred items of every history, most confident first (-1 pads); ``steps`` defaults to the model's."""
    ranked: list[list[int]] = []
    for start in progress_bar(range(0, len(histories), batch_size), "inferring interests", "batch"):
        ranked.extend(model.infer(histories[start : start + batch_size], steps).items.tolist())
    return ranked


def evaluate_interests(model: InterestDiffusion, split: FutureSplit, steps: int | None = None, batch_size: int = 64) -> dict[str, float]:
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
