"""`bench-quality` on a user's own folder: its semantic IDs and rows follow whether its items have text."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from benchmarks.quality import dataset_folder, semantic_id_source, skipped_models
from models.errors import DatasetError
from models.train import VARIANTS, TrainConfig


def s3rec_folder(folder: Path, text: bool, index: bool) -> Path:
    folder.mkdir()
    (folder / "Mine.txt").write_text("1 1 2 3\n2 2 3 1\n")
    if text:
        (folder / "Mine.item.json").write_bytes(orjson.dumps({str(i): {"title": f"item {i + 1}"} for i in range(3)}))
    if index:
        (folder / "Mine.rqvae-index.json").write_bytes(orjson.dumps({str(i): ["<a_1>", "<b_2>", f"<c_{i}>"] for i in range(3)}))
    return folder


def test_any_folder_is_measured_by_whether_its_items_have_text(tmp_path: Path) -> None:
    with_text = dataset_folder(str(s3rec_folder(tmp_path / "text", text=True, index=False)), tmp_path)
    assert semantic_id_source(with_text) == "rqvae"
    assert skipped_models(TrainConfig(dataset=with_text), list(VARIANTS)) == {}
    published = s3rec_folder(tmp_path / "ids", text=False, index=True)
    assert semantic_id_source(published) == "published"
    assert set(skipped_models(TrainConfig(dataset=published), list(VARIANTS))) == {"knowledge", "cot_pooled", "cot_structured", "full"}
    with pytest.raises(DatasetError, match="no text .* no \\*\\.rqvae-index\\.json"):
        semantic_id_source(s3rec_folder(tmp_path / "bare", text=False, index=False))
    with pytest.raises(DatasetError, match="neither one of"):
        dataset_folder(str(tmp_path / "missing"), tmp_path)
