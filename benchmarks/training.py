"""`make bench-training`: what a training batch costs, input preparation against the model's step.

On Scientific's published semantic IDs and training prefixes, with the full model's encoder layout (four step
vectors and ten beyond-log items per example, random values: the cost does not depend on them), it times per
batch: ``collate`` (tokenize and pad the batch's examples, then move them to the device, as training did before
collating once), ``select`` (a row selection of the examples collated once, as training does now) and one
training step (forward, backward, AdamW). Side by side in one run, on whatever device torch picks. Results:
``benchmarks/results/training-<size>-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from benchmarks.common import DATA, machine
from benchmarks.sizes import RANKER_SIZES
from models.datasets import leave_one_out, load_dataset
from models.device import default_device
from models.semantic_ids import SemanticIdTable, load_published_ids
from models.tiger import SemanticIdTokenizer, TigerBatch, TigerRanker, UserContext
from models.train import FULL

T = TypeVar("T")


def timed(device: torch.device, work: Callable[..., T], *args: object) -> tuple[T, float]:
    """What ``work(*args)`` returns and its seconds, waiting for the device's queued kernels on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    value = work(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA / "amazon-scientific")
    parser.add_argument("--size", choices=list(RANKER_SIZES), default="paper")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = default_device()
    data = load_dataset(args.data)
    train = leave_one_out(data, RANKER_SIZES[args.size].max_history).train
    ids = SemanticIdTable.from_published(load_published_ids(next(args.data.glob("*.rqvae-index.json"))))
    tokenizer = SemanticIdTokenizer({int(key): codes for key, codes in ids.ids.items()}, ids.codes_per_level)
    ranker = TigerRanker(tokenizer, RANKER_SIZES[args.size].model_copy(update={"side": FULL}), device)
    ranker.set_item_vectors(torch.zeros(data.num_items, FULL.vector_dim))
    rng = np.random.default_rng(0)
    contexts = [
        UserContext(rng.standard_normal((FULL.max_steps, FULL.vector_dim), dtype=np.float32), rng.integers(0, data.num_items, 10).tolist())
        for _ in train.targets
    ]
    optimiser = torch.optim.AdamW(ranker.parameters())
    examples, collate_once = timed(device, ranker.collate_all, train.users, train.histories, train.targets, contexts)

    def step(batch: TigerBatch) -> None:
        optimiser.zero_grad()
        ranker.loss(batch).backward()
        optimiser.step()

    seconds: dict[str, list[float]] = {"collate": [], "select": [], "step": []}
    ranker.train()
    for _ in range(args.batches):
        rows = rng.choice(len(train.targets), args.batch_size, replace=False)
        _, collated = timed(
            device, ranker.batch,
            [train.users[i] for i in rows], [train.histories[i] for i in rows], [train.targets[i] for i in rows], [contexts[i] for i in rows],
        )
        batch, selected = timed(device, examples.select, rows)
        _, stepped = timed(device, step, batch)
        for name, value in (("collate", collated), ("select", selected), ("step", stepped)):
            seconds[name].append(value)
    median = {name: float(np.median(values)) * 1000 for name, values in seconds.items()}
    result = {
        "dataset": data.name,
        "examples": len(train.targets),
        "size": args.size,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "median_ms": {name: round(value, 2) for name, value in median.items()},
        "collate_all_seconds": round(collate_once, 2),
        "collate_over_select": round(median["collate"] / median["select"], 1),
        "batch_before_over_after": round((median["collate"] + median["step"]) / (median["select"] + median["step"]), 3),
        "date": date.today().isoformat(),
        "machine": machine(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"training-{args.size}-{device.type}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
