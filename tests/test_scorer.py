"""The linear scorer: SQL and Python agree, MLlib fits match a numpy solution, sampling, AUC."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgecache.pipeline.scorer import LinearModel, apply, auc, fit_logistic, fit_poisson, negative_sample

MODEL = LinearModel(("a", "b"), (0.5, -1.25), -0.1, "logit")
POINTS = [(0.0, 0.0), (1.0, 2.0), (-3.0, 0.5), (4.0, -2.0)]


# --- LinearModel and apply --------------------------------------------------------------------


def test_predict_by_hand():
    assert MODEL.predict((0.0, 0.0)) == pytest.approx(1 / (1 + math.exp(0.1)))
    # eta = -0.1 + 0.5 - 2.5 = -2.1
    assert MODEL.predict((1.0, 2.0)) == pytest.approx(1 / (1 + math.exp(2.1)))
    log = LinearModel(("a", "b"), (0.5, -1.25), -0.1, "log")
    assert log.predict((1.0, 2.0)) == pytest.approx(math.exp(-2.1))


@pytest.mark.parametrize("link", ["logit", "log"])
def test_sql_and_predict_agree(spark, link):
    model = LinearModel(("a", "b"), (0.5, -1.25e-5), -0.1, link)  # 1.25e-05 prints in exponent form
    df = spark.createDataFrame(POINTS, "a double, b double")
    rows = apply(df, model, "p").orderBy("a").collect()
    assert len(rows) == len(POINTS)
    for r in rows:
        assert set(r.asDict()) == {"a", "b", "p"}
        assert r["p"] == pytest.approx(model.predict((r["a"], r["b"])), rel=1e-12)


def test_predict_saturates_instead_of_overflowing(spark):
    """A far-off row: SQL gives p = 0.0 (exp overflows to +inf); predict() must agree."""
    model = LinearModel(("a",), (1.0,), 0.0, "logit")
    p_sql = apply(spark.createDataFrame([(-800.0,)], "a double"), model, "p").first()["p"]
    assert p_sql == 0.0
    assert model.predict((-800.0,)) == pytest.approx(0.0, abs=1e-300)


def test_round_trip_through_json():
    for model in (MODEL, LinearModel(("x",), (2.0,), 0.25, "log"), LinearModel((), (), 1.5, "logit")):
        d = json.loads(json.dumps(model.to_dict()))
        assert d["features"] == list(model.features)
        assert LinearModel.from_dict(d) == model


@pytest.mark.parametrize("args", [
    (("a", "b"), (1.0,), 0.0, "logit"),  # one weight short
    (("a",), (1.0,), 0.0, "identity"),  # unknown link
    (("a",), (float("nan"),), 0.0, "logit"),
    (("a",), (1.0,), float("inf"), "log"),
])
def test_bad_models_are_rejected(args):
    with pytest.raises(ValueError):
        LinearModel(*args)


# --- fits against numpy -------------------------------------------------------------------------


def data(seed: int, n: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2))


def logistic_reference(x, y, w, reg):
    """Newton on sum(w * logloss) / sum(w) + reg / 2 * |beta|^2, the intercept unpenalised."""
    X = np.column_stack([np.ones(len(x)), x])
    P = np.diag([0.0] + [reg] * x.shape[1])
    b = np.zeros(X.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-X @ b))
        grad = X.T @ (w * (p - y)) / w.sum() + P @ b
        hess = (X * (w * p * (1 - p))[:, None]).T @ X / w.sum() + P
        step = np.linalg.solve(hess, grad)
        b -= step
        if np.abs(step).max() < 1e-13:
            break
    return b


def poisson_reference(x, y, reg):
    """IRLS for min sum(mu - y eta) / sum(y) + reg / 2 |beta|^2 (intercept not penalised):
    every step a weighted least squares with v = mu and z = eta + (y - mu) / mu, so the
    fixed point solves X'(y - mu) / sum(mu) = reg * beta."""
    X = np.column_stack([np.ones(len(x)), x])
    P = np.diag([0.0] + [reg] * x.shape[1])
    b = np.zeros(X.shape[1])
    b[0] = math.log(y.mean())
    for _ in range(200):
        eta = X @ b
        mu = np.exp(eta)
        z = eta + (y - mu) / mu
        new = np.linalg.solve((X * mu[:, None]).T @ X / mu.sum() + P, X.T @ (mu * z) / mu.sum())
        done = np.abs(new - b).max() < 1e-13
        b = new
        if done:
            break
    mu = np.exp(X @ b)
    # the fixed point is the optimum of sum(mu - y eta) / sum(y) + reg / 2 |beta|^2
    assert np.allclose(X.T @ (y - mu) / mu.sum(), P @ b, atol=1e-10)
    assert mu.sum() == pytest.approx(y.sum())
    return b


def test_fit_logistic_matches_newton(spark):
    x = data(1)
    eta = 0.3 + 1.5 * x[:, 0] - 1.0 * x[:, 1]
    y = (np.random.default_rng(2).uniform(size=len(x)) < 1 / (1 + np.exp(-eta))).astype(float)
    w = np.where(y == 1, 1.0, 2.5)  # weighted, as after negative sampling
    rows = spark.createDataFrame([(float(a), float(b), float(l), float(v)) for (a, b), l, v in zip(x, y, w)],
                                 "f1 double, f2 double, label double, weight double")
    for reg in (0.0, 0.1):
        model = fit_logistic(rows, ["f1", "f2"], weight="weight", reg_param=reg, max_iter=100)
        want = logistic_reference(x, y, w, reg)
        assert model.features == ("f1", "f2") and model.link == "logit"
        assert [model.intercept, *model.weights] == pytest.approx(list(want), abs=1e-4), reg


def test_fit_poisson_matches_irls(spark):
    """The penalty is on the standardised features' weights: IRLS on standardised columns,
    mapped back to the raw ones, is the same model."""
    x = data(3)
    y = np.random.default_rng(4).poisson(np.exp(0.5 + 0.8 * x[:, 0] - 0.4 * x[:, 1])).astype(float)
    rows = spark.createDataFrame([(float(a), float(b), float(l)) for (a, b), l in zip(x, y)],
                                 "f1 double, f2 double, label double")
    mean, std = x.mean(axis=0), x.std(axis=0)
    for reg in (0.0, 0.1):
        model = fit_poisson(rows, ["f1", "f2"], reg_param=reg)
        b = poisson_reference((x - mean) / std, y, reg)
        weights = b[1:] / std
        want = [b[0] - weights @ mean, *weights]
        assert model.features == ("f1", "f2") and model.link == "log"
        assert [model.intercept, *model.weights] == pytest.approx(want, abs=1e-4), reg


# --- negative_sample and auc ----------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(spark):
    # 200 rows, every 20th positive: 10 positives, 190 negatives
    return spark.createDataFrame([(f"u{i % 7}", f"c{i:03d}", 1.0 if i % 20 == 0 else 0.0) for i in range(200)],
                                 "user_id string, content_id string, label double").cache()


def sample(df, max_rows, seed):
    return {(r["user_id"], r["content_id"]): (r["label"], r["weight"])
            for r in negative_sample(df, max_rows, seed, ["user_id", "content_id"]).collect()}


def test_negative_sample_keeps_positives_and_reweights(labelled):
    got = sample(labelled, 48, seed=7)  # rate (48 - 10) / 190 = 0.2
    positives = {k for k, (label, _) in got.items() if label == 1.0}
    assert len(positives) == 10
    assert all(w == 1.0 for label, w in got.values() if label == 1.0)
    negatives = [w for label, w in got.values() if label == 0.0]
    assert all(w == pytest.approx(5.0) for w in negatives)
    assert 15 <= len(negatives) <= 65  # about 38 (binomial, sd about 5.5)


def test_negative_sample_is_deterministic(labelled):
    a = sample(labelled, 48, seed=7)
    assert sample(labelled.repartition(3), 48, seed=7) == a  # not partition-dependent
    assert sample(labelled, 48, seed=8) != a  # the seed matters


def test_negative_sample_keeps_all_when_under_budget(labelled):
    got = sample(labelled, 500, seed=7)
    assert len(got) == 200 and all(w == 1.0 for _, w in got.values())


def test_auc(spark):
    # positives 0.9, 0.7, 0.2; negatives 0.8, 0.6, 0.3: 0.9 beats 3, 0.7 beats 2, 0.2 none -> 5/9
    scored = spark.createDataFrame([(0.9, 1.0), (0.8, 0.0), (0.7, 1.0), (0.3, 0.0), (0.6, 0.0), (0.2, 1.0)],
                                   "s double, label double")
    assert auc(scored, "s") == pytest.approx(5 / 9)
    assert auc(scored.where("label = 1"), "s") is None
