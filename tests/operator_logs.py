"""An operator's own logs and catalog, written the way log shippers write them (gzip, CRLF,
a BOM, duplicates, lines of other days), from a plain model that is not the project's
generator: movies only, ids that are not the generator's, Zipf popularity per edge."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np

EDGES = ("paris", "lyon")
TITLES = [f"movie-{chr(97 + i % 26)}{i}" for i in range(60)]  # ids with no number at the end pattern


def day_records(date: str, seed: int = 7, users: int = 120, views: int = 600) -> list[dict]:
    rng = np.random.default_rng([seed, dt.date.fromisoformat(date).toordinal()])
    weights = (np.arange(len(TITLES)) + 1.0) ** -0.9
    out = []
    for i in range(views):
        user = int(rng.integers(users))
        edge = EDGES[user % len(EDGES)]
        # each edge likes a different end of the catalog
        w = weights if edge == "paris" else weights[::-1] ** 0.5 * weights
        title = TITLES[int(rng.choice(len(TITLES), p=w / w.sum()))]
        second = int(rng.integers(86_400))
        ts = dt.datetime.fromisoformat(date) + dt.timedelta(seconds=second)
        out.append({"user_id": f"viewer_{user}", "device": ["TV", "Mobile", "Laptop"][user % 3],
                    "content_id": title, "duration": int(rng.integers(1, 130)),
                    "timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "edge_id": edge})
    return out


def write_day(root: Path, date: str, records: list[dict], bad: list[bytes] = ()) -> dict[str, int]:
    """One day in the shippers' shapes: per edge a gzip file (LF) and a plain CRLF file with a
    BOM whose records carry no edge_id (the folder names it); 5 exact duplicates; the bad lines.
    Returns the expected outcome counts."""
    day = root / f"date={date}"
    lines_in = 0
    for n, edge in enumerate(EDGES):
        mine = [r for r in records if r["edge_id"] == edge]
        half = len(mine) // 2
        folder = day / f"edge={edge}"
        folder.mkdir(parents=True, exist_ok=True)
        gz = [json.dumps(r).encode() for r in mine[:half]]
        if n == 0:
            gz += gz[:5] + list(bad)  # at-least-once delivery repeats some lines
        (folder / "part-0.jsonl.gz").write_bytes(gzip.compress(b"\n".join(gz) + b"\n"))
        plain = [json.dumps({k: v for k, v in r.items() if k != "edge_id"}).encode() for r in mine[half:]]
        (folder / "part-1.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(plain) + b"\r\n")
        lines_in += len(gz) + len(plain)
    return {"lines_in": lines_in, "duplicates": 5, "quarantined": len(bad), "accepted": len(records)}


def write_catalog_csv(path: Path, columns: tuple[str, ...] = ("content_id", "size_bytes")) -> Path:
    rows = [{"content_id": t, "size_bytes": 1_000_000_000 + 7_000_000 * i, "genre": "drama"}
            for i, t in enumerate(TITLES)]
    path.write_text("\n".join([",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]) + "\n")
    return path
