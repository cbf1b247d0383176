"""`make bench-catalog`: what the catalog's size costs the ranking service, at 10,000, 100,000 and 1,000,000 items.

Generative retrieval decodes an item's semantic ID instead of scoring every item, so a request should cost the same
whatever the catalog holds. Synthetic items (clusters in the text encoder's 384 dimensions) get their IDs from one
frozen RQ-VAE, trained once on a sample. Per size, one process builds the version (the RQ-VAE's batched rate, then
the ID writer's rate, one new item at a time as ``workers.item_ids`` assigns them) and a fresh one serves it: loading
the version's ID table and ranker (start-up), the memory that takes, taking one batch of 100 new IDs, and p50/p99 of
top-10 generation and of scoring 100 candidates for one user (compact ranker, one thread). Writes
``benchmarks/results/catalog.json`` and ``catalog.png`` (each figure against catalog size, log-log).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from tqdm import tqdm

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt

from benchmarks.common import machine, percentile
from benchmarks.sizes import RANKER_SIZES
from models.rqvae import RQVAE, RQVAEConfig, train_rqvae
from models.semantic_ids import SemanticIdTable
from models.tiger import TigerRanker
from models.tokenizer import SemanticIdTokenizer

SIZES = [10_000, 100_000, 1_000_000]
DIM = 384  # the default text encoder's width
CLUSTERS = 4096
UPDATE = 100  # new IDs a replica takes in one batch
REQUESTS = 200


def synthetic_items(count: int, seed: int) -> np.ndarray:
    """Item embeddings around fixed cluster centres (the same centres for every size and seed)."""
    centres = np.random.default_rng(0).standard_normal((CLUSTERS, DIM), dtype=np.float32)
    rng = np.random.default_rng(seed)
    items = centres[rng.integers(CLUSTERS, size=count)]
    items += 0.5 * rng.standard_normal(items.shape, dtype=np.float32)
    return items / np.linalg.norm(items, axis=1, keepdims=True)


def frozen_rqvae(path: Path, epochs: int) -> RQVAE:
    """The one RQ-VAE every size uses: trained on a sample once, then read back from ``path``."""
    if not path.exists():
        model = train_rqvae(synthetic_items(20_000, seed=1), RQVAEConfig(epochs=epochs), seed=0, device="cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": model.config.to_json(), "weights": model.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    model = RQVAE(DIM, RQVAEConfig.from_json(saved["config"]))
    model.load_state_dict(saved["weights"])
    return model.eval()


def timed(action: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def rss_mb() -> float:
    """This process's resident memory now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def latencies(action: Any) -> dict[str, float]:
    for _ in range(5):
        action()
    ordered = sorted(timed(action)[1] * 1000 for _ in range(REQUESTS))
    return {"p50_ms": round(percentile(ordered, 50), 2), "p99_ms": round(percentile(ordered, 99), 2)}


def build(size: int, folder: Path, rqvae_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A version over ``size`` items, saved in ``folder``: its IDs from the frozen RQ-VAE, a compact ranker; and the
    ID writer's figures (the RQ-VAE's batched rate, then one new item at a time)."""
    model = frozen_rqvae(rqvae_path, args.rqvae_epochs)
    chunks = [(start, min(100_000, size - start)) for start in range(0, size, 100_000)]
    codes, codes_s = timed(
        lambda: np.concatenate([model.codes(synthetic_items(count, seed=start + 2)) for start, count in chunks])
    )
    table = SemanticIdTable.from_codes(model, codes)
    item_codes = {int(key): codes for key, codes in table.ids.items()}
    tokenizer = SemanticIdTokenizer(item_codes, table.codes_per_level, num_user_buckets=1)
    table.save(folder / "ids")
    TigerRanker(tokenizer, RANKER_SIZES["compact"], device="cpu").save(folder / "ranker")
    new = synthetic_items(args.new_items, seed=size)
    _, assign_s = timed(lambda: [table.assign_new(f"new-{i}", row) for i, row in enumerate(new)])
    new_ids = {size + i: list(table[f"new-{i}"]) for i in range(UPDATE)}  # what a replica takes in one batch
    (folder / "new-ids.json").write_text(json.dumps(new_ids))
    stats = table.stats()
    return {
        "items": size,
        "rqvae_codes_per_s": round(size / codes_s),
        "assign_new_per_s": round(args.new_items / assign_s),
        "codes_per_level": table.codes_per_level,
        "max_items_per_prefix": stats["max_items_per_prefix"],
        "distinct_prefixes": stats["distinct_prefixes"],
    }


def serve(size: int, folder: Path) -> dict[str, Any]:
    """What a serving replica pays for the version saved in ``folder``: loading it (its ID table and ranker), the
    memory that takes, taking one batch of new IDs, and requests."""
    torch.set_num_threads(1)
    before = rss_mb()
    (table, ranker), startup_s = timed(
        lambda: (SemanticIdTable.load(folder / "ids"), TigerRanker.load(folder / "ranker", device="cpu").eval())
    )
    memory = rss_mb() - before
    trie_mb = sum(t.numel() * t.element_size() for t in ranker.tokenizer.trie.tables) / 2**20
    update = {int(index): codes for index, codes in json.loads((folder / "new-ids.json").read_text()).items()}
    _, update_s = timed(lambda: ranker.use_tokenizer(ranker.tokenizer.with_items(update)))
    rng = np.random.default_rng(3)
    history = rng.choice(size, 20, replace=False).tolist()
    candidates = rng.choice(size, 100, replace=False).tolist()
    del table
    return {
        "startup_s": round(startup_s, 3),
        "memory_mb": {"replica_rss": round(memory, 1), "trie_tables": round(trie_mb, 1)},
        "update_100_ids_ms": round(update_s * 1000, 1),
        "top10": latencies(lambda: ranker.recommend(["u"], [history], k=10, beam_size=20)),
        "score100": latencies(lambda: ranker.score(["u"], [history], [candidates])),
    }


def in_process(phase: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """One phase of one size in a fresh process, so its memory and start-up are its own."""
    command = [sys.executable, "-m", "benchmarks.catalog", f"--{phase}", str(size), "--state", str(args.state)]
    command += ["--rqvae-epochs", str(args.rqvae_epochs), "--new-items", str(args.new_items)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout  # errors show
    result: dict[str, Any] = json.loads(output.splitlines()[-1])
    return result


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    sizes = [row["items"] for row in rows]
    panels = {
        "request (ms)": {
            "top-10 p50": [row["top10"]["p50_ms"] for row in rows],
            "top-10 p99": [row["top10"]["p99_ms"] for row in rows],
            "score 100 p50": [row["score100"]["p50_ms"] for row in rows],
            "score 100 p99": [row["score100"]["p99_ms"] for row in rows],
            "take 100 new IDs": [row["update_100_ids_ms"] for row in rows],
        },
        "replica start-up (s)": {"load the version": [row["startup_s"] for row in rows]},
        "memory (MB)": {
            "replica (RSS)": [row["memory_mb"]["replica_rss"] for row in rows],
            "trie tables": [row["memory_mb"]["trie_tables"] for row in rows],
        },
        "ID assignment (items/s)": {
            "one at a time": [row["assign_new_per_s"] for row in rows],
            "RQ-VAE codes, batched": [row["rqvae_codes_per_s"] for row in rows],
        },
    }
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    for axis, (title, lines) in zip(axes, panels.items(), strict=True):
        for label, values in lines.items():
            axis.plot(sizes, [max(value, 1e-3) for value in values], marker="o", label=label)
        axis.set(xscale="log", yscale="log", xlabel="items in the catalog", title=title)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--rqvae-epochs", type=int, default=30, help="of the one RQ-VAE, trained on 20,000 items")
    parser.add_argument(
        "--new-items", type=int, default=1000, help=f"assigned one at a time after the catalog (at least {UPDATE})"
    )
    parser.add_argument("--state", type=Path, default=Path(".state/bench-catalog"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)  # phases of one size, each in its own process
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rqvae_path = args.state / f"rqvae-epochs{args.rqvae_epochs}.pt"
    if args.build is not None:
        print(json.dumps(build(args.build, args.state / f"catalog-{args.build}", rqvae_path, args)))
        return
    if args.serve is not None:
        print(json.dumps(serve(args.serve, args.state / f"catalog-{args.serve}")))
        return
    frozen_rqvae(rqvae_path, args.rqvae_epochs)
    rows = []
    for size in tqdm(args.sizes, desc="catalog sizes"):
        rows.append({**in_process("build", size, args), **in_process("serve", size, args)})
        tqdm.write(json.dumps(rows[-1]))
    args.results.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "date": datetime.now().isoformat(timespec="seconds"), "machine": machine()}
    (args.results / "catalog.json").write_text(json.dumps(result, indent=2))
    plot(rows, args.results / "catalog.png")
    print(f"wrote {args.results / 'catalog.json'} and catalog.png")


if __name__ == "__main__":
    main()
