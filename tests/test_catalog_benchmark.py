"""`bench-catalog` at a toy size: every figure of a size is measured, and the picture is drawn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from PIL import Image


def test_each_size_gets_every_figure_and_the_picture(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks.catalog",
        "--sizes",
        "1000",
        "3000",
        "--rqvae-epochs",
        "1",
        "--new-items",
        "100",
    ]
    command += ["--state", str(tmp_path / "state"), "--results", str(tmp_path / "results")]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    rows = orjson.loads((tmp_path / "results" / "catalog.json").read_bytes())["rows"]
    assert [row["items"] for row in rows] == [1000, 3000]
    for row in rows:
        assert row["assign_new_per_s"] > 0 and row["startup_s"] > 0 and row["memory_mb"]["trie_tables"] > 0
        assert 0 < row["top10"]["p50_ms"] <= row["top10"]["p99_ms"]
        assert 0 < row["score100"]["p50_ms"] <= row["score100"]["p99_ms"]
    assert Image.open(tmp_path / "results" / "catalog.png").size[0] > 1000
