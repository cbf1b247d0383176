"""`make bench-interest`: what the diffusion model's beyond-log interests add, and how fast it infers them.

One run trains a model version (semantic IDs, the TIGER ranker, the interest model) on Scientific, then, on each
user's held-out future (the last two items, never trained on), compares the inferred items with a popularity
baseline and the ranker's own top-N: hit rate, recall and NDCG at N, semantic consistency with the history
(MiniLM item-text embeddings) and novelty (share of items whose leaf category is absent from the history). It also
reports what the interests add to the ranker's list (the union against the ranker's top-2N, same list size)
and inference throughput in users per second at batch sizes 1, 8 and 32 against the number of sampling steps.
Results: ``benchmarks/results/interest.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import DATA, machine
from benchmarks.sizes import RANKER_SIZES
from models.diffusion import InterestDiffusion
from models.text_encoder import DEFAULT_MODEL, TextEncoder
from training.artifact import ModelArtifact
from training.datasets import SequenceData, load_dataset
from training.interest_training import InterestTrainConfig, future_split, infer_all
from training.metrics import novelty, semantic_consistency, set_metrics
from training.registry import INTERESTS_DIR
from training.train import TrainConfig, train

console = Console()


def popularity_lists(data: SequenceData, histories: list[list[int]], n: int) -> list[list[int]]:
    """The most frequent training items, minus each user's history."""
    counts = Counter(item for history in histories for item in history)
    ranked = [item for item, _ in counts.most_common(n + max(map(len, histories)))]
    return [[item for item in ranked if item not in seen][:n] for seen in map(set, histories)]


def ranker_lists(
    artifact: ModelArtifact, users: list[str], histories: list[list[int]], n: int, batch: int = 256
) -> list[list[int]]:
    lists: list[list[int]] = []
    for start in range(0, len(users), batch):
        items, _ = artifact.ranker.recommend(
            users[start : start + batch],
            histories[start : start + batch],
            k=n,
            beam_size=max(20, n),
            exclude_history=True,
        )
        lists.extend(items.tolist())
    return lists


def throughput(model: InterestDiffusion, histories: list[list[int]], seconds: float) -> list[dict[str, Any]]:
    cells = []
    for steps in sorted({1, 2, model.config.sampling_steps, model.config.horizon}):
        for batch in (1, 8, 32):
            chunks = [histories[i : i + batch] for i in range(0, len(histories) - batch + 1, batch)]
            model.infer(chunks[0], steps)  # warm-up
            done, started, index = 0, time.perf_counter(), 0
            while time.perf_counter() - started < seconds:
                model.infer(chunks[index % len(chunks)], steps)
                done, index = done + batch, index + 1
            cells.append(
                {"steps": steps, "batch": batch, "users_per_s": round(done / (time.perf_counter() - started), 1)}
            )
            console.print(f"steps {steps:>2}, batch {batch:>2}: {cells[-1]['users_per_s']} users/s")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "amazon-scientific")
    parser.add_argument("--version", type=Path, help="Evaluate this trained model version instead of training one.")
    parser.add_argument("--ranker-epochs", type=int, default=10)
    parser.add_argument("--interest-minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=3.0, help="Per throughput cell.")
    parser.add_argument("--out", type=Path, default=Path(".state/bench-interest/store"))
    parser.add_argument("--state", type=Path, default=Path(".state/bench-interest"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset(args.dataset)
    started = time.monotonic()
    version = args.version or train(
        TrainConfig(
            dataset=args.dataset,
            ids="published",
            ranker=RANKER_SIZES["compact"],
            epochs=args.ranker_epochs,
            eval_every=2,
            max_eval_users=1000,
            interests=InterestTrainConfig(epochs=100, max_minutes=args.interest_minutes),
        ),
        args.out,
        args.state,
    )
    train_seconds = round(time.monotonic() - started, 1)
    artifact = ModelArtifact.load(version)
    model = InterestDiffusion.load(version / INTERESTS_DIR, "cpu")
    n = model.config.horizon
    split = future_split(data)
    console.print(f"{data.name}: {len(split.users)} users; evaluating at N = {n}")

    lists = {
        "interests": infer_all(model, split.histories, model.config.sampling_steps),
        "popularity": popularity_lists(data, split.histories, n),
        "ranker": ranker_lists(artifact, split.users, split.histories, 2 * n),
    }
    ranker_top = [items[:n] for items in lists["ranker"]]
    union = [
        top + [item for item in inferred if item not in top]
        for top, inferred in zip(ranker_top, lists["interests"], strict=True)
    ]
    embeddings = torch.from_numpy(
        TextEncoder(DEFAULT_MODEL, cache_dir=args.state / "embeddings").encode(
            [data.item_text[i] for i in range(data.num_items)], progress=True
        )  # type: ignore[index]
    )
    # the leaf (most specific) category: every Scientific item shares the top level, which would make novelty 0
    categories = {item: names[-1:] for item, names in data.item_categories.items()}

    def row(name: str, ranked: list[list[int]], k: int) -> dict[str, Any]:
        figures = set_metrics(ranked, split.futures, k)
        return {
            "name": name,
            "list_size": k,
            **{key.replace(f"@{k}", "@N"): round(value, 4) for key, value in figures.items()},
            "consistency": round(semantic_consistency([r[:k] for r in ranked], split.histories, embeddings), 4),
            "novelty": round(novelty([r[:k] for r in ranked], split.histories, categories), 4),
        }

    rows = [
        row("interests (masked diffusion)", lists["interests"], n),
        row("popularity", lists["popularity"], n),
        row("ranker top-N (TIGER)", ranker_top, n),
        row("ranker top-N + interests", union, 2 * n),
        row("ranker top-2N (same list size)", lists["ranker"], 2 * n),
    ]
    beyond = sum(len(set(i) - set(t)) for i, t in zip(lists["interests"], ranker_top, strict=True)) / max(
        1, sum(map(len, lists["interests"]))
    )
    table = Table(title=f"beyond-log interests on {data.name}, N = {n}, {len(split.users)} users")
    for column in ("list", "size", "hit rate", "recall", "ndcg", "consistency", "novelty"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            str(r["list_size"]),
            *(f"{r[key]:.4f}" for key in ("hit_rate@N", "recall@N", "ndcg@N", "consistency", "novelty")),
        )
    console.print(table)
    cells = throughput(model, split.histories, args.seconds)
    default_steps = model.config.sampling_steps
    result = {
        "benchmark": "interest",
        "date": date.today().isoformat(),
        "command": "make bench-interest",
        "machine": machine(),
        "device": "cpu",
        "dataset": data.name,
        "users": len(split.users),
        "held_out_per_user": 2,
        "n": n,
        "model_version": str(version),
        "model": model.config.model_dump(),
        "train_seconds": train_seconds,
        "interest_training": json.loads((version / INTERESTS_DIR / "metrics.json").read_text()),
        "ranker_test": json.loads((version / "metrics.json").read_text())["test"],
        "rows": rows,
        "interests_not_in_ranker_top_n": round(beyond, 4),
        "throughput": cells,
        "sampling_steps_default": default_steps,
        "users_per_s_batch32": next(
            c["users_per_s"] for c in cells if c["batch"] == 32 and c["steps"] == default_steps
        ),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "interest.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"users/s at batch 32, {default_steps} steps: {result['users_per_s_batch32']} (target 100)")


if __name__ == "__main__":
    main()
