"""Secure aggregation with pairwise additive masks (the scheme of Bonawitz et al., 2017,
without its secret sharing).

Each pair of edges agrees on a secret over X25519 (only public keys pass through the
server). Edge i adds, for every other edge j, the mask PRG(seed_ij) when i < j and
subtracts it when i > j; in the sum over all edges every mask appears once with each
sign and cancels, so the server learns the sum and nothing of one edge's update.
Arithmetic is exact: values are fixed-point integers modulo 2**64 (numpy uint64 wraps),
so masks cancel to the last bit.

When an edge drops out after the others masked against it, its masks do not cancel. The
survivors then reveal their pair seeds with the dropped edge (only those), and the server
removes the dangling masks: it learns the survivors' sum. (The full protocol recovers
those seeds by threshold secret sharing instead, so no survivor has to be trusted.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

SCALE = 2.0**24  # fixed-point step 6e-8; each value must stay below 2**38 in size, and so must the sum


def encode(values: np.ndarray) -> np.ndarray:
    """Float values as fixed-point integers in the ring Z / 2**64."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all() or np.abs(v).max(initial=0.0) * SCALE >= 2.0**62:
        raise ValueError("values must be finite and below 2**38 in size")
    return np.round(v * SCALE).astype(np.int64).view(np.uint64)


def decode(ring: np.ndarray) -> np.ndarray:
    """The float values of a ring element (a sum of encodings) made by ``encode``."""
    return np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64) / SCALE


def mask(seed: bytes, size: int) -> np.ndarray:
    """The pseudo-random mask a pair derives from its shared seed."""
    rng = np.random.Generator(np.random.PCG64(np.frombuffer(hashlib.sha256(seed).digest(), dtype=np.uint32)))
    return rng.integers(0, 2**64, size=size, dtype=np.uint64, endpoint=False)


@dataclass
class Client:
    """One edge's side of the protocol."""

    edge_id: str
    _key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)

    @classmethod
    def from_private_bytes(cls, edge_id: str, raw: bytes) -> Client:
        """The client of a key made by ``private_bytes`` (so an edge's task can hold its key)."""
        return cls(edge_id, X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def pair_seed(self, other: str, other_public: bytes, round_id: int) -> bytes:
        """The seed this edge shares with ``other`` for one round (same on both sides)."""
        secret = self._key.exchange(X25519PublicKey.from_public_bytes(other_public))
        a, b = sorted((self.edge_id, other))
        return hashlib.sha256(secret + f"{round_id}|{a}|{b}".encode()).digest()

    def masked(self, values: np.ndarray, public_keys: Mapping[str, bytes], round_id: int) -> np.ndarray:
        """``values`` encoded and masked against every other edge in ``public_keys``."""
        out = encode(values)
        for other, pub in sorted(public_keys.items()):
            if other == self.edge_id:
                continue
            m = mask(self.pair_seed(other, pub, round_id), out.size)
            out = out + m if self.edge_id < other else out - m
        return out


def unmask_sum(masked: Mapping[str, np.ndarray], revealed: Mapping[tuple[str, str], bytes] | None = None) -> np.ndarray:
    """The sum of the masked updates that arrived, as floats.

    ``revealed`` maps (survivor, dropped edge) to their pair seed, for every edge that was
    in the round's key list but sent no update; the survivor's dangling mask is removed.
    """
    if not masked:
        raise ValueError("no masked updates")
    total = np.zeros(next(iter(masked.values())).size, dtype=np.uint64)
    for values in masked.values():
        total = total + values
    for (survivor, dropped), seed in (revealed or {}).items():
        if survivor not in masked or dropped in masked:
            raise ValueError(f"a revealed seed must pair a survivor with a dropped edge: {survivor}, {dropped}")
        m = mask(seed, total.size)
        total = total - m if survivor < dropped else total + m
    return decode(total)
