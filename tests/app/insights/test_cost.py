"""Misery-mode cost: count x 10 ms from true counts, and no figure made up from log lines."""

from __future__ import annotations

from app.insights.cost import Tally, throttling_cost


def test_each_counted_trap_costs_exactly_10_ms_and_the_share_is_of_the_window() -> None:
    cost = throttling_cost(Tally(counted=360), window_s=3600)
    assert cost.vcpu_seconds == 3.6
    assert cost.vcpu_share == 0.001
    assert cost.counted_traps == 360 and cost.reason is None


def test_three_traps_are_point_zero_three_seconds_not_a_float_artefact() -> None:
    assert throttling_cost(Tally(counted=3), window_s=60).vcpu_seconds == 0.03


def test_kernel_log_sightings_alone_give_no_count_known_with_the_reason() -> None:
    cost = throttling_cost(Tally(sighted=12), window_s=3600)
    assert cost.vcpu_seconds is None and cost.vcpu_share is None
    assert cost.uncounted_sightings == 12
    assert cost.reason is not None and cost.reason.startswith("no count known")


def test_traps_of_an_unknown_era_give_no_figure_either() -> None:
    cost = throttling_cost(Tally(uncertain=4), window_s=3600)
    assert cost.vcpu_seconds is None and cost.reason is not None and "era" in cost.reason


def test_nothing_throttled_costs_zero() -> None:
    cost = throttling_cost(Tally(), window_s=3600)
    assert (cost.vcpu_seconds, cost.vcpu_share, cost.reason) == (0.0, 0.0, None)
