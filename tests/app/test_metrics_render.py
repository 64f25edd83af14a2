"""app/metrics_render.py writes exactly what prometheus_client's encoders write, in every format."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

import app.metrics_render
from app.metrics_render import CHUNK, EOF, Family, render

FAMILIES = [
    Family(
        "splitwatch_events",
        "counter",
        'Split "and" bus\\ locks,\nper host',
        ("host", "guest", "action"),
        [
            (("kvm-1", 'we"b\\1\nx', "warn"), 7.0),
            (("kvm-{2}", "(host)", "sigbus"), 1e7),
            (("kvm-1", "(other)", "warn"), 0.1 + 0.2),
            (("ünï", "", "warn"), float("inf")),
        ],
    ),
    Family("splitwatch_hosts", "gauge", "Hosts known.", (), [((), 3.0)]),
    Family("splitwatch_host_cpus", "gauge", "CPUs", ("host", "state"), []),
    Family(
        "splitwatch_host_needs_action",
        "gauge",
        "1 when ...",
        ("host",),
        [(("kvm-1",), 0.0), (("kvm-2",), 7.0)],
    ),
]


class Families:
    """The same families through prometheus_client's own path."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for f in FAMILIES:
            cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
            if f.labels:
                family = cls(f.name, f.documentation, labels=list(f.labels))
                for values, n in f.samples:
                    family.add_metric(list(values), n)
            else:
                ((_, value),) = f.samples
                family = cls(f.name, f.documentation, value=value)
            yield family


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "text/plain; version=0.0.4",
        "application/openmetrics-text; version=1.0.0",
        "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
        "application/openmetrics-text; version=1.0.0; escaping=dots",
        "application/openmetrics-text; version=1.0.0; escaping=values",
        "text/plain; version=1.0.0; escaping=dots",
    ],
)
@pytest.mark.parametrize("values_kept", [10_000, 1])
def test_render_writes_what_the_encoder_the_scraper_chose_writes(
    accept: str, values_kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.metrics_render, "MAX_VALUES_KEPT", values_kept)  # values written once, reused
    encoder, _ = choose_encoder(accept)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    expected = encoder(registry).decode().removesuffix(EOF)
    assert b"".join(render(FAMILIES, encoder)).decode() == expected


def test_a_large_family_is_written_in_pieces_and_whole() -> None:
    encoder, _ = choose_encoder("")
    n = CHUNK * 2 + 5
    family = Family("splitwatch_x", "gauge", "x", ("host",), [((f"h{i}",), float(i)) for i in range(n)])
    pieces = list(render([family], encoder))
    assert len(pieces) == 3
    lines = b"".join(pieces).decode().splitlines()
    assert lines[2:] == [f'splitwatch_x{{host="h{i}"}} {float(i)}' for i in range(n)]
