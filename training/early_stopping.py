"""Early stopping on a validation metric: keep the best checkpoint, stop after ``patience`` checks without a gain.

Every training loop reports how it stopped in the same fields, so a results row says whether a figure comes from a
model that finished learning (``converged``: patience stopped it) or one a budget cut short (epochs or minutes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    metric: str  # the validation metric watched, higher is better (e.g. ``ndcg@10``)
    patience: int | None  # validation checks without improvement before stopping; None: only a budget stops
    best: float = float("-inf")
    best_epoch: int = 0
    stale: int = 0
    epochs_run: int = 0  # set by the training loop after each epoch
    started: float = field(default_factory=time.monotonic)

    def check(self, epoch: int, score: float) -> bool:
        """Record a validation score of ``epoch``; True when it is the best so far (keep that checkpoint)."""
        if score > self.best:
            self.best, self.best_epoch, self.stale = score, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def seconds(self) -> float:
        """Wall time since training started."""
        return time.monotonic() - self.started

    @property
    def converged(self) -> bool:
        """Whether patience ran out: the metric stopped improving before any budget did."""
        return self.patience is not None and self.stale >= self.patience

    def report(self) -> dict[str, object]:
        """How training stopped, for a version's metrics and a results row."""
        return {
            "converged": self.converged,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            f"best_valid_{self.metric}": None if self.best == float("-inf") else self.best,
            "wall_s": round(self.seconds, 1),
        }
