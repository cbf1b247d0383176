"""Pictures of a `bench-quality` result: how each row learned, and where the rows end up.

``curves``: validation NDCG@10 against wall time, one line per row, a dot at its best epoch (the kept weights).
``rows``: each row's test NDCG@10 with its 95 % bootstrap interval over the test users; published figures as
hollow marks, without an interval. ``python -m benchmarks.plots`` draws one row of several results files together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here or in CI
import matplotlib.pyplot as plt


def write_quality_plots(result: dict[str, Any], stem: Path) -> list[Path]:
    """``<stem>-curves.png`` and ``<stem>-rows.png`` for one dataset's result; returns their paths."""
    return [
        _curves(result, stem.with_name(f"{stem.name}-curves.png")),
        _rows(result, stem.with_name(f"{stem.name}-rows.png")),
    ]


def _curves(result: dict[str, Any], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    for name, run in result["runs"].items():
        points = [
            (entry["wall_s"] / 60, entry["valid"]["ndcg@10"]) for entry in run.get("history", []) if "valid" in entry
        ]
        if not points:
            continue
        minutes, ndcg = zip(*points, strict=True)
        (line,) = axes.plot(
            minutes, ndcg, marker=".", label=f"{name} ({'converged' if run.get('converged') else 'budget'})"
        )
        best = max(range(len(ndcg)), key=ndcg.__getitem__)
        axes.plot(minutes[best], ndcg[best], "o", color=line.get_color(), markersize=8)
    axes.set(
        xlabel="wall time (minutes)",
        ylabel="validation NDCG@10",
        title=f"{result['dataset']}: validation while training",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _rows(result: dict[str, Any], path: Path) -> Path:
    rows = result["rows"]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    for position, row in enumerate(rows):
        interval = row.get("ndcg@10_ci95")
        if interval:
            error = [[row["ndcg@10"] - interval[0]], [interval[1] - row["ndcg@10"]]]
            axes.errorbar(row["ndcg@10"], position, xerr=error, fmt="o", color="tab:blue", capsize=4)
        else:
            axes.plot(row["ndcg@10"], position, "o", markerfacecolor="none", color="tab:gray")
    axes.set_yticks(range(len(rows)), [row["name"] for row in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set(xlabel="test NDCG@10 (95 % interval over test users)", title=f"{result['dataset']}: test NDCG@10 by row")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def compare(results: dict[str, Path], row: str, stem: Path) -> list[Path]:
    """One row of several results files (e.g. one setting each) in one pair of pictures, each labelled by its name."""
    loaded = {label: json.loads(path.read_text()) for label, path in results.items()}
    rows = [{**next(r for r in result["rows"] if r["name"] == row), "name": label} for label, result in loaded.items()]
    runs = {label: result["runs"][row] for label, result in loaded.items()}
    dataset = next(iter(loaded.values()))["dataset"]
    return write_quality_plots({"dataset": f"{dataset}, {row}", "rows": rows, "runs": runs}, stem)


def main() -> None:
    parser = argparse.ArgumentParser(description="Pictures comparing one row across bench-quality results files.")
    parser.add_argument("results", nargs="+", help="LABEL=FILE, one per results file")
    parser.add_argument("--row", default="tiger")
    parser.add_argument("--stem", type=Path, required=True, help="writes <stem>-curves.png and <stem>-rows.png")
    args = parser.parse_args()
    results = dict(value.split("=", 1) for value in args.results)
    print(*compare({label: Path(path) for label, path in results.items()}, args.row, args.stem), sep="\n")


if __name__ == "__main__":
    main()
