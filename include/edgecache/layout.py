"""Where each stage reads and writes, under one data directory.

```
reference/            catalog.parquet, users.parquet, manifest.json (written once per workload);
                      catalog.json (the catalog's source) when ingest wrote or inferred it
logs/date=D/edge=E/   raw viewing logs, JSON Lines (the seed's record format plus edge_id)
events/date=D/        validated events, Parquet
quarantine/date=D/    rejected lines with their reason, JSON Lines
features/date=D/      users/, user_genres/, user_titles/, user_series/, transitions/, popularity/
                      (Parquet), manifest.json (the window)
predictions/date=D/   users/, prefetch/, edge_demand/ (Parquet) and summary.json (models, fill traffic)
reports/date=D/       one JSON report per stage (counts, wall time)
evaluation/date=D/    D's predictions replayed on D+1: report.json, report.md, hit_ratio.png,
                      traces/edge=E.csv (timestamp,obj_id,size: what libCacheSim replays)
metrics/batch.prom    batch metrics in Prometheus text format (when no Pushgateway is set)
edge_keys/E.key       each edge's secret for its share of the DP noise (only with fl_epsilon and
                      fl_demand; an edge keeps its own, and the server never reads it)
```

Each day folder of logs, events, quarantine, features and predictions is written whole
under a temporary name beside it, gets a ``_COMMITTED`` marker last and is then renamed into
place (``staging``). Readers and every "already done" check require the marker
(``committed``), so a job killed part-way leaves the previous good folder, or none, but never
a half that is trusted. Spark's ``_SUCCESS`` cannot serve: it marks one table, and a day
folder holds several. ``reference/`` and ``evaluation/date=D/`` are swapped in whole the
same way but carry no marker: the reference's manifest already says which workload it holds,
and no stage reads the evaluation back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMIT_MARKER = "_COMMITTED"


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
        """True when a day's logs were committed by generate or ingest."""
        return committed(self.logs(date))

    def events(self, date: str) -> Path:
        return self.root / "events" / f"date={date}"

    def quarantine(self, date: str) -> Path:
        return self.root / "quarantine" / f"date={date}"

    def features_day(self, date: str) -> Path:
        """The folder of a day's feature tables and manifest: committed as one."""
        return self.root / "features" / f"date={date}"

    def features(self, date: str, name: str) -> Path:
        return self.features_day(date) / name

    def predictions_day(self, date: str) -> Path:
        """The folder of a day's predictions and summary: committed as one."""
        return self.root / "predictions" / f"date={date}"

    def predictions(self, date: str, name: str) -> Path:
        return self.predictions_day(date) / name

    def report(self, date: str, stage: str) -> Path:
        return self.root / "reports" / f"date={date}" / f"{stage}.json"

    def evaluation(self, date: str) -> Path:
        return self.root / "evaluation" / f"date={date}"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics" / "batch.prom"

    @property
    def edge_keys(self) -> Path:
        return self.root / "edge_keys"


def shift_day(date: str, days: int) -> str:
    """The ISO date ``days`` after ``date`` (before it, when negative): the day folders' names."""
    return (dt.date.fromisoformat(date) + dt.timedelta(days=days)).isoformat()


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


def committed(path: Path) -> bool:
    """True when ``path`` is a folder that a stage finished writing (see ``staging``)."""
    return (path / COMMIT_MARKER).is_file()


@contextmanager
def staging(path: Path, mark: bool = True) -> Iterator[Path]:
    """Write the folder ``path`` whole or not at all.

    Yields an empty folder ``.<name>.tmp-<pid>`` beside ``path`` to write into. When the block
    ends without an error, the folder gets its ``_COMMITTED`` marker (unless ``mark`` is
    false: for outputs no stage reads back) and takes the place of ``path``; on an error it
    is removed and ``path`` stays as it was. A killed process cannot clean up: the next
    staging of the same path removes what it left behind.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    remove_leftovers(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if mark:
        (tmp / COMMIT_MARKER).touch()
    swap_in(tmp, path)


def swap_in(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path``, replacing what was there.

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed
    aside: a reader sees the old folder, for an instant none, then the new one. A kill
    between the two renames leaves none, and the day is written again on the next run.
    """
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def discard(path: Path) -> None:
    """Remove the folder ``path``, its marker first, so that a kill part-way through never
    leaves something that still looks committed."""
    (path / COMMIT_MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(path: Path) -> None:
    """Remove the temporary and set-aside folders of ``path`` that killed processes left.

    A leftover's name carries the id of the process that made it; one whose process still
    runs on this machine is another writer's work in progress and is left alone. Names a
    writer derived from a temporary folder's (``..date=D.tmp-<pid>.tmp``) count too.
    """
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"\.+{re.escape(path.name)}\.(?:tmp|old)-(\d+)(?:\..*)?")
    for leftover in path.parent.iterdir():
        match = pattern.fullmatch(leftover.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier attempt, which failed or was interrupted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
