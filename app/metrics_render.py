"""The database families of /metrics as exposition text, fast enough for a whole fleet (issue 13).

prometheus_client renders each sample through its general path (labels sorted, each name and
value escaped, per sample): ~10 µs a sample, so the ~225,000 series of a 10,000-host fleet took
1.5 s of CPU in the text format and 2.5 s in OpenMetrics — most of a scrape. Here the encoder
the scraper asked for renders each family ONCE, with one probe sample whose label values are
markers; the sample line it wrote becomes a template (its literal parts, and which label goes
where), and every real sample is that template joined with its escaped values. The text is
therefore the encoder's own, byte for byte (tests/app/test_metrics_render.py compares them), in
whichever format and name escaping the Accept header chose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_go_float

Encoder = Callable[[Collector], bytes]
floatToGoString: Callable[[float], str] = _untyped_go_float  # how both encoders write a value
EOF = "# EOF\n"  # OpenMetrics' last line: the encoder of the ingest figures writes it
MARK = "\x00"  # around each probe label value; no encoder escapes it, no label holds it
CHUNK = 4096  # sample lines per piece of the response: the body is never held whole
MAX_VALUES_KEPT = 10_000  # values written once per scrape and reused


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its samples are (label values in `labels` order, value)."""

    name: str  # without _total for a counter, as prometheus_client names families
    type: Literal["counter", "gauge"]
    documentation: str
    labels: Sequence[str]
    samples: Iterable[tuple[Sequence[str], float]]


class _Probe(Collector):
    def __init__(self, family: CounterMetricFamily | GaugeMetricFamily) -> None:
        self.family = family

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield self.family


def _escape(value: str) -> str:
    # What both encoders do to a label value (prometheus_client openmetrics._escape, UTF-8).
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@dataclass(frozen=True, slots=True)
class _Template:
    header: str  # HELP and TYPE lines
    line: str  # str.format pattern of a sample line: {i} the i-th label value, {n} the value


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _template(family: Family, encoder: Encoder) -> _Template:
    cls = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
    if family.labels:
        probe = cls(family.name, family.documentation, labels=list(family.labels))
        probe.add_metric([f"{MARK}{i}{MARK}" for i in range(len(family.labels))], 0.0)
    else:
        probe = cls(family.name, family.documentation, value=0.0)
    text = encoder(_Probe(probe)).decode().removesuffix(EOF)
    lines = text.splitlines(keepends=True)
    header = "".join(line for line in lines if line.startswith("#"))
    (sample,) = [line for line in lines if not line.startswith("#")]
    value = " " + floatToGoString(0.0) + "\n"
    if not sample.endswith(value):
        raise ValueError(f"unexpected sample line from the encoder: {sample!r}")
    # literal, label index, literal, label index, ..., literal
    pieces = sample[: -len(value)].split(MARK)
    line = "".join(_braces(p) if k % 2 == 0 else "{" + p + "}" for k, p in enumerate(pieces))
    return _Template(header, f"{line} {{{len(family.labels)}}}\n")


def render(families: Iterable[Family], encoder: Encoder) -> Iterator[bytes]:
    """The families as `encoder` writes them (without OpenMetrics' EOF line), in pieces."""
    escaped: dict[str, str] = {}  # host and guest names recur across families
    written: dict[float, str] = {}  # and values: 0, 1, a host's 64 CPUs...
    for family in families:
        t = _template(family, encoder)
        line = t.line.format
        out = [t.header]
        for values, number in family.samples:
            labels = []
            for v in values:
                e = escaped.get(v)
                if e is None:
                    e = escaped[v] = _escape(v)
                labels.append(e)
            w = written.get(number)
            if w is None:
                w = floatToGoString(number)
                if len(written) < MAX_VALUES_KEPT:
                    written[number] = w
            out.append(line(*labels, w))
            if len(out) >= CHUNK:
                yield "".join(out).encode()
                out = []
        if out:
            yield "".join(out).encode()


__all__ = ["EOF", "Family", "render"]
