"""Where each stage reads and writes, under one data directory.

```
reference/            catalog.parquet, users.parquet, manifest.json (written once per workload);
                      catalog.json (the catalog's source) when ingest wrote or inferred it
logs/date=D/edge=E/   raw viewing logs, JSON Lines (the seed's record format plus edge_id)
events/date=D/        validated events, Parquet
quarantine/date=D/    rejected lines with their reason, JSON Lines
features/date=D/      users/, user_genres/, user_titles/, user_series/, transitions/, popularity/
                      (Parquet), manifest.json (window; written last)
predictions/date=D/   users/, prefetch/, edge_demand/ (Parquet) and summary.json (models, fill traffic)
reports/date=D/       one JSON report per stage (counts, wall time)
evaluation/date=D/    D's predictions replayed on D+1: report.json, report.md, hit_ratio.png,
                      traces/edge=E.csv (timestamp,obj_id,size: what libCacheSim replays)
metrics/batch.prom    batch metrics in Prometheus text format (when no Pushgateway is set)
```
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    """Paths of one data directory."""

    root: Path

    @property
    def reference(self) -> Path:
        return self.root / "reference"

    @property
    def catalog(self) -> Path:
        return self.reference / "catalog.parquet"

    @property
    def catalog_info(self) -> Path:
        """Where the catalog came from: an operator's file, or inferred from the logs."""
        return self.reference / "catalog.json"

    @property
    def users(self) -> Path:
        return self.reference / "users.parquet"

    def logs(self, date: str) -> Path:
        return self.root / "logs" / f"date={date}"

    def has_logs(self, date: str) -> bool:
        """True when a day's logs were written (a failed Spark write commits no edge files)."""
        logs = self.logs(date)
        return (logs / "_SUCCESS").exists() or any(logs.glob("edge=*/*"))

    def events(self, date: str) -> Path:
        return self.root / "events" / f"date={date}"

    def quarantine(self, date: str) -> Path:
        return self.root / "quarantine" / f"date={date}"

    def features(self, date: str, name: str) -> Path:
        return self.root / "features" / f"date={date}" / name

    def predictions(self, date: str, name: str) -> Path:
        return self.root / "predictions" / f"date={date}" / name

    def report(self, date: str, stage: str) -> Path:
        return self.root / "reports" / f"date={date}" / f"{stage}.json"

    def evaluation(self, date: str) -> Path:
        return self.root / "evaluation" / f"date={date}"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics" / "batch.prom"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)
