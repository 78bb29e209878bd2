"""A small StatsD-to-Prometheus bridge for runs without Docker (``make up``).

It listens for StatsD lines on UDP, maps their names with statsd_exporter's mapping file
(``monitoring/statsd_mapping.yml``: glob and regex matches, ``$n`` captures, labels, help,
``match_metric_type``, ``action: drop``, histogram buckets) and serves the result on
``/metrics``. Tags in InfluxDB form (``name,k=v:1|c``) and DogStatsD form (``|#k:v``) become
labels, as they do in statsd_exporter. Counters are exported with ``_total``, gauges as
they are, timers (milliseconds) and histograms as Prometheus histograms in seconds.

It covers what Airflow sends; statsd_exporter remains the full implementation (compose).
Lines it cannot read are counted in ``statsd_bridge_lines_total{outcome="bad"}`` and the
first few are logged, never silently dropped.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger(__name__)

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TYPES = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer", "s": "gauge"}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


class BadLine(ValueError):
    """A StatsD line that cannot be read."""


@dataclass(frozen=True)
class Sample:
    """One StatsD event: its name, tags, kind (counter, gauge or observer) and value."""

    name: str
    tags: tuple[tuple[str, str], ...]
    kind: str
    value: float
    delta: bool = False  # a gauge change ("+3" or "-3") rather than a new value


def parse_line(line: str) -> Sample:
    """One StatsD line -> a Sample (sample rates scale counters, as statsd_exporter does)."""
    head, sep, rest = line.partition(":")
    if not sep or not head or not rest:
        raise BadLine(f"no 'name:value|type' in {line!r}")
    parts = rest.split("|")
    if len(parts) < 2:
        raise BadLine(f"no type in {line!r}")
    raw, typ = parts[0], parts[1]
    if typ not in TYPES:
        raise BadLine(f"unknown type {typ!r} in {line!r}")
    tags: dict[str, str] = {}
    name, *influx = head.split(",")
    for t in influx:  # InfluxDB style: name,k=v,k2=v2
        k, eq, v = t.partition("=")
        if not eq or not k:
            raise BadLine(f"bad tag {t!r} in {line!r}")
        tags[k] = v
    rate = 1.0
    for p in parts[2:]:
        if p.startswith("@"):
            try:
                rate = float(p[1:])
            except ValueError:
                raise BadLine(f"bad sample rate {p!r} in {line!r}") from None
            if not 0 < rate <= 1:
                raise BadLine(f"sample rate out of (0, 1] in {line!r}")
        elif p.startswith("#"):  # DogStatsD style: |#k:v,k2:v2
            for t in p[1:].split(","):
                k, colon, v = t.partition(":")
                if not colon or not k:
                    raise BadLine(f"bad tag {t!r} in {line!r}")
                tags[k] = v
    try:
        value = float(raw)
    except ValueError:
        raise BadLine(f"bad value {raw!r} in {line!r}") from None
    if not math.isfinite(value):
        raise BadLine(f"value not finite in {line!r}")
    kind = TYPES[typ]
    if kind == "counter":
        value /= rate
    if typ == "ms":
        value /= 1000.0  # milliseconds -> seconds
    if typ == "s":
        value = 1.0  # sets are not counted distinctly here; each member marks the set present
    delta = kind == "gauge" and raw[:1] in "+-"
    return Sample(name, tuple(sorted(tags.items())), kind, value, delta)


@dataclass
class Rule:
    """One mapping of the file: a compiled match, the name and labels it gives."""

    pattern: re.Pattern[str]
    name: str
    labels: dict[str, str]
    help: str
    metric_type: str | None  # match_metric_type: counter, gauge or observer
    drop: bool
    buckets: tuple[float, ...]


def _glob(match: str) -> re.Pattern[str]:
    # statsd_exporter's glob: '*' stands for one dot-free run of characters.
    return re.compile("^" + "([^.]+)".join(re.escape(p) for p in match.split("*")) + "$")


def _expand(template: str, m: re.Match[str]) -> str:
    return re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "", template)


def load_mapping(path: Path) -> list[Rule]:
    """Read a statsd_exporter mapping file; unknown keys are an error, not ignored."""
    doc = yaml.safe_load(path.read_text()) or {}
    unknown = set(doc) - {"defaults", "mappings"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    defaults = doc.get("defaults") or {}
    known = {
        "match",
        "name",
        "labels",
        "help",
        "match_type",
        "match_metric_type",
        "action",
        "observer_type",
        "histogram_options",
        "timer_type",
    }
    rules = []
    for i, m in enumerate(doc.get("mappings") or []):
        bad = set(m) - known
        if bad:
            raise ValueError(f"{path}: mapping {i} has keys this bridge does not handle: {sorted(bad)}")
        match_type = m.get("match_type", defaults.get("match_type", "glob"))
        pattern = _glob(m["match"]) if match_type == "glob" else re.compile(m["match"])
        observer = m.get("observer_type", defaults.get("observer_type", "histogram"))
        if observer != "histogram":
            raise ValueError(f"{path}: mapping {i}: only histogram observers are handled, got {observer!r}")
        buckets = (m.get("histogram_options") or defaults.get("histogram_options") or {}).get("buckets")
        mtype = m.get("match_metric_type")
        rules.append(
            Rule(
                pattern=pattern,
                name=m.get("name", ""),
                labels=dict(m.get("labels") or {}),
                help=m.get("help", ""),
                metric_type={"timer": "observer", "observer": "observer"}.get(mtype, mtype),
                drop=m.get("action") == "drop",
                buckets=tuple(sorted(float(b) for b in buckets)) if buckets else DEFAULT_BUCKETS,
            )
        )
    return rules


@dataclass
class _Family:
    kind: str
    help: str
    buckets: tuple[float, ...]
    series: dict[tuple[tuple[str, str], ...], Any] = field(default_factory=dict)


class Bridge:
    """Holds the mapped metrics; ``handle`` takes one datagram, ``collect`` exports them."""

    def __init__(self, rules: list[Rule], bad_lines_logged: int = 10) -> None:
        self.rules = rules
        self.families: dict[str, _Family] = {}
        self.lines = {"ok": 0, "bad": 0, "dropped": 0, "conflict": 0}
        self._lock = threading.Lock()
        self._bad_logged = bad_lines_logged

    def handle(self, datagram: bytes) -> None:
        for line in datagram.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.handle_line(line.strip())

    def handle_line(self, line: str) -> None:
        try:
            s = parse_line(line)
        except BadLine as e:
            with self._lock:
                self.lines["bad"] += 1
            if self._bad_logged > 0:
                self._bad_logged -= 1
                log.warning("statsd bridge: %s", e)
            return
        name, labels, rule = self._map(s)
        if rule is not None and rule.drop:
            with self._lock:
                self.lines["dropped"] += 1
            return
        kind = "histogram" if s.kind == "observer" else s.kind
        buckets = rule.buckets if rule else DEFAULT_BUCKETS
        with self._lock:
            fam = self.families.setdefault(name, _Family(kind, rule.help if rule else "", buckets))
            if fam.kind != kind:  # one name, two types: statsd_exporter drops these too
                self.lines["conflict"] += 1
                return
            key = tuple(sorted(labels.items()))
            if kind == "counter":
                fam.series[key] = fam.series.get(key, 0.0) + max(s.value, 0.0)
            elif kind == "gauge":
                fam.series[key] = (fam.series.get(key, 0.0) + s.value) if s.delta else s.value
            else:
                counts, total = fam.series.get(key, ([0] * (len(fam.buckets) + 1), 0.0))
                counts[bisect.bisect_left(fam.buckets, s.value)] += 1
                fam.series[key] = (counts, total + s.value)
            self.lines["ok"] += 1

    def _map(self, s: Sample) -> tuple[str, dict[str, str], Rule | None]:
        labels = {_INVALID.sub("_", k): v for k, v in s.tags}
        for rule in self.rules:
            if rule.metric_type and rule.metric_type != s.kind:
                continue
            m = rule.pattern.match(s.name)
            if m:
                labels.update({k: _expand(v, m) for k, v in rule.labels.items()})
                return _expand(rule.name, m), labels, rule
        return _INVALID.sub("_", s.name), labels, None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            lines = CounterMetricFamily("statsd_bridge_lines", "StatsD lines received, by outcome", labels=["outcome"])
            for outcome, n in self.lines.items():
                lines.add_metric([outcome], n)
            yield lines
            for name, fam in sorted(self.families.items()):
                names = sorted({k for key in fam.series for k, _ in key})
                if fam.kind == "counter":
                    out: Any = CounterMetricFamily(name.removesuffix("_total"), fam.help, labels=names)
                elif fam.kind == "gauge":
                    out = GaugeMetricFamily(name, fam.help, labels=names)
                else:
                    out = HistogramMetricFamily(name, fam.help, labels=names)
                for key, v in fam.series.items():
                    d = dict(key)
                    values = [d.get(n, "") for n in names]
                    if fam.kind == "histogram":
                        counts, total = v
                        cum, acc = [], 0
                        for b, c in zip((*fam.buckets, math.inf), counts):
                            acc += c
                            cum.append(("+Inf" if b == math.inf else repr(b), acc))
                        out.add_metric(values, cum, total)
                    else:
                        out.add_metric(values, v)
                yield out


def serve(mapping: Path, statsd_port: int, http_port: int, bind: str = "127.0.0.1") -> None:
    """Run the bridge until interrupted: UDP StatsD in, HTTP /metrics out."""
    bridge = Bridge(load_mapping(mapping))
    registry = CollectorRegistry()
    registry.register(bridge)  # a duck-typed collector
    server, _ = start_http_server(http_port, addr=bind, registry=registry)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, statsd_port))
    print(
        f"statsd bridge: StatsD on udp://{bind}:{sock.getsockname()[1]}, metrics on "
        f"http://{bind}:{server.server_port}/metrics, mapping {mapping}",
        flush=True,
    )
    try:
        while True:
            data, _ = sock.recvfrom(65535)
            bridge.handle(data)
    finally:
        sock.close()
        server.shutdown()
