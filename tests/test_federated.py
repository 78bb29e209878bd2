"""Federated learning's pure parts: FedAvg against a hand computation, the shared model
vector, and secure aggregation's masks (they cancel, they hide, and dropouts recover)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecache.federated.model import Update, from_vector, to_vector
from edgecache.federated.secagg import SCALE, Client, decode, encode, unmask_sum
from edgecache.federated.server import average_of_sums, fedavg
from edgecache.scorer import LinearModel

EDGES = ("edge-01", "edge-02", "edge-03", "edge-04")


def test_fedavg_by_hand():
    ups = [Update(np.array([1.0, 2.0]), 1), Update(np.array([3.0, 4.0]), 3), Update(np.array([9.0, 9.0]), 0)]
    # (1 x 1 + 3 x 3) / 4 and (1 x 2 + 3 x 4) / 4; an edge with no rows has no say
    assert fedavg(ups).tolist() == [2.5, 3.5]


def test_fedavg_rejects_what_cannot_be_averaged():
    with pytest.raises(ValueError, match="no updates"):
        fedavg([])
    with pytest.raises(ValueError, match="zero sample count"):
        fedavg([Update(np.array([1.0]), 0)])
    with pytest.raises(ValueError, match="shape"):
        fedavg([Update(np.array([1.0]), 1), Update(np.array([1.0, 2.0]), 1)])
    with pytest.raises(ValueError, match="finite"):
        Update(np.array([np.nan]), 1)
    with pytest.raises(ValueError, match="non-negative"):
        Update(np.array([1.0]), -1)


def test_model_vector_round_trip():
    m = LinearModel(("a", "b"), (0.5, -1.25), 0.75, "logit")
    v = to_vector(m)
    assert v.tolist() == [0.5, -1.25, 0.75]
    assert from_vector(v, m.features, m.link) == m
    with pytest.raises(ValueError, match="expected 3 parameters"):
        from_vector(v[:2], m.features, m.link)


def test_fixed_point_encoding_is_exact_to_its_step():
    x = np.array([0.0, 1.5, -2.25, 1e-9, -123456.789])
    assert np.abs(decode(encode(x)) - x).max() <= 0.5 / SCALE
    with pytest.raises(ValueError, match="finite"):
        encode(np.array([2.0**40]))


@pytest.fixture()
def round_setup():
    rng = np.random.default_rng(7)
    clients = {e: Client(e) for e in EDGES}
    keys = {e: c.public_key() for e, c in clients.items()}
    plain = {e: rng.normal(size=18) * 10 for e in EDGES}
    return clients, keys, plain


def test_pair_seeds_agree_on_both_sides_and_change_every_round(round_setup):
    clients, keys, _ = round_setup
    a, b = clients["edge-01"], clients["edge-03"]
    assert a.pair_seed("edge-03", keys["edge-03"], 5) == b.pair_seed("edge-01", keys["edge-01"], 5)
    assert a.pair_seed("edge-03", keys["edge-03"], 5) != a.pair_seed("edge-03", keys["edge-03"], 6)


def test_masks_cancel_in_the_sum(round_setup):
    clients, keys, plain = round_setup
    masked = {e: c.masked(plain[e], keys, round_id=1) for e, c in clients.items()}
    assert np.abs(unmask_sum(masked) - sum(plain.values())).max() <= len(EDGES) * 0.5 / SCALE


def test_secure_fedavg_equals_plain_fedavg(round_setup):
    clients, keys, plain = round_setup
    counts = {"edge-01": 5000, "edge-02": 120, "edge-03": 40, "edge-04": 900}
    # each edge masks count x params; the counts themselves are sent in the clear
    masked = {e: c.masked(counts[e] * plain[e], keys, round_id=2) for e, c in clients.items()}
    secure = average_of_sums(unmask_sum(masked), sum(counts.values()))
    plain_avg = fedavg([Update(plain[e], counts[e]) for e in EDGES])
    assert np.abs(secure - plain_avg).max() < 1e-6


def test_one_masked_update_alone_reveals_nothing_useful(round_setup):
    clients, keys, plain = round_setup
    alone = decode(clients["edge-02"].masked(plain["edge-02"], keys, round_id=3))
    # the mask is uniform over the ring: the values seen are nowhere near the real ones
    assert np.abs(alone - plain["edge-02"]).min() > 1e3
    # and a mask over no other edge is no mask at all, so a round needs two edges or more
    lone = {"edge-02": keys["edge-02"]}
    assert np.allclose(decode(clients["edge-02"].masked(plain["edge-02"], lone, 3)), plain["edge-02"], atol=1e-6)


def test_an_edge_that_drops_out_is_recovered_from_the_survivors_seeds(round_setup):
    clients, keys, plain = round_setup
    survivors = ("edge-01", "edge-02", "edge-04")  # edge-03 published its key, then never sent its update
    masked = {e: clients[e].masked(plain[e], keys, round_id=4) for e in survivors}
    want = sum(plain[e] for e in survivors)
    assert np.abs(unmask_sum(masked) - want).min() > 1e3  # edge-03's masks dangle
    revealed = {(e, "edge-03"): clients[e].pair_seed("edge-03", keys["edge-03"], 4) for e in survivors}
    assert np.abs(unmask_sum(masked, revealed) - want).max() <= len(survivors) * 0.5 / SCALE
    with pytest.raises(ValueError, match="survivor"):
        unmask_sum(masked, {("edge-03", "edge-01"): b"x"})
