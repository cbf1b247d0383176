"""Non-neural baselines on the leave-one-out split, the reference a trained ranker must beat: popularity, and
item-to-item co-occurrence (the items that came right before or after the user's last items in the training
sequences).

Both rank every item for every validation and test user, ties counting against the target, as the rankers'
full-ranking figures do. They show how hard each part of the split is: the same scorer on validation and on test
says how much of a ranker's valid-test gap is the data's.

``python -m benchmarks.baselines`` (what ``make bench-baselines`` runs) writes
``benchmarks/results/baselines.json``.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.common import DATA, machine
from training.datasets import Examples, Split, leave_one_out, load_dataset
from training.metrics import MetricAccumulator

RESULTS = Path(__file__).parent / "results" / "baselines.json"
RECENT = 3  # history items a co-occurrence score reads, the newest weighing most
CHUNK = 2048  # users scored at a time: a dense [users, items] block


def transitions(split: Split) -> sp.csr_matrix:
    """Counts of item pairs adjacent in the training sequences, in either order."""
    rows = np.array([history[-1] for history in split.train.histories], dtype=np.int64)
    cols = np.array(split.train.targets, dtype=np.int64)
    ones = np.ones(len(rows), dtype=np.float32)
    counts = sp.coo_matrix((ones, (rows, cols)), shape=(split.num_items, split.num_items)).tocsr()
    return (counts + counts.T).tocsr()


def popularity(split: Split) -> np.ndarray:
    """Training targets per item, scaled below one count so that it only breaks ties."""
    counts = np.bincount(np.array(split.train.targets), minlength=split.num_items).astype(np.float64)
    return counts / (counts.max() + 1.0)


def evaluate(part: Examples, split: Split, pairs: sp.csr_matrix | None) -> dict[str, float]:
    """Recall and NDCG of popularity (``pairs`` None) or co-occurrence with popularity breaking ties."""
    prior = popularity(split)
    accumulator = MetricAccumulator()
    for start in range(0, len(part), CHUNK):
        histories = part.histories[start : start + CHUNK]
        scores = np.tile(prior, (len(histories), 1))
        if pairs is not None:
            weights = sp.lil_matrix((len(histories), split.num_items), dtype=np.float32)
            for row, history in enumerate(histories):
                for age, item in enumerate(reversed(history[-RECENT:])):
                    weights[row, item] += 1.0 / (age + 1)
            scores += (weights.tocsr() @ pairs).toarray()
        targets = torch.tensor(part.targets[start : start + CHUNK])
        accumulator.add_scores(torch.from_numpy(scores), targets)
    return accumulator.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty", "amazon-scientific"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    report: dict[str, object] = {"date": date.today().isoformat(), "machine": machine(), "recent_items": RECENT}
    for name in args.datasets:
        path = args.data / name if (args.data / name).exists() else Path(name)
        split = leave_one_out(load_dataset(path))
        pairs = transitions(split)
        rows = {}
        for scorer, matrix in (("popularity", None), ("co-occurrence", pairs)):
            rows[scorer] = {part: evaluate(getattr(split, part), split, matrix) for part in ("valid", "test")}
            valid, test = rows[scorer]["valid"]["ndcg@10"], rows[scorer]["test"]["ndcg@10"]
            print(f"{name} {scorer}: NDCG@10 valid {valid:.4f}, test {test:.4f} (test / valid {test / valid:.2f})")
        report[name] = rows
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
