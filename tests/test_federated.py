"""Federated learning's pure parts: FedAvg against a hand computation, the shared model
vector, and secure aggregation's masks (they cancel, they hide, and dropouts recover)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from edgecache.federated.client import (
    LocalPlan,
    SecureRound,
    collect_updates,
    edge_updates,
    local_update,
    validation,
)
from edgecache.federated.model import Update, clip, contribution, from_vector, to_vector
from edgecache.federated.privacy import epsilon_spent, noise_for_epsilon
from edgecache.federated.secagg import SCALE, Client, decode, encode, unmask_sum
from edgecache.federated.server import Privacy, aggregate, average_of_sums, fedavg, plain_sum, run_rounds
from edgecache.federated.config import FedConfig
from edgecache.federated.training import apply_by_edge, train_federated, train_local
from edgecache.pipeline.scorer import LinearModel, fit_logistic, poisson_newton

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


def test_one_newton_step_by_hand():
    # x = +1 (watched) and -1 (not), from zero: p = 0.5 for both; the gradient is
    # (-0.5, 0) and the Hessian diag(0.25, 0.25), so the step lands on (2, 0)
    u = local_update(np.array([[1.0], [-1.0]]), np.array([1.0, 0.0]), np.zeros(2), steps=1, reg=0.0)
    assert u.params.tolist() == pytest.approx([2.0, 0.0], abs=1e-9) and u.count == 2
    # zero steps leave the global model as it was; an edge with no rows says so
    assert local_update(np.zeros((0, 1)), np.zeros(0), np.array([0.3, 0.1]), 3, 0.1).count == 0
    with pytest.raises(ValueError, match="init must have 2"):
        local_update(np.zeros((1, 1)), np.zeros(1), np.zeros(3), 1, 0.0)


def synthetic_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    eta = x @ np.array([1.5, -1.0, 0.25]) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    edges = [f"edge-0{i % 3 + 1}" for i in range(n)]
    return x, y, edges


def test_local_training_minimises_the_central_objective(spark):
    """Pooled into one edge, local Newton steps reach MLlib's fit of the same rows: the
    federated and central scorers optimise the same thing."""
    x, y, _ = synthetic_rows(3000, seed=1)
    df = spark.createDataFrame([(*map(float, r), float(t)) for r, t in zip(x, y)], "a double, b double, c double, label double")
    central = to_vector(fit_logistic(df, ("a", "b", "c"), reg_param=1e-3, max_iter=100))
    local = local_update(x, y, np.zeros(4), steps=12, reg=1e-3).params
    assert np.abs(local - central).max() < 1e-3


def test_each_edge_trains_alone_and_only_parameters_leave(spark):
    x, y, edges = synthetic_rows(900, seed=2)
    rows = spark.createDataFrame(
        [(f"U{i}", f"C{i % 50}", e, *map(float, r), float(t)) for i, (r, t, e) in enumerate(zip(x, y, edges))],
        "user_id string, content_id string, edge_id string, a double, b double, c double, label double")
    frame = edge_updates(rows, ("a", "b", "c"), LocalPlan(np.zeros(4), steps=8, reg=1e-3))
    # what crosses from the tasks to the server: an edge id, a fixed-size array, a count
    # and three validation figures; nothing per viewer, per title or per row
    assert frame.schema.simpleString() == (
        "struct<edge_id:string,params:array<double>,count:bigint,masked:array<bigint>,"
        "val_rows:bigint,val_logloss:double,val_auc:double>")
    raw = frame.collect()
    assert len(raw) == 3 and {len(r["params"]) for r in raw} == {4}
    ids = {r["user_id"] for r in rows.collect()} | {r["content_id"] for r in rows.collect()}
    assert not ids & {str(v) for r in raw for v in r.asDict().values()}
    got = collect_updates(frame)
    assert [e for e, _ in got] == ["edge-01", "edge-02", "edge-03"]
    for edge, update in got:
        mine = np.array([e == edge for e in edges])
        want = local_update(x[mine], y[mine], np.zeros(4), steps=8, reg=1e-3)
        assert update.count == want.count == 300
        assert np.abs(update.params - want.params).max() < 1e-9  # the edge's own rows, and only them


def test_clip_by_hand():
    assert clip(np.array([3.0, 4.0]), 1.0).tolist() == pytest.approx([0.6, 0.8])
    assert clip(np.array([3.0, 4.0]), 10.0).tolist() == [3.0, 4.0]
    with pytest.raises(ValueError):
        clip(np.array([1.0]), 0.0)


def numpy_edges(seed: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Three edges of very different sizes, each with its own rows."""
    x, y, _ = synthetic_rows(2600, seed)
    return {"edge-01": (x[:2000], y[:2000]), "edge-02": (x[2000:2500], y[2000:2500]), "edge-03": (x[2500:], y[2500:])}


def test_rounds_pick_edges_count_bytes_and_converge():
    data = numpy_edges()
    asked = []

    def train_round(params, chosen, round_id):
        asked.append(chosen)
        return plain_sum([local_update(*data[e], params, steps=1, reg=1e-3) for e in chosen], params)

    final, stats = run_rounds(train_round, np.zeros(4), list(data), rounds=30, fraction=0.5, seed=1)
    assert [len(c) for c in asked] == [2] * 30 and len(set(asked)) > 1  # ceil(0.5 x 3), varying
    assert asked == [s.edges for s in stats]
    assert all(s.update_bytes == 2 * (4 * 8 + 8) for s in stats)  # two arrays of 4 doubles and two counts
    # sampled edges pull towards their own optima, so the model settles into a small wobble
    assert stats[-1].change < 0.1 * stats[0].change
    # the same seed picks the same edges
    _, again = run_rounds(train_round, np.zeros(4), list(data), rounds=30, fraction=0.5, seed=1)
    assert [s.edges for s in again] == [s.edges for s in stats]


def test_full_participation_reaches_the_pooled_model_closely():
    data = numpy_edges()

    def train_round(params, chosen, round_id):
        return plain_sum([local_update(*data[e], params, steps=1, reg=1e-3) for e in chosen], params)

    fed, _ = run_rounds(train_round, np.zeros(4), list(data), rounds=40)
    pooled = local_update(np.vstack([d[0] for d in data.values()]), np.concatenate([d[1] for d in data.values()]),
                          np.zeros(4), steps=15, reg=1e-3).params
    assert np.abs(fed - pooled).max() < 0.05


def test_dp_fedavg_clips_then_adds_noise_of_the_stated_size():
    params = np.zeros(3)
    ups = {"a": Update(np.array([30.0, 40.0, 0.0]), 10), "b": Update(np.array([0.0, 0.0, 0.5]), 1000)}

    def train_round(p, chosen, round_id):
        return plain_sum([ups[e] for e in chosen], p, Privacy(clip_norm=1.0, noise_multiplier=0.0))

    quiet, _ = run_rounds(train_round, params, ["a", "b"], rounds=1, privacy=Privacy(clip_norm=1.0, noise_multiplier=0.0))
    # equal weights after clipping: ((0.6, 0.8, 0) + (0, 0, 0.5)) / 2, whatever the counts
    assert quiet.tolist() == pytest.approx([0.3, 0.4, 0.25])
    draws = np.array([run_rounds(train_round, params, ["a", "b"], rounds=1, seed=s,
                                 privacy=Privacy(clip_norm=1.0, noise_multiplier=2.0))[0] - quiet
                      for s in range(400)])
    assert draws.std() == pytest.approx(2.0 * 1.0 / 2, rel=0.1)  # z x C / edges


def test_summed_contributions_give_fedavg_and_dp_fedavg_by_hand():
    start = np.zeros(2)
    ups = [Update(np.array([1.0, 2.0]), 1), Update(np.array([3.0, 4.0]), 3)]
    summed = plain_sum(ups, start).summed
    assert summed.tolist() == [10.0, 14.0, 4.0]  # 1 x (1, 2) + 3 x (3, 4), weight 4
    rng = np.random.default_rng(0)
    assert aggregate(start, summed, None, rng).tolist() == fedavg(ups).tolist() == [2.5, 3.5]
    # DP: each change clipped to norm 1, equal weights: ((1, 2)/|.| + (3, 4)/5) / 2
    dp = Privacy(clip_norm=1.0, noise_multiplier=0.0)
    assert contribution(ups[1], start, 1.0).tolist() == pytest.approx([0.6, 0.8, 1.0])
    got = aggregate(start, plain_sum(ups, start, dp).summed, dp, rng)
    assert got.tolist() == pytest.approx([(1 / 5**0.5 + 0.6) / 2, (2 / 5**0.5 + 0.8) / 2])


def test_validation_figures_by_hand():
    x, y = np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([0.0, 1.0, 0.0, 1.0])
    flat = validation(x, y, np.zeros(2))
    assert flat["rows"] == 4 and flat["logloss"] == pytest.approx(np.log(2)) and flat["auc"] == 0.5  # all tied
    # scores rise with x: of the four (positive, negative) pairs, 2>1, 4>1 and 4>3 are right
    assert validation(x, y, np.array([1.0, 0.0]))["auc"] == 0.75


def test_fine_tuning_stays_near_the_global_model_as_prox_grows():
    x, y, _ = synthetic_rows(400, seed=4)
    start = np.array([1.0, -1.0, 0.0, 0.0])
    free = local_update(x, y, start, steps=5, reg=1e-3).params
    held = local_update(x, y, start, steps=5, reg=1e-3, prox=1e6).params
    assert np.abs(held - start).max() < 1e-4 < np.abs(free - start).max()
    assert np.abs(free - local_update(x, y, start, steps=5, reg=1e-3, prox=0.0).params).max() == 0.0


def test_the_privacy_budget_comes_from_the_accountant():
    for eps in (1.0, 4.0, 8.0):
        z = noise_for_epsilon(eps, fraction=1.0, rounds=8)
        assert 0.97 * eps <= epsilon_spent(z, 1.0, 8) <= eps
    z = noise_for_epsilon(4.0, 1.0, 8)
    # more rounds spend more; sampling half the edges per round spends less; no noise, no privacy
    assert epsilon_spent(z, 1.0, 16) > 4.0 > epsilon_spent(z, 0.5, 8)
    assert epsilon_spent(0.0, 1.0, 8) == float("inf")


def spark_rows(spark, n: int = 900, seed: int = 2):
    x, y, edges = synthetic_rows(n, seed)
    rows = spark.createDataFrame(
        [(f"U{i}", f"C{i % 50}", e, *map(float, r), float(t), 1.0) for i, (r, t, e) in enumerate(zip(x, y, edges))],
        "user_id string, content_id string, edge_id string, a double, b double, c double, label double, weight double")
    return rows, x, y, edges


def test_secure_aggregation_in_spark_gives_the_plain_round(spark):
    rows, *_ = spark_rows(spark)
    start = np.array([0.1, -0.1, 0.0, 0.2])
    plan = LocalPlan(start, steps=2, reg=1e-3)
    plain = collect_updates(edge_updates(rows, ("a", "b", "c"), plan))
    clients = {e: Client(e) for e, _ in plain}
    secure = SecureRound(7, {e: c.private_bytes() for e, c in clients.items()},
                         {e: c.public_key() for e, c in clients.items()})
    got = edge_updates(rows, ("a", "b", "c"), LocalPlan(start, steps=2, reg=1e-3, secure=secure)).collect()
    # the server sees neither the parameters nor the counts, only masked ring elements
    assert all(r["params"] is None and r["count"] is None and len(r["masked"]) == 5 for r in got)
    masked = {r["edge_id"]: np.array(r["masked"], dtype=np.int64).view(np.uint64) for r in got}
    alone = decode(masked["edge-01"])
    assert np.abs(alone - contribution(dict(plain)["edge-01"], start)).min() > 1e3
    rng = np.random.default_rng(0)
    want = aggregate(start, plain_sum([u for _, u in plain], start).summed, None, rng)
    assert np.abs(aggregate(start, unmask_sum(masked), None, rng) - want).max() < 1e-5


def test_federated_training_reaches_the_pooled_model_and_reports_its_rounds(spark):
    rows, *_ = spark_rows(spark, n=1500, seed=5)
    feats = ("a", "b", "c")
    model, tuned, report = train_federated(rows, feats, FedConfig(rounds=6), reg=1e-3)
    secure, _, secure_report = train_federated(rows, feats, FedConfig(rounds=6, secure=True), reg=1e-3)
    assert np.abs(to_vector(model) - to_vector(secure)).max() < 1e-4  # the masks change nothing
    assert tuned == {} and report["edges"] == ["edge-01", "edge-02", "edge-03"]
    assert [r["round"] for r in report["rounds"]] == list(range(1, 7))
    assert report["update_bytes_per_round"] == 3 * (4 * 8 + 8)  # three arrays of 4 doubles and three counts
    assert secure_report["update_bytes_per_round"] == 3 * 5 * 8  # three masked arrays of 5 ring elements
    assert report["rounds_to_converge"] is not None and report["epsilon_spent"] is None
    first, last = report["rounds"][0]["validation"], report["rounds"][-1]["validation"]
    assert all(first[e]["logloss"] == pytest.approx(np.log(2)) for e in first)  # the zero model, held out
    assert all(last[e]["logloss"] < first[e]["logloss"] and last[e]["rows"] > 0 for e in last)
    pooled = fit_logistic(rows, feats, reg_param=1e-3, max_iter=100)
    assert np.abs(to_vector(model) - to_vector(pooled)).max() < 0.1  # 10 % of viewers held out, edges differ

    dp_model, tuned, dp = train_federated(rows, feats, FedConfig(rounds=6, epsilon=4.0, fine_tune_steps=2), reg=1e-3)
    assert dp["noise_multiplier"] > 0 and 3.8 < dp["epsilon_spent"] <= 4.0
    assert sorted(tuned) == ["edge-01", "edge-02", "edge-03"] and tuned["edge-01"] != dp_model


def test_local_training_and_scoring_by_edge(spark):
    rows, x, y, edges = spark_rows(spark, n=900, seed=6)
    feats = ("a", "b", "c")
    models = train_local(rows, feats, reg=1e-3, steps=10)
    for edge, m in models.items():
        mine = np.array([e == edge for e in edges])
        want = local_update(x[mine], y[mine], np.zeros(4), steps=10, reg=1e-3).params
        assert np.abs(to_vector(m) - want).max() < 1e-5  # its own rows only (to the rounding)
    fallback = LinearModel(feats, (0.0, 0.0, 0.0), -1.0, "logit")
    scored = apply_by_edge(rows.where("edge_id != 'edge-03'"), {"edge-01": models["edge-01"]}, fallback, "p")
    for r in scored.collect():
        m = models["edge-01"] if r["edge_id"] == "edge-01" else fallback
        assert r["p"] == pytest.approx(m.predict([r["a"], r["b"], r["c"]]))


def test_an_edge_silent_in_a_secure_round_is_recovered_by_the_server(spark):
    """edge-04 publishes its key and is chosen, then sends nothing (it has no rows here, as
    if its task died): the server removes its dangling masks and averages the other three."""
    from edgecache.federated.training import _received

    rows, *_ = spark_rows(spark)
    start = np.array([0.1, -0.1, 0.0, 0.2])
    clients = {e: Client(e) for e in ("edge-01", "edge-02", "edge-03", "edge-04")}
    secure = SecureRound(3, {e: c.private_bytes() for e, c in clients.items()},
                         {e: c.public_key() for e, c in clients.items()})
    frame = edge_updates(rows, ("a", "b", "c"), LocalPlan(start, steps=2, reg=1e-3, secure=secure))
    got = _received(frame, start, None, clients, round_id=3)
    plain = collect_updates(edge_updates(rows, ("a", "b", "c"), LocalPlan(start, steps=2, reg=1e-3)))
    want = plain_sum([u for _, u in plain], start).summed
    assert sorted(got.validation) == ["edge-01", "edge-02", "edge-03"]
    assert np.abs(got.summed - want).max() < 1e-4


def test_runs_without_dp_do_not_load_the_accountant():
    """dp_accounting (with SciPy) took 1.8 s of every predict job's start: only DP runs load it."""
    import subprocess
    import sys

    code = ("import sys, edgecache.pipeline.predict, edgecache.federated.training; "
            "print('dp_accounting' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from edgecache.federated.privacy import epsilon_spent

    assert 0 < epsilon_spent(1.0, 1.0, 8) < float("inf")  # and the accounting still works when asked


# --- the demand model: Poisson, federated the same way ------------------------------------


def poisson_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts from a known log-linear model, spread over three edges."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * np.array([1.0, 0.5, 0.3])
    y = rng.poisson(np.exp(0.3 + 0.8 * x[:, 0] - 0.5 * x[:, 1] + 0.2 * x[:, 2])).astype(float)
    return x, y, np.array(EDGES[:3])[np.arange(n) % 3]


def test_poisson_local_training_reaches_the_maximum_likelihood_fit():
    """Unpenalised, local Poisson Newton steps and the central demand fit find the same
    maximum of the likelihood; from a wild start the step halving keeps it from diverging."""
    x, y, _ = poisson_rows(4000, seed=11)
    central = to_vector(poisson_newton(x, y, np.ones(len(y)), ("a", "b", "c"), 0.0, 100).model)
    local = local_update(x, y, np.zeros(4), steps=25, reg=0.0, family="poisson").params
    assert np.abs(local - central).max() < 1e-3
    wild = local_update(x, y, np.full(4, 5.0), steps=40, reg=0.0, family="poisson").params
    assert np.abs(wild - central).max() < 1e-3
    val = validation(x, y, local, family="poisson")
    assert val["rows"] == 4000 and val["logloss"] < validation(x, y, np.zeros(4), family="poisson")["logloss"]
    assert 0.5 < val["auc"] <= 1.0
    with pytest.raises(ValueError, match="family"):
        local_update(x, y, np.zeros(4), steps=1, reg=0.0, family="gamma")


def test_federated_demand_reaches_the_pooled_fit_and_sends_only_a_fixed_size_update(spark):
    """Each edge fits the Poisson model to its own (edge, title) rows; what reaches the
    server is the same few numbers whatever the number of titles: no title's count."""
    x, y, edges = poisson_rows(1800, seed=12)
    rows = spark.createDataFrame(
        [(f"C{i:05d}", e, *map(float, r), float(t)) for i, (r, t, e) in enumerate(zip(x, y, edges))],
        "content_id string, edge_id string, a double, b double, c double, label double")
    feats = ("a", "b", "c")
    kw = {"weight": None, "family": "poisson", "holdout_keys": ("content_id",)}
    model, _, report = train_federated(rows, feats, FedConfig(rounds=8), reg=1e-6, **kw)
    assert model.link == "log" and report["family"] == "poisson"
    pooled = to_vector(poisson_newton(x, y, np.ones(len(y)), feats, 0.0, 100).model)
    assert np.abs(to_vector(model) - pooled).max() < 0.1  # a tenth of the titles held out, edges differ
    first, last = report["rounds"][0]["validation"], report["rounds"][-1]["validation"]
    assert all(last[e]["logloss"] < first[e]["logloss"] and last[e]["rows"] > 0 for e in last)
    secure, _, _ = train_federated(rows, feats, FedConfig(rounds=8, secure=True), reg=1e-6, **kw)
    assert np.abs(to_vector(secure) - to_vector(model)).max() < 1e-4  # the masks change nothing
    _, _, dp = train_federated(rows, feats, FedConfig(rounds=4, epsilon=8.0), reg=1e-6, **kw)
    assert dp["noise_multiplier"] > 0 and dp["epsilon_spent"] <= 8.0

    plan = LocalPlan(np.zeros(4), steps=3, reg=1e-6, family="poisson")
    for titles in (rows, rows.where("content_id < 'C00300'")):  # 600 and 100 titles per edge
        frame = edge_updates(titles, feats, plan)
        assert frame.schema.simpleString() == (
            "struct<edge_id:string,params:array<double>,count:bigint,masked:array<bigint>,"
            "val_rows:bigint,val_logloss:double,val_auc:double>")
        raw = frame.collect()
        assert len(raw) == 3 and {len(r["params"]) for r in raw} == {4}
        ids = {r["content_id"] for r in titles.collect()}
        assert not ids & {str(v) for r in raw for v in r.asDict().values()}


def test_local_demand_models_read_only_their_own_edges_rows(spark):
    """Local-only demand: each edge's model comes from its rows alone (changing another edge's
    counts leaves it as it was), without the service-wide count; an edge with no rows ranks by
    its own recent requests."""
    from edgecache.pipeline.demand import DEMAND_FEATURES
    from edgecache.pipeline.predict import LOCAL_DEMAND_FEATURES, local_demand

    rng = np.random.default_rng(13)
    n = 900
    x = rng.normal(size=(n, len(DEMAND_FEATURES))) * 0.5
    y = rng.poisson(np.exp(0.2 + 0.9 * x[:, 0])).astype(float)
    edges = np.array(EDGES[:3])[np.arange(n) % 3]
    schema = "edge_id string, " + ", ".join(f"`{f}` double" for f in DEMAND_FEATURES) + ", label double"

    def frame(labels):
        return spark.createDataFrame([(e, *map(float, r), float(t)) for r, t, e in zip(x, labels, edges)], schema)

    models, fit = local_demand(frame(y))
    fallback = fit.model
    assert sorted(models) == list(EDGES[:3]) and all(m.features == LOCAL_DEMAND_FEATURES for m in models.values())
    assert "global" not in LOCAL_DEMAND_FEATURES and models[EDGES[0]].weights[0] > 0.5  # popularity comes first
    other = np.where(edges == EDGES[1], y * 3 + 1, y)  # another edge's counts change
    again, _ = local_demand(frame(other))
    assert to_vector(again[EDGES[0]]).tolist() == to_vector(models[EDGES[0]]).tolist()
    assert np.abs(to_vector(again[EDGES[1]]) - to_vector(models[EDGES[1]])).max() > 0.1
    # The model for an edge without rows: e^popularity, its own decayed requests plus one.
    assert fallback.link == "log" and fallback.intercept == 0.0
    assert dict(zip(fallback.features, fallback.weights)) == {f: float(f == "popularity") for f in LOCAL_DEMAND_FEATURES}


def test_title_totals_are_summed_by_secure_aggregation(spark):
    """The service-wide count per title (the demand model's ``global``) comes from the edges
    as masked vectors of one slot per catalog title: their sum is the pooled total, one of
    them alone is noise, and its size does not depend on what the edge served."""
    from edgecache.federated.totals import masked_vectors, secure_totals

    rng = np.random.default_rng(21)
    titles = [f"C{i:05d}" for i in range(1, 201)]
    rows = [(e, t, float(rng.exponential(3.0))) for e in EDGES[:4] for t in rng.choice(titles, 60, replace=False)]
    rows.append(("edge-01", "C99999", 5.0))  # outside the catalog: no slot, not counted
    frame = spark.createDataFrame(rows, "edge_id string, content_id string, requests_decayed double")
    sums, report = secure_totals(frame, titles, "requests_decayed")
    pooled = pd.DataFrame(rows[:-1], columns=["edge_id", "content_id", "v"]).groupby("content_id")["v"].sum()
    assert set(sums) == set(titles) and max(abs(sums[t] - pooled.get(t, 0.0)) for t in titles) < 1e-6
    assert report["edges"] == list(EDGES[:4]) and report["bytes_received"] == 4 * 200 * 8

    clients = {e: Client(e) for e in EDGES[:4]}
    private = {e: c.private_bytes() for e, c in clients.items()}
    public = {e: c.public_key() for e, c in clients.items()}
    sent = {}
    for served in (frame.where("content_id < 'C00020'"), frame):
        sent = {r["edge_id"]: np.array(r["masked"], dtype=np.int64).view(np.uint64)
                for r in masked_vectors(served, titles, "requests_decayed", private, public).collect()}
        assert {len(v) for v in sent.values()} == {200}  # one slot per title, served or not
    own = np.zeros(200)
    for e, t, v in rows[:-1]:
        if e == "edge-01":
            own[titles.index(t)] += v
    assert not np.array_equal(sent["edge-01"], encode(own))  # what the server holds of one edge is masked
    assert np.abs(decode(sent["edge-01"]) - own).max() > 1e3


def test_dp_totals_carry_the_noise_their_budget_calls_for(spark, tmp_path):
    """Under DP the summed totals carry Gaussian noise of std z x clip, z the smallest noise
    multiplier whose releases spend the epsilon. Each edge adds its share, drawn from a secret
    it keeps: the same day's sum gets the same noise again (a rerun sends what it sent, and
    repeating a release tells nothing new), another day's gets other noise, and without the
    edges' keys the noise cannot be drawn again. A total never reads below 0."""
    from edgecache.federated.privacy import epsilon_spent
    from edgecache.federated.totals import TotalsPrivacy, edge_key, edge_noise, secure_totals

    rng = np.random.default_rng(5)
    titles = [f"C{i:05d}" for i in range(1, 401)]
    rows = [(e, t, 500.0 + float(rng.exponential(3.0))) for e in EDGES[:4] for t in titles[:300]]
    frame = spark.createDataFrame(rows, "edge_id string, content_id string, v double")
    privacy = TotalsPrivacy(epsilon=2.0, clip=1.5, key_dir=tmp_path / "keys")
    z = privacy.noise_multiplier
    assert 1.9 < epsilon_spent(z, 1.0, 2) <= 2.0  # two releases a night spend the share
    sums, report = secure_totals(frame, titles, "v", privacy=privacy, nonce="2025-04-10")
    pooled = pd.DataFrame(rows, columns=["e", "t", "v"]).groupby("t")["v"].sum()
    noise = np.array([sums[t] - pooled[t] for t in titles[:300]])
    assert abs(noise.mean()) < 0.3 * z * 1.5 and 0.8 < noise.std() / (z * 1.5) < 1.2
    assert min(sums[t] for t in titles[300:]) == 0.0 and max(sums[t] for t in titles[300:]) > 0  # nobody asked
    assert report["dp"]["noise_std"] == pytest.approx(z * 1.5) and report["dp"]["unit"] == "viewer"
    assert report["dp"]["epsilon_viewer_at_two_edges"] > 2.0  # a viewer seen at two edges counts twice

    keys = sorted((tmp_path / "keys").iterdir())
    assert [k.name for k in keys] == [f"{e}.key" for e in EDGES[:4]]
    assert all(k.stat().st_mode & 0o777 == 0o600 and len(k.read_bytes()) == 32 for k in keys)
    assert edge_key(tmp_path / "keys", EDGES[0]) == keys[0].read_bytes()  # kept, not made again
    assert secure_totals(frame, titles, "v", privacy=privacy, nonce="2025-04-10")[0] == sums
    other_day = secure_totals(frame, titles, "v", privacy=privacy, nonce="2025-04-11")[0]
    other_keys = TotalsPrivacy(epsilon=2.0, clip=1.5, key_dir=tmp_path / "other")
    assert other_day != sums and secure_totals(frame, titles, "v", privacy=other_keys, nonce="2025-04-10")[0] != sums
    many = [f"T{i:05d}" for i in range(20000)]
    share = edge_noise(keys[0].read_bytes(), "2025-04-10/0", many, z * 1.5 / 2)  # one of four edges' shares
    assert 0.95 < share.std() / (z * 1.5 / 2) < 1.05 and abs(share.mean()) < 0.05 * z * 1.5 / 2
    # a title's noise does not depend on which other titles the catalog holds
    assert edge_noise(keys[0].read_bytes(), "2025-04-10/0", [many[7]], 1.0)[0] == pytest.approx(share[7] / (z * 1.5 / 2))
    plain = secure_totals(frame, titles, "v")[0]
    assert max(abs(plain[t] - pooled[t]) for t in titles[:300]) < 1e-6


def test_the_scorers_shares_read_the_secure_totals_and_each_edges_own_rows(spark):
    """With the securely summed totals, the scorer's service-wide shares (``pooled`` and
    ``personal`` read them) are what the pooled rows give, and an edge's figures move with
    its own rows only: another edge's counts reach it through the totals alone."""
    from pyspark.sql import functions as F

    from edgecache.pipeline.candidates import title_shares
    from edgecache.pipeline.features import edge_popularity, in_window, title_features
    from edgecache.pipeline.predict import secure_global
    from tests.tiny import DAY, catalog_df, multi_df

    popularity = edge_popularity(in_window(multi_df(spark), DAY, 3), 2.0).cache()
    titles = title_features(catalog_df(spark), DAY).cache()
    totals = secure_global(popularity, titles)[0].cache()

    def figures(shares):
        glob = {r["content_id"]: (r["global_share"], r["in_genre"]) for r in shares["glob"].collect()}
        taste = {(r["edge_id"], r["genre"]): (r["share"], r["tilt"]) for r in shares["taste"].collect()}
        return glob, taste

    pooled_glob, pooled_taste = figures(title_shares(popularity, titles))
    glob, taste = figures(title_shares(popularity, titles, totals))
    assert {k for k, v in glob.items() if v[0]} == set(pooled_glob)  # a title nobody asked for has no share
    for k, (share, in_genre) in pooled_glob.items():
        # the secure sum is exact to its fixed-point step (see secagg.SCALE), not to the last bit
        assert glob[k] == (pytest.approx(share, rel=1e-6), pytest.approx(in_genre, rel=1e-6))
    assert set(taste) == set(pooled_taste)
    for k, (share, tilt) in pooled_taste.items():
        assert taste[k] == (pytest.approx(share, rel=1e-12), pytest.approx(tilt, rel=1e-6))

    # edge-02's counts change; the totals the edges sent do not: nothing changes at edge-01
    other = popularity.withColumn(
        "requests_decayed",
        F.when(F.col("edge_id") == "edge-02", F.col("requests_decayed") * 5 + 1).otherwise(F.col("requests_decayed")),
    )
    glob_again, taste_again = figures(title_shares(other, titles, totals))
    # equal but for the order Spark adds the floats in
    assert glob_again == {k: pytest.approx(v, rel=1e-12) for k, v in glob.items()}
    assert {k: v for k, v in taste_again.items() if k[0] == "edge-01"} == {
        k: pytest.approx(v, rel=1e-12) for k, v in taste.items() if k[0] == "edge-01"
    }
    assert figures(title_shares(other, titles))[0] != pooled_glob  # pooled, edge-02's rows reach every edge


def test_a_dp_demand_model_that_never_settles_ranks_no_edge_once_edges_fine_tune(spark):
    """With DP noise the global demand model keeps moving. Without fine-tuning it stays the
    night's model, marked not converged (the gate sets it aside); with fine-tuning each edge
    ranks by a model it fits from scratch on its own rows (spending no budget: steps from the
    noise need not get back), and an edge without rows by its own recent requests."""
    from edgecache.pipeline.demand import DEMAND_FEATURES
    from edgecache.pipeline.predict import federated_demand, own_requests_model

    rng = np.random.default_rng(17)
    n = 1500
    x = rng.normal(size=(n, len(DEMAND_FEATURES))) * 0.5
    y = rng.poisson(np.exp(0.3 + 0.9 * x[:, 0]))
    edges = np.array(EDGES[:3])[np.arange(n) % 3]
    rows = spark.createDataFrame(
        [(f"C{i:05d}", e, *map(float, r), float(t)) for i, (r, t, e) in enumerate(zip(x, y, edges))],
        "content_id string, edge_id string, " + ", ".join(f"`{f}` double" for f in DEMAND_FEATURES)
        + ", label double").cache()
    noisy = FedConfig(rounds=4, epsilon=0.5)

    fit, tuned, report = federated_demand(rows, noisy)
    assert report["global_converged"] is False and fit.converged is False and tuned == {}
    assert fit.model != own_requests_model(DEMAND_FEATURES)  # the noisy global model, for the gate to judge

    fit, tuned, report = federated_demand(rows, replace(noisy, fine_tune_steps=3))
    assert report["global_converged"] is False and report["global_model_set_aside"] is True
    assert fit.model == own_requests_model(DEMAND_FEATURES) and fit.converged
    assert sorted(tuned) == list(EDGES[:3])
    for model in tuned.values():  # each edge's own fit, untouched by the global model's noise
        assert abs(dict(zip(model.features, model.weights))["popularity"] - 0.9) < 0.2, model


def test_a_young_edge_ranks_by_the_mean_of_its_first_day_model_and_its_own_requests(spark):
    """The first day's model's expected requests (here 4 for an old title, 8 for tomorrow's
    release) and the edge's own decayed requests count alike: a title released tomorrow,
    with no requests yet, ranks by the model alone."""
    from edgecache.pipeline.demand import OPENING_FEATURES
    from edgecache.pipeline.predict import prior_plus_own

    weights = tuple(math.log(2) if f == "new_release" else 0.0 for f in OPENING_FEATURES)
    first_day = LinearModel(OPENING_FEATURES, weights, math.log(4), "log")
    cols = ", ".join(f"`{f}` double" for f in OPENING_FEATURES)
    rows = spark.createDataFrame(
        [("old, served 6 times", *(0.0 for _ in OPENING_FEATURES), math.log(7)),
         ("tomorrow's release", *(float(f == "new_release") for f in OPENING_FEATURES), 0.0),
         ("old, never served", *(0.0 for _ in OPENING_FEATURES), 0.0)],
        f"title string, {cols}, popularity double")
    got = {r["title"]: r["score"] for r in rows.selectExpr("title", f"{prior_plus_own(first_day)} AS score").collect()}
    assert got == pytest.approx({"old, served 6 times": 5.0, "tomorrow's release": 4.0, "old, never served": 2.0})
    # A first day without a release says nothing of one: a model that learned from releases
    # (here 30 for a release, 1 for anything else) stands in for tomorrow's release alone.
    weights = tuple(math.log(30) if f == "new_release" else 0.0 for f in OPENING_FEATURES)
    releases = LinearModel(OPENING_FEATURES, weights, 0.0, "log")
    sql = prior_plus_own(first_day, releases)
    got = {r["title"]: r["score"] for r in rows.selectExpr("title", f"{sql} AS score").collect()}
    assert got == pytest.approx({"old, served 6 times": 5.0, "tomorrow's release": 15.0, "old, never served": 2.0})


def test_a_young_edges_first_day_model_reads_its_own_requests_only(spark):
    """edge-09 opened on D: its model is fitted to its own requests on D over every title out,
    with the service's figures as of D-1 (nothing of its own then). The other edges'
    requests on D do not move it."""
    from edgecache.pipeline.demand import OPENING_FEATURES
    from edgecache.pipeline.features import edge_popularity, title_features
    from edgecache.pipeline.predict import first_day_models
    from tests.tiny import DAY, EVENTS_SCHEMA, catalog_df, window_df

    popularity = edge_popularity(window_df(spark))  # edge-01 and edge-02 up to D-1
    titles = title_features(catalog_df(spark), DAY)

    def on_d(requests):
        return spark.createDataFrame(
            [("U9", "TV", c, 10, dt.datetime(2025, 4, 13, 9, i), e) for i, (e, c) in enumerate(requests)],
            EVENTS_SCHEMA)

    young = [("edge-09", "C2")] * 4 + [("edge-09", "C6")] * 3 + [("edge-09", "C1")]
    models = first_day_models(popularity, titles, None, on_d(young + [("edge-01", "C5")]), ["edge-09"])
    assert list(models) == ["edge-09"] and models["edge-09"].features == OPENING_FEATURES
    again = first_day_models(popularity, titles, None, on_d(young + [("edge-01", "C1")] * 9), ["edge-09"])
    assert to_vector(again["edge-09"]) == pytest.approx(to_vector(models["edge-09"]), abs=1e-12)
    # the title released on its first day, asked 3 times, is expected more than the one asked never
    first = dict(zip(OPENING_FEATURES, models["edge-09"].weights))
    assert first["new_release"] > 0


def test_a_model_has_settled_once_its_last_round_moves_it_a_tenth_of_its_first():
    from edgecache.pipeline.predict import settled

    def report(*changes):
        return {"rounds": [{"change": c} for c in changes]}

    assert settled(report(2.0, 0.5, 0.2)) and not settled(report(2.0, 0.5, 0.21))
    assert not settled(report(2.0)) and not settled(report())  # one round says nothing
