"""The demo view's consumer-lag row: each group's records behind, interest requests labelled while no model serves."""

from __future__ import annotations

from infra.demo_lag import WAITING_FOR_MODEL, describe_lag
from reaseq.settings import Settings

SETTINGS = Settings(app_id="demo")


def lags(stream: int, enrichment: int, interests: int) -> dict[str, dict[str, int]]:
    """``pipeline_lag``'s shape: records behind per group and topic, the stream group's spread over its inputs."""
    return {
        SETTINGS.app_name(1): {"items": 0, "events": stream},
        SETTINGS.worker_group("enrichment"): {"enrichment-requests": enrichment},
        SETTINGS.worker_group("interests"): {"interest-requests": interests},
    }


def test_interest_requests_held_for_the_first_model_are_labelled_as_such() -> None:
    line = describe_lag(SETTINGS, lags(0, 0, 1962), model_served=False)
    assert line == f"stream 0, enrichment 0, interests 1,962 ({WAITING_FOR_MODEL})"


def test_once_a_model_serves_every_group_shows_plain_lag() -> None:
    assert describe_lag(SETTINGS, lags(1200, 3, 40), model_served=True) == "stream 1,200, enrichment 3, interests 40"


def test_nothing_waiting_needs_no_reason() -> None:
    assert describe_lag(SETTINGS, lags(0, 0, 0), model_served=False) == "stream 0, enrichment 0, interests 0"


def test_before_the_first_measurement() -> None:
    assert describe_lag(SETTINGS, {}, model_served=False) == "not measured yet"
