"""The pure modules (state.js: URL <-> view state; charts.js: API JSON -> Plotly traces;
alerting.js: the alerting API's shapes), run in Chromium as the dashboard loads them, on inputs
shaped like the API's answers (#5, #12)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Fleet

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def js(context: Any, fleet: Fleet) -> Iterator[Any]:
    """Evaluate `body` with `state` and `charts` imported from the server's own files."""
    tab = context.new_page()
    tab.goto(f"{fleet.url}/static/css/app.css")  # same origin, no app running

    def run(body: str, arg: Any = None) -> Any:
        return tab.evaluate(
            f"""async (arg) => {{
                const state = await import('/static/js/state.js');
                const charts = await import('/static/js/charts.js');
                const alerting = await import('/static/js/alerting.js');
                {body}
            }}""",
            arg,
        )

    yield run
    tab.close()


def test_every_view_state_survives_a_round_trip_through_the_url(js: Any) -> None:
    states = [
        {"page": "fleet", "range": "7d"},
        {"page": "host", "name": "rack 4/kvm:01", "range": "1h", "auto": True},
        {"page": "guest", "name": "instance-0000a1b2", "since": "2026-11-24T10:00:00Z", "until": None},
        {
            "page": "events",
            "range": "30d",
            "host": "kvm-a",
            "guest": "web 1",
            "kind": "bus_lock",
            "action": "sigbus",
            "source": "tracefs",
            "limit": 25,
            "cursors": ["MjAyNi0xMS0yNFQxMDowMDowMFp8MTI=", "a+b/c=="],
        },
        {"page": "hosts", "range": "24h", "status": "silent", "sort": "events", "cursors": ["bjF8fDN8NDI"]},
        {"page": "hosts", "status": "needs_action", "sort": "name", "cursors": []},
    ]
    for wanted in states:
        back = js(
            """const start = state.parseHash('#/fleet');
               return state.parseHash(state.formatHash(state.withChanges(start, arg)));""",
            wanted,
        )
        for key, value in wanted.items():
            assert back[key] == value, (key, wanted, back)


def test_the_hosts_pages_filter_and_order_stay_on_that_page_and_unknown_ones_fall_back(js: Any) -> None:
    back = js("return state.parseHash('#/hosts?status=dead&sort=loudest');")
    assert (back["page"], back["status"], back["sort"]) == ("hosts", None, "name")
    url = js(
        "return state.formatHash(state.withChanges(state.parseHash('#/hosts?status=silent&sort=events'),"
        " {page: 'fleet'}));"
    )
    assert url == "#/fleet?range=6h"  # the fleet view has no host filter of its own


def test_an_unknown_page_or_preset_falls_back_to_the_fleet_over_6h(js: Any) -> None:
    back = js("return state.parseHash('#/nowhere?range=2y&limit=7');")
    assert back["page"] == "fleet" and back["range"] == "6h" and back["limit"] == 100  # the demo's 6 h
    assert js("return state.parseHash('#/host').page;") == "fleet"  # a host page needs a name


def test_a_preset_window_ends_now_and_a_custom_window_is_fixed(js: Any) -> None:
    now = "2026-11-25T12:00:00Z"
    preset = js("return state.resolveRange(state.parseHash('#/fleet?range=6h'), new Date(arg));", now)
    assert preset == {"since": "2026-11-25T06:00:00Z", "until": now}
    custom = js(
        "return state.resolveRange(state.parseHash("
        "'#/fleet?since=2026-11-20T00:00:00Z&until=2026-11-21T00:00:00Z'), new Date(arg));",
        now,
    )
    assert custom == {"since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z"}


def test_a_window_ending_now_takes_in_what_arrived_earlier_in_the_current_second(js: Any) -> None:
    # A gap received at 12:00:00.1 and the page asking at 12:00:00.25: the window's end must be
    # after it (the API's `until` is exclusive), so the dashboard counts it at once.
    now = "2026-11-25T12:00:00.250Z"
    preset = js("return state.resolveRange(state.parseHash('#/fleet?range=24h'), new Date(arg));", now)
    assert preset == {"since": "2026-11-24T12:00:01Z", "until": "2026-11-25T12:00:01Z"}
    open_ended = js(
        "return state.resolveRange(state.parseHash('#/fleet?since=2026-11-25T00:00:00Z'), new Date(arg));",
        now,
    )
    assert open_ended == {"since": "2026-11-25T00:00:00Z", "until": "2026-11-25T12:00:01Z"}


def test_chart_steps_give_at_most_a_few_hundred_bars_and_whole_hours_from_a_week(js: Any) -> None:
    steps = js(
        """const now = new Date('2026-11-25T12:00:00Z');
           return Object.fromEntries(Object.keys(state.RANGE_PRESETS).map(r =>
             [r, charts.chooseStep(state.resolveRange(state.parseHash('#/fleet?range=' + r), now))]));"""
    )
    seconds = {"1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000}
    for preset, step in steps.items():
        assert step >= 60 and seconds[preset] / step <= 150, (preset, step)
    assert steps["7d"] % 3600 == 0 and steps["30d"] % 3600 == 0  # read from rollup_1h


SERIES = {
    "step": 60,
    "series": [
        {"key": "warn", "points": [["2026-11-25T10:00:00Z", 2], ["2026-11-25T10:01:00Z", 0]]},
        {"key": "reflect", "points": [["2026-11-25T10:00:00Z", 0], ["2026-11-25T10:01:00Z", 0]]},
        {"key": "sigbus", "points": [["2026-11-25T10:00:00Z", 1], ["2026-11-25T10:01:00Z", 3]]},
    ],
}


def test_stacked_bars_keep_fixed_colours_put_sigbus_first_and_drop_empty_keys(js: Any) -> None:
    traces = js("return charts.stackedBars(arg);", SERIES)
    assert [t["meta"] for t in traces] == ["sigbus", "warn"]
    assert [t["marker"]["color"] for t in traces] == ["#d62728", "#f5b700"]
    assert traces[0]["y"] == [1, 3] and traces[0]["x"] == ["2026-11-25 10:00:00", "2026-11-25 10:01:00"]
    assert traces[0]["width"] == 60_000 and traces[0]["offset"] == 0  # a bar spans its bucket


def test_host_heatmap_puts_the_busiest_host_on_top_with_one_cell_per_bucket(js: Any) -> None:
    series = {
        "step": 3600,
        "series": [
            {"key": "kvm-a", "points": [["2026-11-25T10:00:00Z", 1], ["2026-11-25T11:00:00Z", 0]]},
            {"key": "kvm-b", "points": [["2026-11-25T10:00:00Z", 5], ["2026-11-25T11:00:00Z", 4]]},
            {"key": "kvm-idle", "points": [["2026-11-25T10:00:00Z", 0], ["2026-11-25T11:00:00Z", 0]]},
        ],
    }
    trace = js("return charts.heatmap(arg);", series)
    assert trace["y"] == ["kvm-a", "kvm-b"]  # Plotly draws the last row on top
    assert trace["z"] == [[1, 0], [5, 4]]
    assert trace["x"] == ["2026-11-25 10:00:00", "2026-11-25 11:00:00", "2026-11-25 12:00:00"]


def test_a_folded_series_draws_its_others_as_one_grey_bar_with_nothing_to_open_and_no_heatmap_row(
    js: Any,
) -> None:
    folded = {
        "step": 60,
        "others": 3,  # the API summed 3 more keys beyond `top` into the last line (#14)
        "series": [
            {"key": "kvm-a", "points": [["2026-11-25T10:00:00Z", 5]]},
            {"key": "(other)", "points": [["2026-11-25T10:00:00Z", 4]]},
        ],
    }
    traces = js("return charts.stackedBars(arg, {colors: {}, order: null});", folded)
    assert [(t["meta"], t["name"], t["y"]) for t in traces] == [
        ("kvm-a", "kvm-a (5)", [5]),
        (None, "3 others (4)", [4]),
    ]
    assert js("return charts.grandTotal(arg);", folded) == 9
    assert js("return charts.heatmap(arg).y;", folded) == ["kvm-a"]


STATES = [
    {"observed_at": "2026-11-25T08:00:00Z", "boot_id": "b1", "kernel": "6.8", "mode": "warn",
     "ratelimit": None, "mitigate": 1, "verdict": "consistent", "cpus_off": 0,
     "cpus": [{"cpu": 0, "sld_on": True}, {"cpu": 1, "sld_on": True}]},
    {"observed_at": "2026-11-25T10:00:00Z", "boot_id": "b1", "kernel": "6.8", "mode": "warn",
     "ratelimit": None, "mitigate": 1, "verdict": "drift", "cpus_off": 1,
     "cpus": [{"cpu": 0, "sld_on": True}, {"cpu": 1, "sld_on": False}]},
    {"observed_at": "2026-11-25T11:00:00Z", "boot_id": "b2", "kernel": "6.9", "mode": "fatal",
     "ratelimit": None, "mitigate": 1, "verdict": "consistent", "cpus_off": 0,
     "cpus": [{"cpu": 0, "sld_on": True}, {"cpu": 1, "sld_on": None, "error": "EIO reading MSR 0x33"}]},
]  # fmt: skip
RANGE = {"since": "2026-11-25T09:00:00Z", "until": "2026-11-25T12:00:00Z"}


def test_marks_show_a_reboot_into_another_mode_a_verdict_needing_action_span_and_a_gap(js: Any) -> None:
    gaps = [{"host": "kvm-a", "received_at": "2026-11-25T11:30:00Z", "count": 7, "reason": "overrun",
             "source": "kmsg", "first_seq": 10, "last_seq": 16}]  # fmt: skip
    marks = js(
        "return charts.changeMarks([{name: 'kvm-a', states: arg.states}], arg.gaps, arg.range);",
        {"states": STATES, "gaps": gaps, "range": RANGE},
    )
    kinds = [(i["type"], i["at"][:16]) for i in marks["items"]]
    assert kinds == [
        ("action", "2026-11-25T10:00"),
        ("change", "2026-11-25T11:00"),
        ("gap", "2026-11-25T11:30"),
    ]
    assert marks["items"][0]["text"].startswith("drift (1 CPU(s) off")
    change = marks["items"][1]["text"]
    assert "rebooted (kernel 6.9)" in change and "mode warn → fatal" in change
    drift = next(s for s in marks["shapes"] if s["type"] == "rect")
    assert (drift["x0"], drift["x1"]) == ("2026-11-25 10:00:00", "2026-11-25 11:00:00")


def test_cpu_heatmap_reads_on_off_and_error_per_cpu_clipped_to_the_window(js: Any) -> None:
    trace = js("return charts.cpuHeatmap(arg.states, arg.range);", {"states": STATES, "range": RANGE})
    assert trace["y"] == ["cpu 0", "cpu 1"]
    # columns: 09:00 (the state in force at since), 10:00, 11:00 → 12:00
    assert trace["x"][0] == "2026-11-25 09:00:00" and trace["x"][-1] == "2026-11-25 12:00:00"
    assert trace["z"] == [[1, 1, 1], [1, 0, -1]]
    assert trace["text"][1][2] == "error: EIO reading MSR 0x33"


def test_names_reach_plotly_as_text_never_as_markup_or_template(js: Any) -> None:
    series = {
        "step": 60,
        "series": [{"key": '<a href="https://x.example">%{y}</a>', "points": [["2026-11-25T10:00:00Z", 1]]}],
    }
    bar = js("return charts.stackedBars(arg, {colors: {}, order: null})[0];", series)
    assert "<a" not in bar["name"] and "%{y}" not in bar["hovertemplate"].split("</b>")[0]
    assert bar["meta"] == series["series"][0]["key"]  # a click still gets the real name
    cell = js("return charts.heatmap(arg);", series)
    assert cell["y"] == ['&lt;a href="https://x.example"&gt;&#37;{y}&lt;/a&gt;']
    assert cell["meta"] == [series["series"][0]["key"]]


# ------------------------------------------------------------------ alerting (#12)

# Shaped like GET /api/v1/alerts items.
ALERTS = [
    {"fingerprint": "aaaa000000000001", "status": "resolved", "rule": "GuestKilled",
     "labels": {"alertname": "GuestKilled", "severity": "critical", "host": "kvm-b", "guest": "db-7"},
     "annotations": {"summary": "guest db-7 was killed by SIGBUS"},
     "starts_at": "2026-11-25T09:30:00Z", "ends_at": "2026-11-25T09:40:00Z", "silenced": False},
    {"fingerprint": "aaaa000000000002", "status": "firing", "rule": "HostInconsistent",
     "labels": {"alertname": "HostInconsistent", "severity": "warning", "host": "kvm-c"},
     "annotations": {"summary": "host kvm-c: detection inconsistent"},
     "starts_at": "2026-11-25T11:15:00Z", "ends_at": None, "silenced": True, "silenced_by": [3]},
    {"fingerprint": "aaaa000000000003", "status": "resolved", "rule": "NewOffender",
     "labels": {"alertname": "NewOffender", "severity": "info", "guest": "old"},
     "annotations": {"summary": "long ago"},
     "starts_at": "2026-11-24T01:00:00Z", "ends_at": "2026-11-24T02:00:00Z"},
    {"fingerprint": "aaaa000000000004", "status": "pending", "rule": "AgentSilent",
     "labels": {"alertname": "AgentSilent", "severity": "warning", "host": "kvm-d"},
     "annotations": {}, "starts_at": None, "ends_at": None},
]  # fmt: skip


def test_alerts_are_read_in_either_spelling_and_a_firing_alert_has_no_end(js: Any) -> None:
    ours = js("return alerting.alertOf(arg);", ALERTS[1])
    alertmanager = js(
        "return alerting.alertOf(arg);",
        {
            "fingerprint": "f",
            "status": "firing",
            "labels": {"alertname": "X", "severity": "info"},
            "annotations": {},
            "startsAt": "2026-11-25T11:15:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://x/#/fleet",
        },
    )
    assert (ours["name"], ours["host"], ours["guest"]) == ("HostInconsistent", "kvm-c", None)
    assert ours["silenced"] is True
    assert ours["startsAt"] == alertmanager["startsAt"] == "2026-11-25T11:15:00Z"
    assert ours["endsAt"] is None and alertmanager["endsAt"] is None
    assert alertmanager["url"] == "http://x/#/fleet"


def test_alert_marks_band_each_alert_from_start_to_end_or_the_window_end_while_firing(js: Any) -> None:
    marks = js(
        "return charts.alertMarks(arg.alerts.map(alerting.alertOf), arg.range);",
        {"alerts": ALERTS, "range": RANGE},
    )
    # The alert of the day before and the pending one (never fired) are not drawn.
    assert [(i["name"], i["at"][:16], i["end"][:16]) for i in marks["items"]] == [
        ("GuestKilled", "2026-11-25T09:30", "2026-11-25T09:40"),
        ("HostInconsistent", "2026-11-25T11:15", RANGE["until"][:16]),
    ]
    bands = [s for s in marks["shapes"] if s["type"] == "rect"]
    assert [(b["x0"], b["x1"]) for b in bands] == [
        ("2026-11-25 09:30:00", "2026-11-25 09:40:00"),
        ("2026-11-25 11:15:00", RANGE["until"][:19].replace("T", " ")),
    ]
    assert bands[0]["fillcolor"] != bands[1]["fillcolor"]  # critical and warning differ
    assert [a["text"] for a in marks["annotations"]] == ["GuestKilled kvm-b / db-7", "HostInconsistent kvm-c"]
    # Near the right edge a label reads leftwards, clear of the legend.
    assert [a["xanchor"] for a in marks["annotations"]] == ["left", "right"]
    merged = js(
        "return charts.mergeMarks(charts.changeMarks([], arg.gaps, arg.range), arg.marks);",
        {"gaps": [{"host": "kvm-a", "received_at": "2026-11-25T10:00:00Z", "count": 1, "reason": "overrun",
                   "source": "kmsg", "first_seq": 1, "last_seq": 1}], "range": RANGE, "marks": marks},
    )  # fmt: skip
    assert [i["type"] for i in merged["items"]] == ["alert", "gap", "alert"]


def test_a_silence_from_an_alert_matches_its_identity_not_its_severity_and_expires(js: Any) -> None:
    body = js(
        "const now = new Date('2026-11-25T12:00:00Z');"
        "return alerting.silenceBody(alerting.alertOf(arg), 4 * 3600, 'known', now);",
        ALERTS[0],
    )
    assert body == {
        "matchers": {"alertname": "GuestKilled", "host": "kvm-b", "guest": "db-7"},
        "ends_at": "2026-11-25T16:00:00Z",
        "comment": "known",
    }
    matches = js(
        """const s = alerting.silenceOf({id: 1, matchers: arg.m, starts_at: '2026-11-25T00:00:00Z',
                                         ends_at: '2026-11-26T00:00:00Z'}, new Date('2026-11-25T12:00:00Z'));
           return [s.active, ...arg.alerts.map((a) => alerting.silenceMatches(s, alerting.alertOf(a)))];""",
        {"m": {"host": "kvm-c"}, "alerts": ALERTS},
    )
    assert matches == [True, False, True, False, False]


def test_alerts_fired_together_share_one_label_that_names_each_on_hover(js: Any) -> None:
    together = [
        {**ALERTS[0], "fingerprint": f"f{i}", "starts_at": f"2026-11-25T10:00:{i:02d}Z", "ends_at": None,
         "status": "firing", "labels": {**ALERTS[0]["labels"], "guest": f"vm-{i}"}}
        for i in range(3)
    ]  # fmt: skip
    marks = js(
        "return charts.alertMarks(arg.a.map(alerting.alertOf), arg.range);", {"a": together, "range": RANGE}
    )
    (label,) = marks["annotations"]
    assert label["text"] == "3 alerts"
    assert label["hovertext"].split("<br>") == [f"GuestKilled kvm-b / vm-{i}" for i in range(3)]
    assert len(marks["items"]) == 3  # each is still listed


def test_the_default_range_fits_the_demos_history(js: Any) -> None:
    # A new user's first view is `splitwatch demo` (#17): a default wider than its backfill
    # opened on a mostly empty chart.
    from app.demo import BACKFILL_HOURS

    seconds = js("return state.RANGE_PRESETS[state.DEFAULT_RANGE];")
    assert seconds <= BACKFILL_HOURS * 3600 and js("return state.parseHash('#/fleet').range;") == "6h"


def test_a_rule_with_many_firing_alerts_shows_its_first_ones_and_counts_the_rest(js: Any) -> None:
    alerts = [{"name": "AgentSilent", "severity": "warning", "host": f"kvm-{i}"} for i in range(4)]
    alerts.insert(1, {"name": "GuestKilled", "severity": "critical", "host": "kvm-x"})
    folded = js("return alerting.foldByRule(arg, 2);", alerts)
    assert [a["host"] for a in folded["shown"]] == ["kvm-0", "kvm-x", "kvm-1"]  # the list's order kept
    assert folded["folded"] == [{"name": "AgentSilent", "severity": "warning", "count": 2}]
    assert js("return alerting.foldByRule(arg, 5);", alerts)["folded"] == []
    # The rules' own counts when the list holds only some of a rule's alerts.
    totals = js("return alerting.foldByRule(arg, 2, {AgentSilent: 1000, GuestKilled: 1});", alerts)
    assert totals["folded"] == [{"name": "AgentSilent", "severity": "warning", "count": 998}]
