"""`bench-quality` on a user's own folder: its semantic IDs and rows follow whether its items have text."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from benchmarks.combine_seeds import combine
from benchmarks.plots import write_quality_plots
from benchmarks.quality import dataset_folder, semantic_id_source, skipped_models
from training.errors import DatasetError
from training.train import VARIANTS, TrainConfig


def s3rec_folder(folder: Path, text: bool, index: bool) -> Path:
    folder.mkdir()
    (folder / "Mine.txt").write_text("1 1 2 3\n2 2 3 1\n")
    if text:
        (folder / "Mine.item.json").write_bytes(orjson.dumps({str(i): {"title": f"item {i + 1}"} for i in range(3)}))
    if index:
        (folder / "Mine.rqvae-index.json").write_bytes(
            orjson.dumps({str(i): ["<a_1>", "<b_2>", f"<c_{i}>"] for i in range(3)})
        )
    return folder


def test_any_folder_is_measured_by_whether_its_items_have_text(tmp_path: Path) -> None:
    with_text = dataset_folder(str(s3rec_folder(tmp_path / "text", text=True, index=False)), tmp_path)
    assert semantic_id_source(with_text) == "rqvae"
    assert skipped_models(TrainConfig(dataset=with_text), list(VARIANTS)) == {}
    published = s3rec_folder(tmp_path / "ids", text=False, index=True)
    assert semantic_id_source(published) == "published"
    assert set(skipped_models(TrainConfig(dataset=published), list(VARIANTS))) == {
        "knowledge",
        "cot_pooled",
        "cot_structured",
        "full",
    }
    with pytest.raises(DatasetError, match=r"no text .* no \*\.rqvae-index\.json"):
        semantic_id_source(s3rec_folder(tmp_path / "bare", text=False, index=False))
    with pytest.raises(DatasetError, match="neither one of"):
        dataset_folder(str(tmp_path / "missing"), tmp_path)


def test_the_pictures_show_each_rows_curve_and_interval(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "loss": 1.0 / e, "wall_s": 30.0 * e, **({"valid": {"ndcg@10": 0.01 * e}} if e % 2 == 0 else {})}
        for e in range(1, 9)
    ]
    result = {
        "dataset": "mine",
        "runs": {
            "tiger": {"history": history, "converged": True},
            "full": {"history": history[:4], "converged": False},
        },
        "rows": [
            {"name": "tiger", "ndcg@10": 0.02, "ndcg@10_ci95": [0.015, 0.025]},
            {"name": "full", "ndcg@10": 0.03, "ndcg@10_ci95": [0.024, 0.036]},
            {"name": "published", "ndcg@10": 0.0384},
        ],
    }
    paths = write_quality_plots(result, tmp_path / "quality-mine")
    assert [path.name for path in paths] == ["quality-mine-curves.png", "quality-mine-rows.png"]
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape[0] > 300 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn, not blank


def fake_result(seed: int, tiger: float, full: float, gain_ci: list[float]) -> dict[str, object]:
    figures = lambda ndcg: {"recall@5": ndcg, "ndcg@5": ndcg, "recall@10": 2 * ndcg, "ndcg@10": ndcg}  # noqa: E731
    return {
        "dataset": "amazon-scientific",
        "size": "compact",
        "epochs": 200,
        "eval_every": 1,
        "interest_epochs": 30,
        "encoder": "m",
        "learning_rate": {},
        "train_minutes": None,
        "interest_minutes": 0,
        "gpu": None,
        "machine": "x",
        "partial": False,
        "seeds": {"training": seed, "ranker_weights": seed},
        "rows": [
            {"name": "tiger", **figures(tiger)},
            {"name": "full", **figures(full)},
            {"name": "published", **figures(0.5)},
        ],
        "runs": {"tiger": {"converged": True}, "full": {"converged": True}},
        "gains": [
            {"row": "full", "baseline": "tiger", "metric": "ndcg@10", "relative": full / tiger - 1, "ci95": gain_ci}
        ],
    }


def test_seeds_combine_into_means_spreads_and_each_seeds_interval() -> None:
    combined = combine([fake_result(42, 0.02, 0.024, [0.1, 0.3]), fake_result(7, 0.03, 0.033, [0.02, 0.2])])
    assert combined["seeds"] == [42, 7]
    tiger, full, published = combined["rows"]
    assert tiger["ndcg@10"] == pytest.approx(0.025) and tiger["ndcg@10_std"] == pytest.approx(0.00707, abs=1e-5)
    assert full["per_seed"]["7"]["ndcg@10"] == 0.033 and full["converged"] == [True, True]
    assert published == {"name": "published", "recall@5": 0.5, "ndcg@5": 0.5, "recall@10": 1.0, "ndcg@10": 0.5}
    (gain,) = combined["gains"]
    assert gain["relative"] == pytest.approx((0.2 + 0.1) / 2)
    assert gain["per_seed"] == [
        {"seed": 42, "relative": pytest.approx(0.2), "ci95": [0.1, 0.3]},
        {"seed": 7, "relative": pytest.approx(0.1), "ci95": [0.02, 0.2]},
    ]
    with pytest.raises(ValueError, match="a seed twice"):
        combine([fake_result(7, 0.02, 0.024, [0.1, 0.3]), fake_result(7, 0.03, 0.033, [0.02, 0.2])])


def test_a_preset_sets_the_run_a_flag_still_wins_and_finished_rows_resume(tmp_path: Path) -> None:
    folder = tmp_path / "Mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    (folder / "Mine.txt").write_text(
        "".join(f"{user} {' '.join(map(str, rng.integers(1, 21, 6)))}\n" for user in range(1, 41))
    )
    codes = {str(i): [f"<a_{i % 4}>", f"<b_{i // 4}>", "<c_0>"] for i in range(20)}
    (folder / "Mine.rqvae-index.json").write_bytes(orjson.dumps(codes))
    command = [
        sys.executable,
        "-m",
        "benchmarks.quality",
        "--datasets",
        str(folder),
        "--models",
        "tiger",
        "beyond_log",
        "--preset",
        "beauty-tiny",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "store"),
        "--state",
        str(tmp_path / "state"),
        "--results",
        str(tmp_path / "results"),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    result = orjson.loads((tmp_path / "results" / "quality-Mine.json").read_bytes())
    assert (
        result["preset"] == "beauty-tiny" and result["history_attention"] == "causal" and result["batch_size"] == 1024
    )
    assert result["epochs"] == 1  # the flag, over the preset's 2
    run = result["runs"]["tiger"]
    ranker = orjson.loads((Path(run["model_version"]) / "ranker" / "config.json").read_bytes())
    assert result["user_buckets"] == 1 and ranker["tokenizer"]["num_user_buckets"] == 1  # the preset reaches the model
    assert run["epochs_run"] == 1 and run["converged"] is False and 0 < run["validation_share"] < 1
    assert result["skipped"] == {"beyond_log": "causal history attention takes no per-example side inputs"}

    shutil.rmtree(tmp_path / "store")  # a later checkout: only the results folder (with its kept rows) is left
    again = subprocess.run([*command, "--resume"], check=True, capture_output=True, text=True, timeout=300)
    assert "tiger: reusing the run finished" in again.stdout  # the same settings: not trained again
    resumed = orjson.loads((tmp_path / "results" / "quality-Mine.json").read_bytes())
    assert resumed["runs"]["tiger"]["model_version"] == run["model_version"]
    assert resumed["rows"][0]["ndcg@10_ci95"] == result["rows"][0]["ndcg@10_ci95"]  # from the kept test ranks
    changed = subprocess.run(
        [*command, "--resume", "--learning-rate", "2e-3"], check=True, capture_output=True, text=True, timeout=300
    )
    assert "reusing" not in changed.stdout  # another setting is another row
    retrained = orjson.loads((tmp_path / "results" / "quality-Mine.json").read_bytes())
    assert retrained["runs"]["tiger"]["model_version"] != run["model_version"]
