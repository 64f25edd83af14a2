"""The pure modules (state.js: URL <-> view state; charts.js: API JSON -> Plotly traces), run
in Chromium as the dashboard loads them, on inputs shaped like the API's answers (#5)."""

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
    ]
    for wanted in states:
        back = js(
            """const start = state.parseHash('#/fleet');
               return state.parseHash(state.formatHash(state.withChanges(start, arg)));""",
            wanted,
        )
        for key, value in wanted.items():
            assert back[key] == value, (key, wanted, back)


def test_an_unknown_page_or_preset_falls_back_to_the_fleet_over_24h(js: Any) -> None:
    back = js("return state.parseHash('#/alerts?range=2y&limit=7');")
    assert back["page"] == "fleet" and back["range"] == "24h" and back["limit"] == 100
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
     "ratelimit": None, "mitigate": 1, "drift": False, "cpus_off": 0,
     "cpus": [{"cpu": 0, "sld_on": True}, {"cpu": 1, "sld_on": True}]},
    {"observed_at": "2026-11-25T10:00:00Z", "boot_id": "b1", "kernel": "6.8", "mode": "warn",
     "ratelimit": None, "mitigate": 1, "drift": True, "cpus_off": 1,
     "cpus": [{"cpu": 0, "sld_on": True}, {"cpu": 1, "sld_on": False}]},
    {"observed_at": "2026-11-25T11:00:00Z", "boot_id": "b2", "kernel": "6.9", "mode": "fatal",
     "ratelimit": None, "mitigate": 1, "drift": False, "cpus_off": 0,
     "cpus": [{"cpu": 0, "sld_on": True}, {"cpu": 1, "sld_on": None, "error": "EIO reading MSR 0x33"}]},
]  # fmt: skip
RANGE = {"since": "2026-11-25T09:00:00Z", "until": "2026-11-25T12:00:00Z"}


def test_marks_show_a_reboot_into_another_mode_a_drift_span_and_a_gap(js: Any) -> None:
    gaps = [{"host": "kvm-a", "received_at": "2026-11-25T11:30:00Z", "count": 7, "reason": "overrun",
             "source": "kmsg", "first_seq": 10, "last_seq": 16}]  # fmt: skip
    marks = js(
        "return charts.changeMarks([{name: 'kvm-a', states: arg.states}], arg.gaps, arg.range);",
        {"states": STATES, "gaps": gaps, "range": RANGE},
    )
    kinds = [(i["type"], i["at"][:16]) for i in marks["items"]]
    assert kinds == [
        ("drift", "2026-11-25T10:00"),
        ("change", "2026-11-25T11:00"),
        ("gap", "2026-11-25T11:30"),
    ]
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
