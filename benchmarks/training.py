"""`make bench-training`: what an epoch of TIGER training costs, the old way and the new, side by side in one run.

On a dataset's published semantic IDs and leave-one-out training prefixes (Beauty by default), for each ranker size:
- ``before``: one example per prefix, random batches padded to their longest row, the stock T5 forward (how training
  ran before);
- ``prefix``: the same examples in batches cut by length, through the ranker's own passes (fused attention);
- ``one_pass``: causal history attention, every target of a sequence window in one pass, batches cut by length.

Each mode trains ``--batches`` batches of an epoch's shuffled batch list (AdamW; bf16 autocast on CUDA) after two
warm-up steps; targets per second and the epoch's seconds follow from them. A profile of a few steps of each mode
gives the share of time in matrix arithmetic (the model's own work) and the top operators. Results:
``benchmarks/results/training-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import DATA, machine
from benchmarks.sizes import RANKER_SIZES
from models.device import default_device, mixed_precision
from models.ranker_inputs import CollatedExamples, TigerBatch
from models.semantic_ids import SemanticIdTable, load_published_ids
from models.tiger import TigerRanker
from models.tokenizer import SemanticIdTokenizer
from training.batches import length_batches
from training.datasets import leave_one_out, load_dataset

MODES = ("before", "prefix", "one_pass")
# operators that are the model's own arithmetic; the rest is the framework's overhead, copies and masking
ARITHMETIC = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product",
    "aten::linear",
    "aten::matmul",
)


def stock_loss(ranker: TigerRanker, batch: TigerBatch) -> torch.Tensor:
    """The loss as training computed it before: Hugging Face's T5 forward, one target per row."""
    return ranker.model(
        inputs_embeds=ranker._inputs_embeds(batch), attention_mask=batch.attention_mask, labels=batch.labels
    ).loss


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_batches(mode: str, examples: CollatedExamples, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    if mode == "before":
        order = rng.permutation(len(examples))
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return length_batches(examples.lengths, examples.target_counts, batch_size, rng)


def measure(
    mode: str,
    size: str,
    users: list[str],
    histories: list[list[int]],
    targets: list[int],
    tokenizer: SemanticIdTokenizer,
    args: argparse.Namespace,
) -> dict[str, object]:
    """Train ``args.batches`` batches of one mode; its rates, the epoch's estimated seconds and a short profile."""
    device = default_device()
    config = RANKER_SIZES[size].model_copy(
        update={"history_attention": "causal" if mode == "one_pass" else "bidirectional"}
    )
    ranker = TigerRanker(tokenizer, config, device)
    started = time.perf_counter()
    examples = ranker.training_examples(users, histories, targets)
    collate_seconds = time.perf_counter() - started
    optimiser = torch.optim.AdamW(ranker.parameters(), lr=1e-3)
    loss_of: Callable[[TigerBatch], torch.Tensor] = (
        (lambda batch: stock_loss(ranker, batch)) if mode == "before" else ranker.loss
    )
    batches = epoch_batches(mode, examples, args.batch_size, np.random.default_rng(0))

    def step(rows: np.ndarray) -> None:
        with mixed_precision(device):
            loss = loss_of(examples.select(rows))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    ranker.train()
    for rows in batches[:2]:
        step(rows)
    chosen = batches[2 : 2 + args.batches]
    synchronise(device)
    started = time.perf_counter()
    for rows in chosen:
        step(rows)
    synchronise(device)
    seconds = time.perf_counter() - started
    trained = int(sum(examples.target_counts[rows].sum() for rows in chosen))
    tokens = int(sum(examples.lengths[rows].max() * len(rows) for rows in chosen))
    real = int(sum(examples.lengths[rows].sum() for rows in chosen))
    with profile(
        activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device.type == "cuda" else [])]
    ) as profiler:
        for rows in batches[2 : 2 + args.profile_batches]:
            step(rows)
        synchronise(device)
    events = profiler.key_averages()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(event, attribute) for event in events) or 1.0
    arithmetic = sum(getattr(event, attribute) for event in events if event.key.startswith(ARITHMETIC))
    top = sorted(events, key=lambda event: getattr(event, attribute), reverse=True)[:6]
    return {
        "rows": len(examples),
        "targets_per_epoch": int(examples.target_counts.sum()),
        "encoder_tokens_per_epoch": int(examples.lengths.sum()),  # unpadded
        "collate_s": round(collate_seconds, 2),
        "batches_timed": len(chosen),
        "targets_per_s": round(trained / seconds, 1),
        "epoch_s": round(int(examples.target_counts.sum()) / (trained / seconds), 1),
        "padding_share": round(1 - real / tokens, 3),
        "arithmetic_share": round(arithmetic / total, 3),
        "top_ops": {event.key: round(getattr(event, attribute) / total, 3) for event in top},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA / "amazon-beauty")
    parser.add_argument("--sizes", nargs="+", choices=list(RANKER_SIZES), default=["compact", "paper"])
    parser.add_argument("--batches", type=int, default=30, help="timed batches per mode")
    parser.add_argument("--profile-batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256, help="targets per batch")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = default_device()
    data = load_dataset(args.data)
    ids = SemanticIdTable.from_published(load_published_ids(next(args.data.glob("*.rqvae-index.json"))))
    tokenizer = SemanticIdTokenizer({int(key): codes for key, codes in ids.ids.items()}, ids.codes_per_level)
    sizes: dict[str, dict[str, object]] = {}
    for size in args.sizes:
        train = leave_one_out(data, RANKER_SIZES[size].max_history).train
        modes = {
            mode: measure(mode, size, train.users, train.histories, train.targets, tokenizer, args) for mode in MODES
        }
        before = modes["before"]["epoch_s"]
        for mode in MODES:
            modes[mode]["speedup_over_before"] = round(before / modes[mode]["epoch_s"], 2)  # type: ignore[operator]
        sizes[size] = modes
        print(json.dumps({size: modes}, indent=2), flush=True)
    result = {
        "dataset": data.name,
        "batch_size": args.batch_size,
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "sizes": sizes,
        "date": date.today().isoformat(),
        "machine": machine(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"training-{device.type}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
