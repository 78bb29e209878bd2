"""Serve the nightly batch metrics (the text file ``push_metrics`` writes) over HTTP.

Used when no Pushgateway is configured: Prometheus scrapes this exporter instead. The file
is re-read on every scrape, so a new nightly run shows up without a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class TextFileCollector(Collector):
    """Re-exposes the metric families of a Prometheus text file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        if not self.path.exists():
            return
        yield from text_string_to_metric_families(self.path.read_text())
