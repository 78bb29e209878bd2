"""The model gate: robust fits, degenerate-fit rejection, the candidates' figures and the choice."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from edgecache.evaluation.report import popularity_predictions
from edgecache.pipeline.gate import (
    LIST_MODELS,
    PREFETCH_MODELS,
    choose,
    degenerate,
    first_requests,
    list_hit_rates,
    popular_lists,
    prefetch_hit_ratios,
    requests_by_title,
    young_sets,
)
from edgecache.pipeline import features, predict
from edgecache.pipeline import ingest_logs as ingest
from edgecache.layout import Layout, read_json
from edgecache.ops.push_metrics import batch_registry, read_reports
from edgecache.pipeline.scorer import LinearModel, fit_poisson_checked, poisson_newton
from tests.operator_logs import TITLES, day_records, write_catalog_csv, write_day
from tests.services import require_binary
from tests.test_monitoring import MON

# --- the Poisson fit --------------------------------------------------------------------------


def poisson_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.uniform(size=n)])
    y = rng.poisson(np.exp(0.4 + 0.7 * x[:, 0] - 0.5 * x[:, 1])).astype(float)
    return x, y


def test_poisson_fit_recovers_the_weights_and_converges():
    x, y = poisson_rows(20_000)
    fit = poisson_newton(x, y, np.ones(len(y)), ("a", "b"), 0.0, 50)
    assert fit.converged and fit.dropped == ()
    assert [fit.model.intercept, *fit.model.weights] == pytest.approx([0.4, 0.7, -0.5], abs=0.05)


def test_poisson_fit_drops_constant_and_all_zero_columns():
    x, y = poisson_rows(5_000)
    wide = np.column_stack([x, np.zeros(len(y)), np.full(len(y), 3.0)])
    plain = poisson_newton(x, y, np.ones(len(y)), ("a", "b"), 1e-3, 50)
    fit = poisson_newton(wide, y, np.ones(len(y)), ("a", "b", "zero", "three"), 1e-3, 50)
    assert fit.converged and fit.dropped == ("zero", "three")
    assert fit.model.weights[2:] == (0.0, 0.0)
    assert fit.model.weights[:2] == pytest.approx(plain.model.weights, rel=1e-4)
    assert fit.model.intercept == pytest.approx(plain.model.intercept, rel=1e-4)


def test_poisson_fit_does_not_care_about_feature_scales():
    x, y = poisson_rows(5_000)
    scaled = x * np.array([1e-4, 1e6])
    a = poisson_newton(x, y, np.ones(len(y)), ("a", "b"), 1e-2, 50)
    b = poisson_newton(scaled, y, np.ones(len(y)), ("a", "b"), 1e-2, 50)
    assert b.converged
    assert b.model.weights[0] * 1e-4 == pytest.approx(a.model.weights[0], rel=1e-4)
    assert b.model.weights[1] * 1e6 == pytest.approx(a.model.weights[1], rel=1e-4)


def test_poisson_fit_on_few_labels_and_on_none():
    x, y = poisson_rows(12, seed=5)
    few = poisson_newton(x, y, np.ones(len(y)), ("a", "b"), 1e-3, 50)
    assert all(math.isfinite(w) for w in few.model.weights) and few.iterations <= 50
    none = poisson_newton(x, np.zeros(len(y)), np.ones(len(y)), ("a", "b"), 1e-3, 50)
    assert not none.converged and none.model.weights == (0.0, 0.0)
    assert degenerate(none.model, 0.0, none.converged) == "all weights zero"


def test_poisson_fit_in_spark_samples_zero_counts_without_bias(spark, monkeypatch):
    x, y = poisson_rows(4_000, seed=2)
    y[::2] = 0.0  # many zero counts, as in the demand rows
    rows = spark.createDataFrame(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": y}))
    whole = fit_poisson_checked(rows, ["a", "b"])
    monkeypatch.setattr("edgecache.pipeline.scorer.MAX_POISSON_ROWS", 2_500)
    sampled = fit_poisson_checked(rows, ["a", "b"])
    assert whole.converged and sampled.converged
    assert [sampled.model.intercept, *sampled.model.weights] == pytest.approx(
        [whole.model.intercept, *whole.model.weights], abs=0.15)


# --- degenerate fits and the choice -------------------------------------------------------------


def model(weights, intercept=0.0) -> LinearModel:
    return LinearModel(tuple(f"f{i}" for i in range(len(weights))), tuple(weights), intercept, "log")


def test_degenerate_fits_are_named():
    assert degenerate(model([0.0, 0.0], 34.7), 0.0, True) == "all weights zero"
    assert degenerate(model([1e-9, 0.0]), 1e-9, True) == "near-constant scores"
    assert degenerate(model([0.5, 0.1]), None, True) == "near-constant scores"
    assert degenerate(model([0.5, 0.1]), 0.3, False) == "fit did not converge"
    assert degenerate(model([0.5, 0.1]), 0.3, True) is None
    assert degenerate(model([0.5, 0.1]), 0.3, None) is None


def test_the_best_candidate_wins_and_ties_keep_the_learned_model():
    v = choose("m", {"learned": 0.5, "simple": 0.5, "recency": 0.4, "yesterday": None}, {}, PREFETCH_MODELS)
    assert v.chosen == "learned" and not v.learned_lost and "yesterday" not in v.figures
    v = choose("m", {"learned": 0.5, "simple": 0.51}, {}, PREFETCH_MODELS)
    assert v.chosen == "simple" and v.learned_lost
    v = choose("m", {"learned": 0.9, "simple": 0.2, "edge_popular": 0.3}, {"learned": "all weights zero"}, LIST_MODELS)
    assert v.chosen == "edge_popular" and v.learned_lost
    assert v.to_dict()["rejected"] == {"learned": "all weights zero"}
    with pytest.raises(ValueError):
        choose("m", {"learned": 0.9}, {"learned": "near-constant scores"}, LIST_MODELS)


# --- the figures, on frames small enough to count by hand ------------------------------------------


def test_prefetch_hit_ratio_fills_each_models_sets_like_the_deployed_ones(spark):
    scored = spark.createDataFrame(
        [("a", "e1", "t1", 5.0, 10), ("a", "e1", "t2", 4.0, 10), ("a", "e1", "t3", 3.0, 10),
         ("b", "e1", "t3", 9.0, 10), ("b", "e1", "t1", 1.0, 10), ("b", "e1", "t2", 0.0, 10),
         ("a", "e2", "t1", 1.0, 30)],
        "model string, edge_id string, content_id string, score double, size_bytes long")
    events = spark.createDataFrame(
        [("e1", "t1")] * 3 + [("e1", "t2")] * 2 + [("e1", "t3")] * 1 + [("e2", "t1")] * 4 + [("e2", "t9")] * 2,
        "edge_id string, content_id string")
    asked = requests_by_title(events)
    fixed = {"yesterday": spark.createDataFrame([("e2", "t9")], "edge_id string, content_id string")}
    got = prefetch_hit_ratios(scored, asked, 20, fixed)
    # capacity 20 holds two titles of size 10; e2's title of size 30 never fits
    assert got == pytest.approx({"a": (3 + 2) / 12, "b": (1 + 3) / 12, "yesterday": 2 / 12})


def test_list_hit_rates_count_a_missing_list_as_a_miss(spark):
    events = spark.createDataFrame(
        [("u1", "t2", "2025-04-12 08:00:00"), ("u1", "t1", "2025-04-12 09:00:00"),
         ("u2", "t3", "2025-04-12 07:00:00"), ("u3", "t1", "2025-04-12 07:00:00")],
        "user_id string, content_id string, timestamp string").selectExpr(
        "user_id", "content_id", "CAST(timestamp AS timestamp) AS timestamp")
    firsts = first_requests(events)
    assert sorted(map(tuple, firsts.collect())) == [("u1", "t2"), ("u2", "t3"), ("u3", "t1")]
    lists = spark.createDataFrame(
        [("m", "u1", ["t1", "t2"]), ("m", "u2", ["t1"]), ("n", "u1", ["t1"]), ("n", "u3", ["t1", "t3"])],
        "model string, user_id string, ranked array<string>")
    assert list_hit_rates(lists, firsts, 2) == pytest.approx({"m": 1 / 3, "n": 1 / 3})
    assert list_hit_rates(lists, firsts, 1) == pytest.approx({"m": 0.0, "n": 1 / 3})


def test_an_edge_that_opened_on_the_training_day_gets_the_learned_set_unless_it_was_rejected():
    won = choose("m", {"learned": 0.4, "recency": 0.5}, {}, PREFETCH_MODELS)
    lost = choose("m", {"learned": 0.6, "recency": 0.5}, {"learned": "all weights zero"}, PREFETCH_MODELS)
    assert (young_sets(won, False), young_sets(lost, False)) == ("learned", "recency")
    assert young_sets(won, True) == young_sets(lost, True) == "first_day"


def test_popular_lists_are_the_evaluations_baseline(spark):
    rng = np.random.default_rng(3)
    pop = pd.DataFrame({"edge_id": np.repeat(["e1", "e2"], 30), "content_id": [f"t{i:02d}" for i in range(30)] * 2,
                        "requests": rng.integers(1, 6, 60)})
    pop["rank"] = pop.groupby("edge_id")["requests"].rank(method="first", ascending=False).astype(int)
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "edge_id": ["e1", "e2", "e1"]})
    got = popular_lists(spark.createDataFrame(users), spark.createDataFrame(pop), 10).toPandas()
    want = popularity_predictions(pop, users, 10)
    assert dict(zip(got["user_id"], got["ranked"].map(list))) == dict(zip(want["user_id"], want["ranked"]))
    assert (got["content_id"] == got["ranked"].map(lambda r: r[0])).all() and set(got["source"]) == {"edge_popular"}


# --- a night whose learned fit is degenerate --------------------------------------------------------

DAYS = ("2025-04-09", "2025-04-10", "2025-04-11", "2025-04-12")
DATE = DAYS[-1]


def swapped_day(date: str) -> list[dict]:
    """The operator's viewers, but on D they watch only titles nobody asked for in the window:
    every demand row and every candidate of yesterday's features has a label of zero."""
    half = len(TITLES) // 2
    recs = day_records(date)
    for i, r in enumerate(recs):
        r["content_id"] = TITLES[(half if date == DATE else 0) + TITLES.index(r["content_id"]) % half]
    return recs


@pytest.fixture(scope="module")
def degenerate_night(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("degenerate")
    src, data = root / "logs", root / "data"
    for d in DAYS:
        write_day(src, d, swapped_day(d))
    catalog = write_catalog_csv(root / "catalog.csv")
    for d in DAYS:
        argv = ["--date", d, "--data-dir", str(data), "--source", str(src), "--catalog", str(catalog)]
        assert ingest.main(argv + ["--master", "local[2]"]) == 0
    common = ["--date", DATE, "--data-dir", str(data), "--master", "local[2]"]
    assert features.main(common + ["--window-days", "2"]) == 0
    assert predict.main(common + ["--top-k", "5", "--cache-gb", "10", "--opening-edges", "edge-09"]) == 0
    return Layout(data)


def test_a_degenerate_fit_is_rejected_and_a_baseline_deployed(degenerate_night):
    summary = read_json(degenerate_night.predictions(DATE, "summary.json"))
    assert summary["model"] == "learned"
    sets, lists = summary["gate"]["prefetch"], summary["gate"]["lists"]
    assert sets["rejected"]["learned"] == "all weights zero"
    # the baselines that take the releases' figures from it are rejected with it
    assert {m for m in sets["rejected"] if m.endswith("+releases")} == {"simple+releases", "recency+releases"}
    assert sets["chosen"] in PREFETCH_MODELS[1:] and sets["learned_lost"]
    assert summary["deployed"]["prefetch"] == sets["chosen"]
    assert set(sets["figures"]) >= {"learned", "simple", "recency"}
    assert lists["rejected"].get("learned") or lists["chosen"] != "learned"
    prefetch = pq.read_table(degenerate_night.predictions(DATE, "prefetch")).to_pandas()
    assert len(prefetch) > 0  # a baseline's set was deployed, not the degenerate model's
    # The opening model fitted on these rows is degenerate too: the edge that opens tomorrow
    # opens empty rather than with a set in an arbitrary order.
    assert summary["training"]["demand_fit"]["opening"]["set_aside"] == "all weights zero"
    assert summary["opening_edges"] == {"edges": [], "asked": ["edge-09"]} and "edge-09" not in set(prefetch["edge_id"])


def test_the_metrics_raise_the_alert_when_the_learned_model_loses(degenerate_night, tmp_path):
    reg = batch_registry(read_reports(degenerate_night, DATE), DATE)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for m in reg.collect() for s in m.samples if s.name == "edgecache_model_selected"}
    assert samples[("edgecache_model_selected", (("model", "learned"), ("stage", "prefetch")))] == 0.0
    assert sum(v for (_, labels), v in samples.items() if ("stage", "prefetch") in labels) == 1.0
    # The pushed series, as Prometheus would scrape them, through the real alert rule.
    series = [{"series": "edgecache_model_selected{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}",
               "values": f"{v:g}x10"} for (_, labels), v in samples.items()]
    gate = read_json(degenerate_night.predictions(DATE, "summary.json"))["gate"]
    rule = next(r for g in yaml.safe_load((MON / "prometheus" / "rules" / "alerts.yml").read_text())["groups"]
                for r in g["rules"] if r.get("alert") == "LearnedModelLost")

    def expected(stage: str, model: str) -> dict:
        notes = {k: v.replace("{{ $labels.stage }}", stage).replace("{{ $labels.model }}", model)
                 for k, v in rule["annotations"].items()}
        return {"exp_labels": {**rule["labels"], "stage": stage, "model": model}, "exp_annotations": notes}

    alerts = [expected(stage, v["chosen"]) for stage, v in sorted(gate.items()) if v["chosen"] != "learned"]
    assert any(a["exp_labels"]["stage"] == "prefetch" for a in alerts)
    test = {"rule_files": [str(MON / "prometheus" / "rules" / "alerts.yml")], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
                {"eval_time": "5m", "alertname": "LearnedModelLost", "exp_alerts": alerts}]}]}
    path = tmp_path / "gate_alert_test.yml"
    path.write_text(yaml.safe_dump(test))
    out = subprocess.run([require_binary("promtool", "prometheus"), "test", "rules", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
