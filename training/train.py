"""One command from a dataset to a versioned model directory: semantic IDs, the TIGER ranker, the interest model.

The directory ``<out>/<dataset>/<version>/`` holds ``ids/`` (the semantic-ID table and, for our own IDs, the
frozen RQ-VAE), ``ranker/`` (weights and tokenizer), ``interests/`` (the masked-diffusion interest model over the
same semantic IDs), ``config.json``, ``metrics.json`` and ``test_ranks.npy``; it appears whole, once all of it is
written (``training.registry``), and the serving side loads the newest version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm
from transformers import get_constant_schedule_with_warmup, get_inverse_sqrt_schedule

from models.device import default_device, mixed_precision
from models.ranker_inputs import SideInputs, UserContext
from models.rqvae import RQVAEConfig, train_rqvae
from models.semantic_ids import SemanticIdTable, load_published_ids
from models.text_encoder import DEFAULT_MODEL, TextEncoder
from models.tiger import TigerConfig, TigerRanker
from models.tokenizer import SemanticIdTokenizer
from reaseq.contracts import KnowledgeChain
from reaseq.progress import progress_bar
from reasoning.knowledge import enriched_text
from reasoning.patterns import REASONING_DIR
from training.batches import length_batches
from training.datasets import Examples, SequenceData, Split, leave_one_out, load_dataset
from training.distillation import SideData, UserReasonerKind, build_side_data, item_knowledge
from training.early_stopping import EarlyStopping
from training.errors import ConfigError, DatasetError
from training.interest_training import InterestTrainConfig, train_and_save
from training.metrics import MetricAccumulator, ranks_in_lists
from training.registry import ITEMS_FILE, stage_version

log = logging.getLogger(__name__)


TEST_RANKS_FILE = "test_ranks.npy"  # in a version directory: each test user's target rank, in the split's order
LrSchedule = Literal["constant", "inverse_sqrt", "cooldown"]
SCHEDULES: tuple[LrSchedule, ...] = get_args(LrSchedule)

FULL = SideInputs(knowledge=True, reasoning="structured", beyond_log=True)
# The ablation's rows: which text the semantic IDs come from, and what the ranker reads beside the history.
VARIANTS: dict[str, tuple[Literal["catalog", "knowledge"], SideInputs]] = {
    "tiger": ("catalog", SideInputs()),
    "knowledge": ("knowledge", SideInputs(knowledge=True)),
    "cot_pooled": ("catalog", SideInputs(reasoning="pooled")),
    "cot_structured": ("catalog", SideInputs(reasoning="structured")),
    "beyond_log": ("catalog", SideInputs(beyond_log=True)),
    "full": ("knowledge", FULL),
}
NEEDS_TEXT = {
    name for name, (text, side) in VARIANTS.items() if text == "knowledge" or side.knowledge or side.reasoning != "none"
}


def with_variant(config: TrainConfig, variant: str) -> TrainConfig:
    """``config`` as one row of the ablation (``VARIANTS``); ``full`` is the default, the model Triton serves."""
    item_text, side = VARIANTS[variant]
    ranker = TigerConfig.model_validate(
        {**config.ranker.model_dump(), "side": side}
    )  # validated: not every row fits every config
    return config.model_copy(update={"item_text": item_text, "ranker": ranker})


class TrainConfig(BaseModel):
    """Everything a training run depends on; saved beside the artefacts."""

    model_config = ConfigDict(extra="forbid")

    dataset: Path
    ids: Literal["published", "rqvae"] = "rqvae"
    published_ids: Path | None = None  # a ``*.rqvae-index.json``; found in the dataset folder when omitted
    item_text: Literal["catalog", "knowledge"] = "knowledge"  # "knowledge": IDs from knowledge-enriched text
    encoder: str = DEFAULT_MODEL  # any sentence-transformers model name or path
    rqvae: RQVAEConfig = RQVAEConfig()
    ranker: TigerConfig = TigerConfig(side=FULL)
    epochs: int = 200
    max_minutes: float | None = (
        None  # bounds the ranker's training by time as well as by epochs; validated when it stops
    )
    batch_size: int = 256
    learning_rate: float = 1e-3  # the peak, reached after warmup_steps
    # after warm-up; inverse_sqrt is TIGER's and T5's; cooldown holds the peak, then falls linearly to zero over the
    # last cooldown_share of max_minutes (warm-up, stable, decay: a budget-stopped run ends annealed, not mid-stride)
    lr_schedule: LrSchedule = "constant"
    cooldown_share: float = Field(default=0.2, gt=0.0, le=1.0)
    warmup_steps: int = 0  # optimiser steps of linear warm-up from zero
    weight_decay: float = 0.01
    # Every second epoch, and stop after three passes without a gain: on the converged curves of BENCHMARKS.md the
    # longest run without a gain before a new best was one such pass; validation stays near a tenth of the time.
    eval_every: int = 2  # epochs between validation passes
    patience: int | None = 3  # validation passes without improvement before stopping; None: only the budget stops it
    eval_batch_size: int = 256
    compile: bool = False  # torch.compile the training step (pays on CUDA for long runs; compiling takes minutes)
    beam_size: int = 20
    max_eval_users: int | None = 3000  # validation users per pass (None: all); the test pass always uses all users
    interests: InterestTrainConfig = InterestTrainConfig()  # the beyond-log interest models (served and cross-fitted)
    interest_model: bool = True  # train the interest model the version serves (the near-line worker's)
    pattern_users: int | None = 3000  # validation examples Generate-Validate-Mine scores chains on (None: all)
    # Who writes the users' reasoning chains: the embedded reasoner (no LLM), or the LLM at REASEQ_LLM_URL, which
    # costs one call per distinct step prefix (GVM: pattern_users x 2 windows x 18 prefixes of the 9 structures, where
    # writing each chain whole would take 26), so lower pattern_users with it.
    user_reasoner: UserReasonerKind = "embedded"
    llm_fill_users: int | None = 2000  # with the LLM: examples per split part whose steps it fills (None: all)
    seed: int = 42

    @model_validator(mode="after")
    def _cooldown_needs_a_budget(self) -> TrainConfig:
        if self.lr_schedule == "cooldown" and self.max_minutes is None:
            raise ValueError("lr_schedule 'cooldown' ends at the time budget: set max_minutes")
        return self


def config_from(fields: dict[str, object], source: str) -> TrainConfig:
    """``fields`` (from ``source``, e.g. a file name) as a TrainConfig, or a ConfigError in one line."""
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as error:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']} (got {json.dumps(e['input'], default=str)[:80]})"
            for e in error.errors()
        ]
        raise ConfigError(f"{source}: {'; '.join(problems)}") from None


def read_config_file(path: Path) -> dict[str, object]:
    """A JSON file of TrainConfig fields, or a ConfigError in one line."""
    try:
        fields = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: expected a JSON object of TrainConfig fields, got {type(fields).__name__}")
    return fields


def small_config(dataset: Path) -> TrainConfig:
    """The full distilled model at a size that trains in a few minutes on a CPU: the demo's, and
    ``reaseq up --train``'s. Quality needs the defaults (the paper's sizes) and a GPU."""
    return TrainConfig.model_validate(
        {
            "dataset": dataset,
            "rqvae": {"codebook_size": 32, "epochs": 60, "batch_size": 256},
            "ranker": {
                "d_model": 64,
                "d_kv": 32,
                "num_heads": 2,
                "d_ff": 128,
                "num_encoder_layers": 1,
                "num_decoder_layers": 1,
                "max_history": 10,
                "side": FULL.model_dump(),
            },
            "epochs": 4,
            "eval_every": 2,
            "patience": 1,
            "batch_size": 256,
            "beam_size": 10,
            "interests": {
                "model": {"d_model": 64, "num_heads": 2, "d_ff": 128, "num_layers": 2, "horizon": 5},
                "epochs": 8,
                "max_minutes": 1.0,
            },
        }
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def semantic_ids(
    config: TrainConfig, data: SequenceData, encoder: TextEncoder, knowledge: Callable[[], dict[int, KnowledgeChain]]
) -> SemanticIdTable:
    """Published IDs, or our own: item text (or knowledge-enriched text) -> sentence embeddings -> RQ-VAE codes
    plus collision codes."""
    if config.ids == "published":
        path = config.published_ids or next(config.dataset.glob("*.rqvae-index.json"), None)
        if path is None:
            raise FileNotFoundError(f"no *.rqvae-index.json in {config.dataset}; pass published_ids")
        return SemanticIdTable.from_published(load_published_ids(path))
    if not data.item_text or len(data.item_text) < data.num_items:
        have = len(data.item_text or {})
        raise DatasetError(
            f"{data.name}: semantic IDs from text need text for every item ({have:,} of {data.num_items:,} have it): give the "
            "dataset an *.item.json, or use published IDs (--ids published)"
        )
    texts = [data.item_text[index] for index in range(data.num_items)]
    if config.item_text == "knowledge":
        chains = knowledge()
        texts = [enriched_text(text, chains[index]) if index in chains else text for index, text in enumerate(texts)]
    embeddings = encoder.encode(texts, progress=True)
    model = train_rqvae(embeddings, config.rqvae, seed=config.seed)
    return SemanticIdTable.build(model, embeddings)


def evaluate(
    ranker: TigerRanker,
    examples: Examples,
    config: TrainConfig,
    limit: int | None = None,
    contexts: Sequence[UserContext] | None = None,
) -> MetricAccumulator:
    """The targets' ranks in beam-search retrieval over all items; ``result()`` gives Recall and NDCG at 5 and 10.

    ``limit``: a fixed random sample of that many examples (the same at every call), not the first ones, since a
    dataset's user order need not be random (Beauty's first 3,000 users score half its average). Examples are searched
    in order of history length, so that a batch is little padding; ranks keep the examples' order.
    """
    chosen = np.arange(len(examples))
    if limit is not None and limit < len(examples):
        chosen = np.sort(np.random.default_rng(0).choice(len(examples), limit, replace=False))
    order = chosen[np.argsort([len(examples.histories[row]) for row in chosen], kind="stable")]
    count = len(order)
    ranks = []
    for start in progress_bar(range(0, count, config.eval_batch_size), "evaluating", "batch"):
        rows = order[start : start + config.eval_batch_size]
        ranked, _ = ranker.recommend(
            [examples.users[row] for row in rows],
            [examples.histories[row] for row in rows],
            k=10,
            beam_size=config.beam_size,
            contexts=None if contexts is None else [contexts[row] for row in rows],
        )
        ranks.append(ranks_in_lists(ranked, torch.tensor([examples.targets[row] for row in rows])))
    accumulator = MetricAccumulator()
    accumulator.add_ranks(torch.cat(ranks)[torch.from_numpy(np.argsort(order))])
    return accumulator


def cooldown_factor(step: int, warmup_steps: int, budget_left: float, cooldown_share: float) -> float:
    """The cooldown schedule's multiple of the peak rate: linear warm-up over ``warmup_steps``, then 1 until
    ``budget_left`` (the share of the time budget still to run) falls to ``cooldown_share``, then linearly to 0."""
    warm = min(1.0, step / max(1, warmup_steps))
    return warm * min(1.0, max(0.0, budget_left) / cooldown_share)


def learning_rate_schedule(
    optimiser: torch.optim.Optimizer, config: TrainConfig, budget_left: Callable[[], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """``config.lr_schedule`` for ``optimiser``; ``budget_left`` gives the share of the time budget still to run."""
    if config.lr_schedule == "inverse_sqrt":
        return get_inverse_sqrt_schedule(optimiser, num_warmup_steps=config.warmup_steps)
    if config.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimiser, num_warmup_steps=config.warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: cooldown_factor(step, config.warmup_steps, budget_left(), config.cooldown_share)
    )


def fit(ranker: TigerRanker, split: Split, config: TrainConfig, checkpoint: Path, side: SideData) -> dict[str, object]:
    """Train with AdamW under ``lr_schedule``, validate every ``eval_every`` epochs, keep the best weights by validation
    NDCG@10; stop after ``patience`` validations without improvement, or before an epoch that would not end within
    ``max_minutes`` (judged by the last epoch's length).

    Batches are cut by length (``length_batches``) from rows collated once; with causal history attention a row is a
    sequence window whose targets all train in one pass. On CUDA the step runs under bf16 autocast.
    """
    optimiser = torch.optim.AdamW(ranker.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    budget = None if config.max_minutes is None else 60 * config.max_minutes
    deadline = None if budget is None else time.monotonic() + budget

    def budget_left() -> float:
        return 1.0 if deadline is None else (deadline - time.monotonic()) / max(budget or 0.0, 1e-9)

    scheduler = learning_rate_schedule(optimiser, config, budget_left)
    rng = np.random.default_rng(config.seed)
    examples = ranker.training_examples(split.train.users, split.train.histories, split.train.targets, side.train)
    loss_of = torch.compile(ranker.loss, dynamic=True) if config.compile else ranker.loss
    stopper, history, out_of_time, validating = EarlyStopping("ndcg@10", config.patience), [], False, 0.0
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.monotonic()
        ranker.train()
        total = torch.zeros((), device=ranker.device)  # summed on the device: a per-batch .item() waits for the GPU
        batches = length_batches(examples.lengths, examples.target_counts, config.batch_size, rng)
        for rows in progress_bar(batches, f"epoch {epoch}/{config.epochs}", "batch"):
            with mixed_precision(ranker.device):
                loss = loss_of(examples.select(rows))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += loss.detach() * int(examples.target_counts[rows].sum())
        entry: dict[str, object] = {"epoch": epoch, "loss": total.item() / int(examples.target_counts.sum())}
        # stop before an epoch as long as this one would overrun the budget (and, under cooldown, run at rate zero)
        now = time.monotonic()
        out_of_time = deadline is not None and now + (now - epoch_started) > deadline
        if epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time:
            started = time.monotonic()
            metrics = evaluate(ranker, split.valid, config, config.max_eval_users, side.valid).result()
            validating += time.monotonic() - started
            entry["valid"] = metrics
            if stopper.check(epoch, metrics["ndcg@10"]):
                ranker.save(checkpoint)
        stopper.epochs_run, entry["wall_s"] = epoch, round(stopper.seconds, 1)
        history.append(entry)
        tqdm.write(json.dumps(entry))
        if stopper.converged or out_of_time:
            break
    # what validation cost, as a share of the whole: the interval and the sample are chosen to keep it small
    share = validating / max(stopper.seconds, 1e-9)
    return {"history": history, **stopper.report(), "stopped_by_time": out_of_time, "validation_share": round(share, 3)}


def version_name(config: TrainConfig, ids: SemanticIdTable) -> str:
    """Sortable and unique: UTC time, then a hash of the configuration and the ID table's version."""
    digest = hashlib.sha256((config.model_dump_json() + ids.version).encode()).hexdigest()[:8]
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{digest}"


def train(config: TrainConfig, out_dir: Path, state_dir: Path, data: SequenceData | None = None) -> Path:
    """Run the whole pipeline on ``data`` (default: read from ``config.dataset``); returns the version directory."""
    seed_everything(config.seed)
    started = time.monotonic()
    data = data or load_dataset(config.dataset)
    split = leave_one_out(data, config.ranker.max_history)
    encoder = TextEncoder(config.encoder, cache_dir=state_dir / "embeddings")
    knowledge = cache(lambda: item_knowledge(data, encoder))  # reasoned about once, by whoever asks first
    ids = semantic_ids(config, data, encoder, knowledge)
    item_codes = {int(key): codes for key, codes in ids.ids.items()}
    tokenizer = SemanticIdTokenizer(item_codes, ids.codes_per_level, config.ranker.user_buckets)
    side = build_side_data(
        config.ranker.side,
        data,
        split,
        tokenizer,
        encoder,
        knowledge,
        config.interests,
        config.pattern_users,
        config.seed,
        config.user_reasoner,
        config.llm_fill_users,
    )
    ranker = TigerRanker(tokenizer, config.ranker, default_device())
    if side.item_vectors is not None:
        ranker.set_item_vectors(torch.from_numpy(side.item_vectors))
    version_dir = out_dir / data.name / version_name(config, ids)
    with stage_version(version_dir) as staging:  # readers see the version only once all of it is written
        ids.save(staging / "ids")
        (staging / ITEMS_FILE).write_text(json.dumps(data.item_ids))
        if side.patterns is not None and side.labels is not None:
            side.patterns.save(staging / REASONING_DIR)
            side.labels.save(staging / REASONING_DIR)
        training = fit(ranker, split, config, staging / "ranker", side)
        best = TigerRanker.load(staging / "ranker", ranker.device)
        test_ranks = evaluate(best, split.test, config, contexts=side.test)
        np.save(staging / TEST_RANKS_FILE, test_ranks.ranks())  # per user, for paired comparisons between versions
        test = test_ranks.result()
        interests = train_and_save(best.tokenizer, data, config.interests, staging) if config.interest_model else None
        metrics = {
            "dataset": data.name,
            "users": len(split.test),
            "items": data.num_items,
            "test": test,
            "device": str(ranker.device),
            "train_seconds": round(time.monotonic() - started, 1),
            **training,
            "side_inputs": side.report,
            "interests": interests,
        }
        (staging / "config.json").write_text(config.model_dump_json(indent=2))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("model trained", extra={"version": str(version_dir), "test": test})
    return version_dir
