"""Early stopping: the best epoch is kept, patience counts checks without a gain, and the report says which stopped it."""

from __future__ import annotations

from training.early_stopping import EarlyStopping


def test_patience_counts_checks_without_a_gain_and_a_gain_resets_it() -> None:
    stopper = EarlyStopping("ndcg@10", patience=2)
    assert [stopper.check(epoch, score) for epoch, score in enumerate([0.1, 0.3, 0.3, 0.4, 0.2], 1)] == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert not stopper.converged and stopper.best_epoch == 4
    assert not stopper.check(6, 0.35) and stopper.converged
    stopper.epochs_run = 6
    report = stopper.report()
    assert {key: report[key] for key in ("converged", "epochs_run", "best_epoch", "best_valid_ndcg@10")} == {
        "converged": True,
        "epochs_run": 6,
        "best_epoch": 4,
        "best_valid_ndcg@10": 0.4,
    }


def test_without_patience_only_a_budget_stops_training() -> None:
    stopper = EarlyStopping("ndcg@10", patience=None)
    for epoch in range(1, 20):
        stopper.check(epoch, 0.5)
    assert not stopper.converged and stopper.report()["best_epoch"] == 1
    assert EarlyStopping("ndcg@10", patience=1).report()["best_valid_ndcg@10"] is None  # never validated
