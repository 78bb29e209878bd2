"""Service-wide totals per title, summed across the edges by secure aggregation.

The demand model reads one figure that no edge holds alone: a title's decayed requests over
all edges (its ``global`` feature). Here each edge turns its own counts into a vector over
the catalog's titles (the catalog is public: every edge has it), masks it with the pairwise
masks of ``secagg``, and sends only that; the server adds the vectors up, the masks cancel,
and it learns the totals and nothing of one edge's counts. An edge's vector has one slot per
title whether or not the edge saw it, so even which titles an edge served stays hidden.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from edgecache.federated.privacy import DEFAULT_DELTA, epsilon_spent, noise_for_epsilon
from edgecache.federated.secagg import Client, unmask_sum

MASKED_SCHEMA = "edge_id string, masked array<bigint>"


@dataclass(frozen=True)
class TotalsPrivacy:
    """DP on the totals: ``releases`` sums a night (each spending its share of ``epsilon``),
    of a column in which one viewer adds at most ``clip`` in L2 norm. Each edge draws its
    noise from a secret it keeps in ``key_dir`` (``edge_key``)."""

    epsilon: float
    clip: float
    key_dir: Path
    releases: int = 2  # the training day's totals and the scored day's

    @cached_property
    def noise_multiplier(self) -> float:
        return noise_for_epsilon(self.epsilon, 1.0, self.releases)

    def report(self) -> dict[str, Any]:
        z = self.noise_multiplier
        return {
            "unit": "viewer",
            "epsilon": self.epsilon,
            "delta": DEFAULT_DELTA,
            "releases": self.releases,
            "viewer_clip": self.clip,
            "noise_multiplier": z,
            "noise_std": z * self.clip,
            # a viewer who used two edges in the window (one who moved) counts at both
            "epsilon_viewer_at_two_edges": epsilon_spent(z / math.sqrt(2), 1.0, self.releases),
        }


def edge_key(key_dir: Path, edge: str) -> bytes:
    """The edge's secret for its noise, made on first use (32 random bytes, readable by the
    owner only). Kept, so that a job run again sends what it sent: fresh noise for the same
    sum would let the two releases be averaged."""
    path = key_dir / f"{edge}.key"
    if not path.exists():
        key_dir.mkdir(parents=True, exist_ok=True)
        tmp = key_dir / f".{edge}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # whole or not at all; a key another job made first stays
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


def edge_noise(key: bytes, nonce: str, titles: Sequence[str], std: float) -> np.ndarray:
    """An edge's share of the noise for each of ``titles`` in the sum named ``nonce``, drawn
    from its secret: the same title of the same sum gets the same noise, even when the
    catalog has grown in between, and only the edge can take it away."""
    base = hmac.new(key, nonce.encode(), hashlib.sha256).digest()
    seeds = (int.from_bytes(hashlib.sha256(base + t.encode()).digest()[:16], "big") for t in titles)
    return np.array([np.random.default_rng(seed).normal(0.0, std) for seed in seeds])


def masked_vectors(
    rows: DataFrame,
    titles: Sequence[str],
    value: str,
    private: Mapping[str, bytes],
    public: Mapping[str, bytes],
    round_id: int = 0,
    noise: tuple[float, Mapping[str, bytes], str] | None = None,
) -> DataFrame:
    """What each edge sends (``MASKED_SCHEMA``): its sums of ``value`` per title of ``titles``,
    with ``noise`` (std, each edge's key, the sum's name) plus its Gaussian noise, masked
    against every edge in ``public``, made by the Spark task that holds its rows."""
    index = {t: i for i, t in enumerate(titles)}

    def mask_edge(pdf: pd.DataFrame) -> pd.DataFrame:
        edge = pdf["edge_id"].iloc[0]
        vector = np.zeros(len(index))
        slots = pdf["content_id"].map(index)
        known = slots.notna().to_numpy()  # a title outside the catalog has no slot
        np.add.at(vector, slots[known].astype(np.int64).to_numpy(), pdf[value].to_numpy(dtype=np.float64)[known])
        if noise is not None:
            std, keys, nonce = noise
            vector += edge_noise(keys[edge], f"{nonce}/{round_id}", titles, std)
        ring = Client.from_private_bytes(edge, private[edge]).masked(vector, public, round_id)
        return pd.DataFrame({"edge_id": [edge], "masked": [ring.view(np.int64).tolist()]})

    return rows.select("edge_id", "content_id", value).groupBy("edge_id").applyInPandas(mask_edge, MASKED_SCHEMA)


def secure_totals(
    rows: DataFrame,
    titles: Sequence[str],
    value: str,
    round_id: int = 0,
    privacy: TotalsPrivacy | None = None,
    nonce: str = "",
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per title of ``titles``, the sum of ``value`` over every edge's (edge_id, content_id)
    ``rows``, and a report (edges, titles, bytes received). The driver, the server here, sees
    the edges' masked vectors only. With ``privacy`` the sum carries the Gaussian noise (a
    negative total reads as 0): ``nonce`` names the sum (the day it is of), and the same sum
    gets the same noise."""
    edges = sorted(r["edge_id"] for r in rows.select("edge_id").distinct().collect())
    if not edges:
        return dict.fromkeys(titles, 0.0), {"edges": [], "titles": len(titles), "bytes_received": 0}
    # Fresh key pairs for this sum; each edge's task uses its own private key only.
    clients = {e: Client(e) for e in edges}
    private = {e: c.private_bytes() for e, c in clients.items()}
    public = {e: c.public_key() for e, c in clients.items()}
    noise = None
    if privacy is not None:
        # each edge adds 1/edges of the variance: the sum has all of it
        std = privacy.noise_multiplier * privacy.clip / math.sqrt(len(edges))
        noise = (std, {e: edge_key(privacy.key_dir, e) for e in edges}, nonce)
    got = masked_vectors(rows, titles, value, private, public, round_id, noise).collect()
    masked = {r["edge_id"]: np.array(r["masked"], dtype=np.int64).view(np.uint64) for r in got}
    total = unmask_sum(masked)
    if privacy is not None:
        total = np.maximum(total, 0.0)
    report = {"edges": edges, "titles": len(titles), "bytes_received": sum(m.nbytes for m in masked.values())}
    if privacy is not None:
        report["dp"] = privacy.report()
    return dict(zip(titles, total.tolist())), report
