"""One table from `bench-quality` runs of the same rows at several seeds (one run per seed, so a long ablation can be
split across sessions and each seed's file kept).

``python -m benchmarks.combine_seeds RESULT.json ... --out benchmarks/results/quality-scientific.json`` writes
``seeds`` (the list), per row the mean and the sample standard deviation over seeds of each metric with each seed's
figures, and per compared pair the mean relative NDCG@10 gain (``relative``) with each seed's paired 95 % interval
(``per_seed``). Every input must be a whole table (the baseline row in it) of the same dataset and configuration.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
# what seeds may not change
SAME = (
    "dataset",
    "size",
    "epochs",
    "eval_every",
    "patience",
    "max_eval_users",
    "batch_size",
    "history_attention",
    "learning_rate",
    "interest_epochs",
    "encoder",
)


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-seed results as one, mean and spread over seeds."""
    first = results[0]
    for result in results:
        differing = [key for key in SAME if result.get(key) != first.get(key)]
        if differing or result.get("partial"):
            raise ValueError(f"seed {result['seeds']['training']}: not the same whole table ({differing or 'partial'})")
    seeds = [result["seeds"]["training"] for result in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed twice: {seeds}")
    trained = {row["name"] for row in first["rows"] if row["name"] in first["runs"]}
    rows = []
    for name in [row["name"] for row in first["rows"]]:
        per_seed = {
            seed: next(row for row in result["rows"] if row["name"] == name)
            for seed, result in zip(seeds, results, strict=True)
        }
        if name not in trained:  # a published figure: the same in every file
            rows.append(per_seed[seeds[0]])
            continue
        row: dict[str, Any] = {"name": name}
        for metric in METRICS:
            values = [per_seed[seed][metric] for seed in seeds]
            row[metric] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["converged"] = [result["runs"][name].get("converged") for result in results]
        row["per_seed"] = {str(seed): {metric: per_seed[seed][metric] for metric in METRICS} for seed in seeds}
        rows.append(row)
    gains = []
    for gain in first["gains"]:
        pair = (gain["row"], gain["baseline"])
        found = [next(g for g in result["gains"] if (g["row"], g["baseline"]) == pair) for result in results]
        gains.append(
            {
                "row": pair[0],
                "baseline": pair[1],
                "metric": gain["metric"],
                "relative": statistics.fmean(g["relative"] for g in found),
                "per_seed": [
                    {"seed": seed, "relative": g["relative"], "ci95": g["ci95"]}
                    for seed, g in zip(seeds, found, strict=True)
                ],
            }
        )
    kept = {key: first.get(key) for key in (*SAME, "preset", "train_minutes", "interest_minutes", "gpu", "machine")}
    return {
        **kept,
        "seeds": seeds,
        "rows": rows,
        "gains": gains,
        "runs": {str(seed): result["runs"] for seed, result in zip(seeds, results, strict=True)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="bench-quality result files, one per seed")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        combined = combine([json.loads(path.read_text()) for path in args.results])
    except (ValueError, KeyError, StopIteration) as error:
        parser.error(f"cannot combine: {error!r}")
    args.out.write_text(json.dumps(combined, indent=2) + "\n")
    for gain in combined["gains"]:
        seeds = ", ".join(f"{s['seed']}: {s['relative']:+.1%} {s['ci95']}" for s in gain["per_seed"])
        print(f"{gain['row']} over {gain['baseline']}: {gain['relative']:+.1%} mean ({seeds})")


if __name__ == "__main__":
    main()
