"""`make bench-quality`: the ablation of the distilled ranker and SASRec on the public benchmarks, beside the
published figures.

Rows, on the same split and seeds: ``tiger`` (the baseline), ``knowledge`` (IDs from knowledge-enriched text and
item knowledge vectors), ``cot_pooled`` (reasoning steps pooled into one vector), ``cot_structured`` (the steps
as ordered step tokens), ``beyond_log`` (inferred beyond-log items as a second segment), ``full`` (all of them,
the model Triton serves), and ``sasrec``. Beauty has no item text, so the rows that need it are skipped there
with the reason; it uses the published semantic IDs (``Beauty.rqvae-index.json``) so the baseline compares
with the TIGER paper's Table 1. Scientific uses our own IDs. ``--datasets PATH`` measures any LC-Rec or S3-Rec
folder the same way (an S3-Rec folder's item text is an LC-Rec ``*.item.json`` keyed by 0-based index). Each dataset writes
``benchmarks/results/quality-<dataset>.json`` with ``rows``, ``gains`` (each addition's NDCG@10 against TIGER,
and structured against pooled, with paired-bootstrap 95% intervals over the test users), the device and training
time of every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import DATA
from benchmarks.plots import write_quality_plots
from benchmarks.sizes import PRESETS, RANKER_SIZES
from models.text_encoder import DEFAULT_MODEL
from models.tiger import TigerConfig
from training.datasets import leave_one_out, load_dataset
from training.errors import DatasetError
from training.interest_training import InterestTrainConfig
from training.metrics import mean_interval, metric_values, relative_gain
from training.sasrec import SASRecConfig, train_sasrec
from training.train import NEEDS_TEXT, SCHEDULES, TEST_RANKS_FILE, VARIANTS, TrainConfig, train, with_variant

PUBLISHED = {
    "amazon-beauty": {
        "tiger (published, Rajput et al. 2023)": {
            "recall@5": 0.0454,
            "ndcg@5": 0.0321,
            "recall@10": 0.0648,
            "ndcg@10": 0.0384,
        },
        "sasrec (published in the TIGER paper)": {
            "recall@5": 0.0387,
            "ndcg@5": 0.0249,
            "recall@10": 0.0605,
            "ndcg@10": 0.0318,
        },
    }
}
RUNS = {"amazon-beauty": "published", "amazon-scientific": "rqvae"}
# (row, baseline) pairs whose NDCG@10 is compared user by user: every addition against TIGER, and the issue's
# structure-preserving against structure-collapsing transfer.
COMPARED = [*((row, "tiger") for row in VARIANTS if row != "tiger"), ("cot_structured", "cot_pooled")]


def run_variant(name: str, config: TrainConfig, args: argparse.Namespace) -> dict[str, Any]:
    version = train(with_variant(config, name), args.out, args.state)
    metrics = json.loads((version / "metrics.json").read_text())
    return {
        "row": {"name": name, **metrics["test"]},
        "side_inputs": metrics.get("side_inputs"),
        "model_version": str(version),
        "device": metrics["device"],
        "train_seconds": metrics["train_seconds"],
        **stopped(metrics),
        "validation_share": metrics["validation_share"],  # of the ranker's training wall time
        "history": metrics["history"],
    }


def stopped(training: dict[str, Any]) -> dict[str, Any]:
    """How a ranker's training stopped: converged (patience) or not (a budget), epochs run, the best one, wall time."""
    return {key: training[key] for key in ("converged", "epochs_run", "best_epoch", "wall_s")}


def run_sasrec(config: TrainConfig, args: argparse.Namespace) -> dict[str, Any]:
    data = load_dataset(config.dataset)
    sasrec_config = SASRecConfig(epochs=args.sasrec_epochs, seed=config.seed)
    _, result = train_sasrec(data, leave_one_out(data, sasrec_config.max_length), sasrec_config)
    return {
        "row": {"name": "sasrec", **result["test"]},
        "device": result["device"],
        "train_seconds": result["wall_s"],
        **stopped(result),
        "history": result["history"],
    }


def run_model(model: str, config: TrainConfig, args: argparse.Namespace) -> dict[str, Any]:
    return run_sasrec(config, args) if model == "sasrec" else run_variant(model, config, args)


def run_all(
    tasks: list[tuple[str, str, TrainConfig]], args: argparse.Namespace
) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    """Each (dataset, model) run as it finishes: one after another, or ``--jobs`` at a time in processes of their own,
    since one small ranker leaves most of a GPU idle. The runs are independent: the same split and seeds either way."""
    if args.jobs == 1:
        for dataset, model, config in tasks:
            yield (dataset, model), run_model(model, config, args)
        return
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked process
    with ProcessPoolExecutor(
        args.jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(run_model, model, config, args): (dataset, model) for dataset, model, config in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


MODELS = [*VARIANTS, "sasrec"]


def main() -> None:
    preset = argparse.ArgumentParser(add_help=False)
    preset.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="settings chosen for a dataset and machine (benchmarks.sizes); flags given still win",
    )
    parser = argparse.ArgumentParser(description=__doc__, parents=[preset])
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding the named dataset folders")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(RUNS),
        help=f"{', '.join(RUNS)} (under --data), or the path of any LC-Rec or S3-Rec folder: our own semantic IDs where "
        "its items have text, else its *.rqvae-index.json; the rows that need text are skipped without it",
    )
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--size", choices=list(RANKER_SIZES), default="paper", help="ranker size; compact for CPU runs")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument(
        "--train-minutes", type=float, help="time budget of each ranker's training, beside --epochs (default: none)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=TrainConfig.model_fields["learning_rate"].default,
        help="the ranker's peak learning rate",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=list(SCHEDULES),
        default=TrainConfig.model_fields["lr_schedule"].default,
        help="after the warm-up",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=TrainConfig.model_fields["warmup_steps"].default,
        help="optimiser steps of linear warm-up",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=TrainConfig.model_fields["eval_every"].default,
        help="epochs between validation passes",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=TrainConfig.model_fields["patience"].default,
        help="validation passes without a gain before a ranker stops",
    )
    parser.add_argument(
        "--max-eval-users",
        type=int,
        default=TrainConfig.model_fields["max_eval_users"].default,
        help="validation users per pass (the test pass uses all)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TrainConfig.model_fields["batch_size"].default,
        help="training targets per batch",
    )
    parser.add_argument(
        "--history-attention",
        choices=["bidirectional", "causal"],
        default="bidirectional",
        help="causal: each history item reads the items before it, and every target of a sequence trains in one pass "
        "(only for rows without per-example side inputs: tiger, knowledge)",
    )
    parser.add_argument(
        "--user-buckets",
        type=int,
        default=TigerConfig.model_fields["user_buckets"].default,
        help="user tokens the ranker hashes users into (TIGER's 2,000); 1: one token for every user",
    )
    parser.add_argument(
        "--interest-minutes",
        type=float,
        default=0.0,
        help="time budget of each interest model, beside --interest-epochs (default 0: none; a budget makes the rows depend "
        "on the machine's speed, and too small a one leaves the beyond-log items noise)",
    )
    parser.add_argument(
        "--interest-epochs",
        type=int,
        default=InterestTrainConfig.model_fields["epochs"].default,
        help="epochs of each interest model; with --interest-minutes 0 they alone decide, so that the beyond_log and full "
        "rows, like the others, do not depend on the machine's speed",
    )
    parser.add_argument("--sasrec-epochs", type=int, default=200)
    parser.add_argument(
        "--seed",
        type=int,
        help="another seed for training (the RQ-VAE IDs, example order, mined users, interest models) and the ranker's weights; the split stays (default: the configs')",
    )
    parser.add_argument(
        "--encoder", default=DEFAULT_MODEL, help="sentence-transformers model name or folder for item and step texts"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process (useful on a GPU)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the rows an earlier command finished with the same settings (kept in --results/rows, with their test "
        "ranks, to be committed), so that a long table is built over several sessions",
    )
    parser.add_argument("--out", type=Path, default=Path("model_store"))
    parser.add_argument("--state", type=Path, default=Path(".state"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    started = time.monotonic()
    chosen = preset.parse_known_args()[0].preset
    if chosen is not None:
        parser.set_defaults(**PRESETS[chosen])
    args = parser.parse_args()
    args.started = started
    args.results.mkdir(parents=True, exist_ok=True)
    try:
        folders = [dataset_folder(value, args.data) for value in args.datasets]
        configs = {folder.name: dataset_config(folder, args) for folder in folders}
    except DatasetError as error:
        parser.error(str(error))
    skipped = {name: skipped_models(config, args.models) for name, config in configs.items()}
    planned = {name: [model for model in args.models if model not in skipped[name]] for name in configs}
    runs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in configs}

    def write_when_done(name: str) -> None:  # so a later dataset's failure cannot lose a finished one's table
        if len(runs[name]) == len(planned[name]):
            write_result(
                name, configs[name], {model: runs[name][model] for model in planned[name]}, skipped[name], args
            )

    tasks = []
    for name in configs:
        for model in planned[name]:
            earlier = finished_run(name, model, configs[name], args) if args.resume else None
            if earlier is None:
                tasks.append((name, model, configs[name]))
            else:
                print(f"{name} {model}: reusing the run finished {earlier['finished']}")
                runs[name][model] = earlier
        write_when_done(name)
    for (name, model), run in run_all(sorted(tasks, key=lambda task: heaviest_first(task[1])), args):
        runs[name][model] = keep_run(name, model, configs[name], args, run)
        write_when_done(name)


def run_file(name: str, model: str, config: TrainConfig, args: argparse.Namespace) -> Path:
    """Where a finished row is kept: in the results folder, so that it can be committed and a long table built over
    several sessions and checkouts; named by the dataset, the row and a digest of its settings (paths left out, so that
    the same data elsewhere is the same row)."""
    settings = {"model": model, "config": config.model_dump(mode="json", exclude={"dataset", "published_ids"})}
    if model == "sasrec":
        settings["sasrec_epochs"] = args.sasrec_epochs
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return args.results / "rows" / f"{name}-{model}-{digest}.json"


def keep_run(
    name: str, model: str, config: TrainConfig, args: argparse.Namespace, run: dict[str, Any]
) -> dict[str, Any]:
    """Keep a finished row, with its test users' ranks beside it (what paired intervals need) when it has a version."""
    path = run_file(name, model, config, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {**run, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if "model_version" in run:
        ranks = path.with_suffix(".ranks.npy")
        shutil.copyfile(Path(run["model_version"]) / TEST_RANKS_FILE, ranks)
        run["test_ranks"] = ranks.name
    path.write_text(json.dumps(run))
    return run


def finished_run(name: str, model: str, config: TrainConfig, args: argparse.Namespace) -> dict[str, Any] | None:
    """A row finished earlier with the same settings, with its test ranks where it has them."""
    path = run_file(name, model, config, args)
    if not path.exists():
        return None
    run: dict[str, Any] = json.loads(path.read_text())
    return run if "test_ranks" not in run or (path.parent / run["test_ranks"]).exists() else None


def heaviest_first(model: str) -> tuple[bool, bool]:
    """Sort key that starts parallel jobs with the longest runs: interest inference, then pattern mining."""
    side = VARIANTS[model][1] if model in VARIANTS else None
    return (side is None or not side.beyond_log, side is None or side.reasoning == "none")


def dataset_folder(value: str, data: Path) -> Path:
    """A benchmark dataset's name (a folder under ``data``) or any dataset folder's path."""
    path = Path(value) if value not in RUNS else data / value
    if not path.exists():
        raise DatasetError(f"{value}: neither one of {', '.join(RUNS)} nor a dataset folder")
    return path


def semantic_id_source(folder: Path) -> str:
    """The benchmark's choice for a named dataset; elsewhere our own IDs from item text, or the published ones."""
    if folder.name in RUNS:
        return RUNS[folder.name]
    if has_item_text(folder):
        return "rqvae"
    if next(folder.glob("*.rqvae-index.json"), None) is None:
        raise DatasetError(
            f"{folder}: its items have no text (no *.item.json) and it has no *.rqvae-index.json: no semantic IDs"
        )
    return "published"


def dataset_config(folder: Path, args: argparse.Namespace) -> TrainConfig:
    ranker = RANKER_SIZES[args.size].model_copy(
        update={
            "history_attention": args.history_attention,
            "user_buckets": args.user_buckets,
            **({} if args.seed is None else {"seed": args.seed}),
        }
    )
    return TrainConfig(
        dataset=folder,
        ids=semantic_id_source(folder),
        encoder=args.encoder,
        epochs=args.epochs,
        max_minutes=args.train_minutes,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        eval_every=args.eval_every,
        patience=args.patience,
        max_eval_users=args.max_eval_users,
        batch_size=args.batch_size,
        ranker=ranker,
        interests=InterestTrainConfig(epochs=args.interest_epochs, max_minutes=args.interest_minutes or None),
        interest_model=False,  # rows need only the cross-fitted ones
        **({} if args.seed is None else {"seed": args.seed}),
    )


@cache
def has_item_text(folder: Path) -> bool:
    """Whether the dataset's items have text (read once: the IDs and the rows both depend on it)."""
    return load_dataset(folder).item_text is not None


def skipped_models(config: TrainConfig, models: list[str]) -> dict[str, str]:
    has_text = has_item_text(config.dataset)
    reasons = {model: "the dataset has no item text" for model in models if model in NEEDS_TEXT and not has_text}
    if config.ranker.history_attention == "causal":
        for model in models:
            if model in VARIANTS and VARIANTS[model][1].per_example:
                reasons.setdefault(model, "causal history attention takes no per-example side inputs")
    return reasons


def per_user_ndcg(runs: dict[str, dict[str, Any]], rows: Path) -> dict[str, np.ndarray]:
    """Each trained version's NDCG@10 per test user, from the test ranks kept with its row in ``rows``."""
    return {
        model: metric_values(torch.from_numpy(np.load(rows / run["test_ranks"])))["ndcg@10"].numpy()
        for model, run in runs.items()
        if "test_ranks" in run
    }


def gains(ndcg: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """NDCG@10 of each compared row relative to its baseline on the same test users, with a paired-bootstrap 95%
    interval (``training.metrics.relative_gain``)."""
    pairs = [(row, base) for row, base in COMPARED if row in ndcg and base in ndcg]
    return [
        {"row": row, "baseline": base, "metric": "ndcg@10", **relative_gain(ndcg[row], ndcg[base])}
        for row, base in pairs
    ]


def write_result(
    name: str, config: TrainConfig, runs: dict[str, dict[str, Any]], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    ndcg = per_user_ndcg(runs, args.results / "rows")
    rows = [
        {**run.pop("row"), **({"ndcg@10_ci95": mean_interval(ndcg[model])} if model in ndcg else {})}
        for model, run in runs.items()
    ]
    rows += [{"name": label, **figures} for label, figures in PUBLISHED.get(name, {}).items()]
    result = {
        "dataset": name,
        "rows": rows,
        "gains": gains(ndcg),
        "runs": runs,  # per model: device, training seconds, epochs run (and the model version of each variant)
        "skipped": skipped,
        "preset": args.preset,
        "size": args.size,
        "epochs": args.epochs,
        "train_minutes": args.train_minutes,
        "learning_rate": {"peak": args.learning_rate, "schedule": args.lr_schedule, "warmup_steps": args.warmup_steps},
        "eval_every": args.eval_every,
        "patience": args.patience,
        "max_eval_users": args.max_eval_users,
        "batch_size": args.batch_size,
        "history_attention": args.history_attention,
        "user_buckets": args.user_buckets,
        "interest_minutes": args.interest_minutes,
        "interest_epochs": args.interest_epochs,
        "jobs": args.jobs,  # with more than one, the runs shared the machine, so their times are not one run's alone
        "encoder": args.encoder,
        "seeds": {"training": config.seed, "ranker_weights": config.ranker.seed},
        "partial": "tiger" not in runs,  # a run without the baseline row is not the benchmark's table
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "command_s": round(time.monotonic() - args.started, 1),  # the whole command so far: data, training, tests
        "date": date.today().isoformat(),
        "machine": platform.platform(),
    }
    suffix = ("" if not result["partial"] else "-" + "-".join(args.models)) + (
        "" if args.seed is None else f"-seed{args.seed}"
    )
    stem = args.results / f"quality-{name.removeprefix('amazon-')}{suffix}"
    stem.with_name(f"{stem.name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("pictures:", ", ".join(str(path) for path in write_quality_plots(result, stem)))


if __name__ == "__main__":
    main()
