"""Rules, pure: fingerprints as Alertmanager computes them, durations, the pending/firing/resolved
steps, silences and webhook matches, findings and their words."""

from __future__ import annotations

import pytest

from app.alerts.rules import (
    Rule,
    alert_annotations,
    alert_labels,
    fingerprint,
    format_duration,
    labels_match,
    parse_duration,
    silenced_by,
    step,
    threshold_findings,
)


def rule(**fields: object) -> Rule:
    base: dict[str, object] = {
        "id": 1,
        "name": "busy",
        "type": "threshold",
        "kind": "split_lock",
        "group_by": "guest",
        "window_s": 60,
        "threshold": 20,
        "for_s": 0,
        "severity": "warning",
    }
    base.update(fields)
    return Rule(**base)  # type: ignore[arg-type]


# Alertmanager 0.25 listed these labels with this fingerprint (GET /api/v2/alerts, captured
# for tests/samples/alertmanager/).
def test_fingerprint_is_alertmanagers() -> None:
    labels = {"alertname": "GuestKilled", "severity": "critical", "host": "h1", "guest": "vm1"}
    assert fingerprint(labels) == "5c24bf30b42931b2"


def test_fingerprint_ignores_label_order_and_changes_with_any_value() -> None:
    a = fingerprint({"alertname": "x", "host": "h"})
    assert a == fingerprint({"host": "h", "alertname": "x"})
    assert a != fingerprint({"alertname": "x", "host": "h2"})
    assert len(a) == 16


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60), ("5m", 300), ("1h", 3600), ("2d", 172800), (90, 90), ("90", 90), (" 10 m ", 600)],
)
def test_durations_in_their_written_forms(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "1.5h", "-5s", "5ms", "", "1w"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"60s|negative|duration"):
        parse_duration(text)


def test_durations_are_shown_in_the_largest_whole_unit() -> None:
    assert [format_duration(s) for s in (0, 45, 60, 90, 3600, 86400)] == [
        "0s",
        "45s",
        "1m",
        "90s",
        "1h",
        "1d",
    ]


def test_condition_without_for_fires_at_once_and_resolves_when_it_clears() -> None:
    assert step(None, True, None, 0, 100) == "fire"
    assert step("firing", True, 0, 0, 200) == "keep"
    assert step("firing", False, 0, 0, 300) == "resolve"
    assert step(None, False, None, 0, 100) == "none"


def test_condition_with_for_is_pending_until_it_held_that_long() -> None:
    assert step(None, True, None, 60, 100) == "pending"
    assert step("pending", True, 100, 60, 159) == "keep"
    assert step("pending", True, 100, 60, 160) == "fire"


def test_pending_that_clears_is_dropped_without_a_notice() -> None:
    assert step("pending", False, 100, 60, 130) == "drop"


def test_silence_needs_every_matcher_and_an_empty_one_silences_nothing() -> None:
    labels = {"alertname": "GuestKilled", "host": "h1", "guest": "vm1"}
    assert silenced_by(
        labels, [(1, {"host": "h1"}), (2, {"host": "h2"}), (3, {"host": "h1", "guest": "vm1"})]
    ) == [1, 3]
    assert silenced_by(labels, [(4, {})]) == []


def test_webhook_match_empty_takes_everything() -> None:
    assert labels_match({"a": "1"}, {})
    assert labels_match({"a": "1", "b": "2"}, {"a": "1"})
    assert not labels_match({"a": "1"}, {"a": "1", "b": "2"})


def test_threshold_counts_at_or_over_find_and_under_does_not() -> None:
    found = threshold_findings(rule(), [("h1", "vm-a", 20), ("h1", "vm-b", 19), (None, "vm-c", 50)])
    assert [f.labels for f in found] == [{"host": "h1", "guest": "vm-a"}, {"guest": "vm-c"}]
    assert found[0].value == 20
    assert found[0].summary == "20 split_lock event(s) on guest vm-a in 1m (threshold 20)"
    assert found[0].link == "#/guest/vm-a?range=24h"


def test_rule_labels_cannot_replace_the_ones_splitwatch_sets() -> None:
    r = rule(labels={"team": "virt", "severity": "none", "host": "fake"})
    labels = alert_labels(r, {"host": "h1"})
    assert labels == {"alertname": "busy", "severity": "warning", "team": "virt", "host": "h1"}


def test_rule_annotations_fill_in_the_figures() -> None:
    r = rule(annotations={"runbook": "https://wiki/x?g={guest}&n={value}", "raw": "{not a field}"})
    [f] = threshold_findings(r, [("h1", "vm-a", 25)])
    annotations = alert_annotations(r, f)
    assert annotations["runbook"] == "https://wiki/x?g=vm-a&n=25"
    assert annotations["raw"] == "{not a field}"
    assert annotations["summary"] == f.summary
