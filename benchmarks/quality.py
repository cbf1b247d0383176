"""`make bench-quality`: the TIGER baseline and SASRec on the public benchmarks, beside the published figures.

Beauty uses the published semantic IDs (``Beauty.rqvae-index.json``) so the ranker is compared with the
TIGER paper's Table 1; Scientific uses our own IDs from item text. SASRec is trained in the same run on the
same split. Each dataset writes ``benchmarks/results/quality-<dataset>.json`` with a list ``rows`` (the
baseline row is named ``tiger``), the device and the training time of each model.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path
from typing import Any

import torch

from models.datasets import leave_one_out, load_dataset
from models.sasrec import SASRecConfig, train_sasrec
from models.train import TrainConfig, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PUBLISHED = {
    "amazon-beauty": {
        "tiger (published, Rajput et al. 2023)": {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384},
        "sasrec (published in the TIGER paper)": {"recall@5": 0.0387, "ndcg@5": 0.0249, "recall@10": 0.0605, "ndcg@10": 0.0318},
    }
}
RUNS = {"amazon-beauty": "published", "amazon-scientific": "rqvae"}


def run_tiger(config: TrainConfig, args: argparse.Namespace) -> dict[str, Any]:
    version = train(config, args.out, args.state)
    metrics = json.loads((version / "metrics.json").read_text())
    return {
        "row": {"name": "tiger", **metrics["test"]},
        "model_version": str(version),
        "device": metrics["device"],
        "train_seconds": metrics["train_seconds"],
        "epochs_run": len(metrics["history"]),
    }


def run_sasrec(config: TrainConfig, args: argparse.Namespace) -> dict[str, Any]:
    data = load_dataset(config.dataset)
    sasrec_config = SASRecConfig(epochs=args.sasrec_epochs, seed=config.seed)
    _, result = train_sasrec(data, leave_one_out(data, sasrec_config.max_length), sasrec_config)
    return {
        "row": {"name": "sasrec", **result["test"]},
        "device": result["device"],
        "train_seconds": result["train_seconds"],
        "epochs_run": result["history"][-1]["epoch"] if result["history"] else 0,
    }


MODELS = {"tiger": run_tiger, "sasrec": run_sasrec}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding the dataset folders")
    parser.add_argument("--datasets", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--sasrec-epochs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("model_store"))
    parser.add_argument("--state", type=Path, default=Path(".state"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        config = TrainConfig(dataset=args.data / name, ids=RUNS[name], epochs=args.epochs, interests=None)
        runs = {model: MODELS[model](config, args) for model in args.models}
        rows = [run.pop("row") for run in runs.values()]
        rows += [{"name": label, **figures} for label, figures in PUBLISHED.get(name, {}).items()]
        result = {
            "dataset": name,
            "rows": rows,
            "runs": runs,  # per model: device, training seconds, epochs run (and the model version for tiger)
            "partial": "tiger" not in runs,  # a run without the baseline row is not the benchmark's table
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "date": date.today().isoformat(),
            "machine": platform.platform(),
        }
        suffix = "" if not result["partial"] else "-" + "-".join(args.models)
        (args.results / f"quality-{name.removeprefix('amazon-')}{suffix}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
