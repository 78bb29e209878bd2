"""The Spark jobs end to end in one process: generate -> features -> predict."""

from __future__ import annotations

import argparse
import base64
import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from edgecache.pipeline import features, predict
from edgecache.simulate import generate_logs as generate
from edgecache.layout import COMMIT_MARKER, Layout, read_json
from tests.test_validate import BAD
from edgecache.pipeline.features import FEATURE_TABLES
from edgecache.pipeline.demand import OPENING_FEATURES
from tests.tiny import EVENTS, catalog_df

DATE = "2025-04-12"
CACHE_GB = 12.0
SMALL = ["--users", "120", "--edges", "3", "--titles", "60", "--events", "1500", "--seed", "3", "--bad-rate", "0.02"]


def run_all(root, master="local[2]") -> None:
    common = ["--date", DATE, "--data-dir", str(root), "--master", master]
    assert generate.main(common + SMALL + ["--history-days", "4"]) == 0
    assert features.main(common + ["--window-days", "3"]) == 0
    assert predict.main(common + ["--top-k", "5", "--cache-gb", str(CACHE_GB)]) == 0


def table(path) -> list[tuple]:
    """A Parquet directory's rows in a canonical order (file names and row order vary)."""
    df = pq.read_table(path).to_pandas()
    return sorted(tuple(json.dumps(v.tolist() if hasattr(v, "tolist") else v, default=str) for v in row)
                  for row in df.itertuples(index=False))


def text_lines(path) -> dict[str, list[str]]:
    return {p.parent.name: sorted(p.read_text().splitlines()) for p in sorted(path.rglob("part-*"))}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("jobs")
    run_all(root)
    return root


def test_counts_add_up(first_run):
    layout = Layout(first_run)
    gen, feat = read_json(layout.report(DATE, "generate")), read_json(layout.report(DATE, "features"))
    assert gen["lines"] == feat["lines_in"] == feat["accepted"] + feat["duplicates"] + feat["quarantined"]
    assert feat["quarantined"] == sum(feat["quarantined_by_reason"].values()) > 0
    quarantined = sum(len(p.read_text().splitlines()) for p in layout.quarantine(DATE).glob("*.json"))
    assert quarantined == feat["quarantined"]
    assert pq.read_table(layout.events(DATE)).num_rows == feat["accepted"]


def test_logs_are_partitioned_by_edge(first_run):
    logs = text_lines(Layout(first_run).logs(DATE))
    assert sorted(logs) == ["edge=edge-01", "edge=edge-02", "edge=edge-03"]
    for part, lines in logs.items():
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # injected malformed line
            if isinstance(rec.get("edge_id"), str) and rec.get("edge_id") in {"edge-01", "edge-02", "edge-03"}:
                assert part == f"edge={rec['edge_id']}"


def test_every_active_viewer_gets_a_prediction(first_run):
    layout = Layout(first_run)
    users = pq.read_table(layout.features(DATE, "users")).column("user_id").to_pylist()
    preds = pq.read_table(layout.predictions(DATE, "users")).to_pandas()
    assert sorted(preds["user_id"]) == sorted(users)
    assert (preds["ranked"].map(len) <= 5).all()
    assert (preds["content_id"] == preds["ranked"].map(lambda r: r[0])).all()
    summary = read_json(layout.predictions(DATE, "summary.json"))
    assert summary["predictions"] == len(preds)
    prefetch = pq.read_table(layout.predictions(DATE, "prefetch")).to_pandas()
    assert 0 < prefetch.groupby("edge_id")["size_bytes"].sum().max() <= CACHE_GB * 1e9
    assert summary["prefetch_bytes_per_edge"] == prefetch.groupby("edge_id")["size_bytes"].sum().to_dict()


def test_history_is_generated_and_the_model_learns_from_yesterday(first_run):
    layout = Layout(first_run)
    gen = read_json(layout.report(DATE, "generate"))
    assert gen["history_days_generated"] == ["2025-04-09", "2025-04-10", "2025-04-11"]
    feat = read_json(layout.report(DATE, "features"))
    assert feat["window_days_found"] == ["2025-04-10", "2025-04-11", "2025-04-12"]
    assert feat["previous_day_features_built"] is True
    summary = read_json(layout.predictions(DATE, "summary.json"))
    assert summary["model"] == "learned"
    assert summary["training"]["trained_on"] == {"features": "2025-04-11", "labels": DATE}
    assert 0 < summary["training"]["scorer_positives"] < summary["training"]["scorer_rows"]
    assert set(summary["models"]["scorer"]["features"]) >= {"next_episode", "popularity", "personal"}
    # trained by federated learning by default: every edge in every round, and it settled
    fed = summary["training"]["federated"]
    assert summary["training"]["training"] == "federated" and fed["edges"] == ["edge-01", "edge-02", "edge-03"]
    assert all(r["edges"] == fed["edges"] and r["update_bytes"] == 3 * (18 * 8 + 8) for r in fed["rounds"])
    assert fed["rounds"][-1]["change"] < fed["rounds"][0]["change"]
    preds = pq.read_table(layout.predictions(DATE, "users")).to_pandas()
    # Scores are probabilities, best first.
    assert all(list(s) == sorted(s, reverse=True) and 0 < s[-1] and s[0] < 1 for s in preds["scores"])


def test_every_way_of_training_runs_the_job(first_run, tmp_path):
    """Local-only training gives each edge its own scorer; federated with secure aggregation,
    differential privacy and fine-tuning reports its budget and per-edge scorers; central
    training has neither."""
    common = ["--date", DATE, "--data-dir", str(tmp_path), "--top-k", "5", "--cache-gb", str(CACHE_GB)]
    shutil.copytree(first_run, tmp_path, dirs_exist_ok=True)
    # edge-09 opens tomorrow, no logs yet; edge-01, listed too, has logs: it is not opening
    opening = ["--opening-edges", "edge-09,edge-01", "--gate", "false"]
    runs = {"local": ["--training", "local", *opening],
            "private": ["--training", "federated", "--fl-secure", "true", "--fl-epsilon", "4", "--fl-rounds", "3",
                        "--fl-fine-tune-steps", "1"],
            "central": ["--training", "central", *opening],
            "demand": ["--training", "federated", "--fl-demand", "true", "--fl-secure", "true", "--fl-epsilon", "8",
                       "--fl-rounds", "3", "--fl-fine-tune-steps", "2", "--opening-edges", "edge-09"],
            "dp_gated": ["--training", "federated", "--fl-demand", "true", "--fl-epsilon", "8", "--fl-rounds", "3",
                         "--opening-edges", "edge-09"]}
    got = {}
    for name, flags in runs.items():
        assert predict.main(common + flags) == 0
        got[name] = read_json(Layout(tmp_path).predictions(DATE, "summary.json"))
        if name in ("local", "central"):
            got[name]["demand_edges"] = sorted(
                set(pq.read_table(Layout(tmp_path).predictions(DATE, "edge_demand")).column("edge_id").to_pylist()))
    # The opening edge's prefetch set comes from what the other edges know; local-only knows nothing.
    assert got["central"]["demand_edges"] == ["edge-01", "edge-02", "edge-03", "edge-09"]
    assert got["central"]["prefetch_titles_per_edge"]["edge-09"] > 0
    # ranked by a model of what the service-wide figures alone say, fitted for that case
    opening_model = got["central"]["models"]["demand_opening"]
    assert opening_model["features"] == ["global", "launch", "new_release", "first_episode", "movie"]
    assert got["central"]["training"]["demand_fit"]["opening"]["federated"] is False
    assert got["local"]["models"]["demand_opening"] is None
    assert got["local"]["demand_edges"] == ["edge-01", "edge-02", "edge-03"]
    assert "edge-09" not in got["local"]["prefetch_titles_per_edge"]
    assert sorted(got["local"]["models"]["scorer_per_edge"]) == ["edge-01", "edge-02", "edge-03"]
    # Local-only demand: a model per edge, none of them with the service-wide count.
    local_demand = got["local"]["models"]["demand_per_edge"]
    assert sorted(local_demand) == got["local"]["training"]["demand_fit"]["edges_with_own_model"]
    assert sorted(local_demand) == ["edge-01", "edge-02", "edge-03"]
    assert all("global" not in m["features"] for m in local_demand.values())
    assert got["private"]["models"]["demand_per_edge"] == {}
    fed = got["private"]["training"]["federated"]
    assert fed["config"]["secure"] is True and 3.5 < fed["epsilon_spent"] <= 4.0 and len(fed["rounds"]) == 3
    assert all(r["update_bytes"] == 3 * 19 * 8 for r in fed["rounds"])  # masked: 18 parameters and the weight
    assert len(got["private"]["models"]["scorer_per_edge"]) == 3
    # The noise kept the global scorer from settling, so each edge fitted its own from scratch
    # on its own rows, which are the rows local-only training fits: the same models.
    assert fed["global_converged"] is False and fed["global_model_set_aside"] is True
    assert got["private"]["models"]["scorer_per_edge"] == got["local"]["models"]["scorer_per_edge"]
    assert got["central"]["training"]["federated"] is None and got["central"]["models"]["scorer_per_edge"] == {}
    assert got["central"]["predictions"] == got["local"]["predictions"] == got["private"]["predictions"]
    # The demand model federated too, by the same rounds: only masked updates of its 8 weights
    # and intercept reach the server, and the two models share the privacy budget.
    training = got["demand"]["training"]
    demand = training["demand_fit"]["federated"]
    assert demand["family"] == "poisson" and demand["config"]["secure"] is True and len(demand["rounds"]) == 3
    assert all(r["update_bytes"] == 3 * 10 * 8 for r in demand["rounds"])  # 9 parameters and the weight, masked
    assert training["demand_fit"]["opening"]["update_bytes_per_round"] == 3 * 7 * 8  # 5 weights, intercept, weight
    # Four releases share the budget here: the scorer, the demand model, the opening edges'
    # model (each DP for a whole edge) and the per-title totals (DP for one viewer).
    opening_spent = training["demand_fit"]["opening"]["epsilon_spent"]
    totals_dp = training["global_totals"]["dp"]
    assert totals_dp["unit"] == "viewer" and totals_dp["epsilon"] == pytest.approx(2.0)
    spent = training["federated"]["epsilon_spent"] + demand["epsilon_spent"] + opening_spent + totals_dp["epsilon"]
    assert 7.5 < spent <= 8.0 and demand["epsilon_spent"] > 1.8 and opening_spent > 1.8
    # each edge's noise came from a secret it keeps, readable by the owner alone
    keys = sorted(Layout(tmp_path).edge_keys.iterdir())
    assert [k.name for k in keys] == ["edge-01.key", "edge-02.key", "edge-03.key"]
    assert all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    assert got["central"]["training"]["demand_fit"]["federated"] is None
    # The per-title totals the scorer's shares and the demand model read came from the edges
    # securely summed: one masked slot per catalog title from each edge.
    totals = training["global_totals"]
    titles = len(pq.read_table(Layout(tmp_path).catalog).column("content_id"))
    assert totals["secure"] is True and totals["edges"] == 3 and totals["bytes_received"] == 3 * titles * 8
    assert got["central"]["training"]["global_totals"] is None
    # Fine-tuned: each edge ranks by its own demand model over every input, the securely
    # summed totals too, and no two edges' models are the same.
    tuned, global_demand = got["demand"]["models"]["demand_per_edge"], got["demand"]["models"]["demand"]
    assert sorted(tuned) == training["demand_fit"]["edges_with_own_model"] == ["edge-01", "edge-02", "edge-03"]
    assert all(m["features"] == global_demand["features"] and "global" in m["features"] for m in tuned.values())
    assert len({tuple(m["weights"]) for m in tuned.values()}) == 3
    assert got["demand"]["predictions"] == got["central"]["predictions"]
    # DP noise kept the global demand model moving, so it ranks no edge: each edge fitted its
    # own model from scratch, and an edge without rows would rank by its own recent requests.
    assert demand["global_converged"] is False and demand["global_model_set_aside"] is True
    assert dict(zip(global_demand["features"], global_demand["weights"])) == {
        f: float(f == "popularity") for f in global_demand["features"]}
    # Without fine-tuning the gate sets the unsettled model aside and deploys a baseline; the
    # edge that opens tomorrow still gets the opening model's set, as no baseline has one.
    gated = got["dp_gated"]
    assert gated["gate"]["prefetch"]["rejected"]["learned"] == "fit did not converge"
    assert gated["deployed"]["prefetch"] != "learned"
    assert gated["opening_edges"] == {"edges": ["edge-09"], "asked": ["edge-09"]}
    assert gated["prefetch_titles_per_edge"]["edge-09"] > 0
    assert got["local"]["opening_edges"] == {"edges": [], "asked": ["edge-09", "edge-01"]}
    assert got["central"]["opening_edges"] == {"edges": ["edge-09"], "asked": ["edge-09", "edge-01"]}


def test_an_edge_that_opened_today_ranks_by_a_model_of_its_first_day_under_dp(first_run, tmp_path):
    """edge-03 has no rows in yesterday's features, so no training rows: it opened today.
    Under DP the unsettled global demand model is set aside and the edges fit their own, so
    edge-03 fits the opening inputs to its first day (spending no budget) and ranks every
    title out by tomorrow by that beside its own requests, whatever the gate chose for the
    edges it has figures for. Without DP the global model ranks it."""
    shutil.copytree(first_run, tmp_path, dirs_exist_ok=True)
    layout = Layout(tmp_path)
    yesterday = layout.features("2025-04-11", "popularity")
    kept = pq.read_table(yesterday).to_pandas().query("edge_id != 'edge-03'")
    shutil.rmtree(yesterday)
    yesterday.mkdir()
    kept.to_parquet(yesterday / "part-0.parquet", index=False)
    # The edges' noise secrets are fixed so the run is the same on every machine; a small
    # epsilon makes the noisy scorer lose the lists' question below by a clear margin.
    layout.edge_keys.mkdir()
    for i, edge in enumerate(["edge-01", "edge-02", "edge-03"]):
        (layout.edge_keys / f"{edge}.key").write_bytes(bytes([i + 1]) * 32)
    common = ["--date", DATE, "--data-dir", str(tmp_path), "--top-k", "5", "--cache-gb", str(CACHE_GB),
              "--training", "federated", "--fl-demand", "true", "--fl-rounds", "3"]
    assert predict.main(common + ["--fl-epsilon", "0.25", "--fl-fine-tune-steps", "2", "--gate", "true"]) == 0
    summary = read_json(layout.predictions(DATE, "summary.json"))
    fit = summary["training"]["demand_fit"]
    # Nothing comes out tomorrow: the first day's model ranks every title there
    assert fit["young_edges"] == {"edges": ["edge-03"], "first_day_models": ["edge-03"], "releases_by": "first_day"}
    assert summary["models"]["demand_opening"] is None
    first_day = summary["models"]["demand_first_day"]
    assert list(first_day) == ["edge-03"] and first_day["edge-03"]["features"] == list(OPENING_FEATURES)
    assert fit["federated"]["global_model_set_aside"] is True and fit["edges_with_own_model"] == ["edge-01", "edge-02"]
    # three releases share the budget, as without a young edge: its model is not sent
    assert summary["training"]["global_totals"]["dp"]["epsilon"] == pytest.approx(0.25 / 3)
    demand = pq.read_table(layout.predictions(DATE, "edge_demand")).to_pandas()
    today = pq.read_table(layout.features(DATE, "popularity")).to_pandas()
    served = set(today.query("edge_id == 'edge-03'")["content_id"])
    young = demand.query("edge_id == 'edge-03'")
    assert len(young) == young["content_id"].nunique() > len(served)  # every title out, not only its own
    # By its own requests alone every title it has not served would score the same
    assert young[~young["content_id"].isin(served)]["score"].nunique() > 1
    # Nor has it a scorer of its own: the gate asks the noisy global scorer it would get the
    # lists' question on the edges with figures. It loses there (or is rejected), so edge-03's viewers get the
    # winner's lists (their edge's five most requested titles) and the others keep theirs.
    verdict = summary["gate"]["young_lists"]
    assert sorted(verdict["figures"]) == ["edge_popular", "learned", "simple"]
    assert verdict["figures"]["edge_popular"] == summary["gate"]["lists"]["figures"]["edge_popular"]
    assert verdict["learned_lost"] and summary["deployed"]["young_lists"] == verdict["chosen"] == "edge_popular"
    assert summary["deployed"]["lists"] == "learned"
    # Only yesterday's set held anything at edge-03 on its first day: the sets' figures leave
    # it out, so that day does not decide what the other edges get.
    assert summary["gate"]["prefetch"]["edges_left_out"] == ["edge-03"]
    assert summary["deployed"]["young_prefetch"] == "first_day"
    lists = pq.read_table(layout.predictions(DATE, "users")).to_pandas()
    top = today.query("edge_id == 'edge-03'").sort_values(["requests", "rank", "content_id"],
                                                           ascending=[False, True, True])["content_id"].head(5).tolist()
    assert [list(r) for r in lists.query("edge_id == 'edge-03'")["ranked"]] == [top] * (lists["edge_id"] == "edge-03").sum()
    assert set(lists["edge_id"]) == set(today["edge_id"]) and len(lists) == lists["user_id"].nunique()
    assert (lists.query("edge_id != 'edge-03'")["source"] != "edge_popular").any()

    # A movie due later comes out tomorrow instead. Nothing came out on edge-03's first day,
    # so that day's model cannot say what a release brings: the opening model, trained on
    # every edge's releases, ranks it there, and takes a share of the budget.
    catalog = pd.read_parquet(layout.catalog)
    due = catalog.query("kind == 'movie' and release_date > '2025-04-13'").index[0]
    moved = catalog.copy()
    moved.loc[due, "release_date"] = "2025-04-13"
    moved.to_parquet(layout.catalog, index=False)
    assert predict.main(common + ["--fl-epsilon", "0.25", "--fl-fine-tune-steps", "2", "--gate", "true"]) == 0
    catalog.to_parquet(layout.catalog, index=False)
    summary = read_json(layout.predictions(DATE, "summary.json"))
    assert summary["training"]["demand_fit"]["young_edges"]["releases_by"] == "opening"
    assert summary["models"]["demand_opening"]["features"] == list(OPENING_FEATURES)
    assert summary["training"]["global_totals"]["dp"]["epsilon"] == pytest.approx(0.25 / 4)
    demand = pq.read_table(layout.predictions(DATE, "edge_demand")).to_pandas()
    assert catalog.loc[due, "content_id"] in set(demand.query("edge_id == 'edge-03'")["content_id"])

    # Without DP every edge ranks by the global models: no verdict of its own for edge-03
    assert predict.main(common + ["--gate", "true"]) == 0
    summary = read_json(layout.predictions(DATE, "summary.json"))
    assert summary["training"]["demand_fit"]["young_edges"] == {
        "edges": ["edge-03"], "first_day_models": [], "releases_by": None}
    assert summary["models"]["demand_first_day"] == {}
    assert "young_lists" not in summary["gate"] and "young_lists" not in summary["deployed"]
    assert summary["gate"]["prefetch"]["edges_left_out"] == ["edge-03"]
    # Three rounds leave the demand model unsettled: the gate rejects it, so edge-03 gets the
    # baseline the others get, and so do the baselines that would place releases with it.
    sets = summary["gate"]["prefetch"]
    assert sets["rejected"]["learned"] == "fit did not converge" and "simple+releases" in sets["rejected"]
    assert summary["deployed"]["young_prefetch"] == summary["deployed"]["prefetch"] == sets["chosen"]
    # Settled, the learned model ranks edge-03 whatever the gate chose for the others
    assert predict.main(common + ["--fl-rounds", "12", "--gate", "true"]) == 0
    summary = read_json(layout.predictions(DATE, "summary.json"))
    assert "learned" not in summary["gate"]["prefetch"]["rejected"], summary["gate"]["prefetch"]
    assert summary["deployed"]["young_prefetch"] == "learned"
    gated = pq.read_table(layout.predictions(DATE, "edge_demand")).to_pandas()
    assert predict.main(common + ["--fl-rounds", "12", "--gate", "false"]) == 0
    ungated = pq.read_table(layout.predictions(DATE, "edge_demand")).to_pandas()

    def scores(frame, edge):
        return frame.query("edge_id == @edge").set_index("content_id")["score"].to_dict()

    assert scores(gated, "edge-03") and scores(gated, "edge-03") == pytest.approx(scores(ungated, "edge-03"))


def test_rerun_gives_identical_outputs(first_run, tmp_path, spark):
    run_all(tmp_path)
    a, b = Layout(first_run), Layout(tmp_path)
    assert text_lines(a.logs(DATE)) == text_lines(b.logs(DATE))
    for name in FEATURE_TABLES:
        assert table(a.features(DATE, name)) == table(b.features(DATE, name))
    for name in ("users", "prefetch", "edge_demand"):
        assert table(a.predictions(DATE, name)) == table(b.predictions(DATE, name))
    assert read_json(a.predictions(DATE, "summary.json"))["models"] == read_json(b.predictions(DATE, "summary.json"))["models"]


def test_nightly_features_equal_the_cold_build(first_run, tmp_path):
    """The night after, D-1's features exist and only D's window is read: same tables."""
    shutil.copytree(first_run, tmp_path / "night")
    night = Layout(tmp_path / "night")
    assert features.main(["--date", DATE, "--data-dir", str(night.root), "--window-days", "3"]) == 0
    assert read_json(night.report(DATE, "features"))["previous_day_features_built"] is False
    for name in FEATURE_TABLES:
        assert table(night.features(DATE, name)) == table(Layout(first_run).features(DATE, name)), name


def test_malformed_lines_of_every_kind_are_quarantined_and_good_lines_predicted(tmp_path, spark):
    layout = Layout(tmp_path)
    good = [json.dumps({"user_id": u, "device": "TV", "content_id": c, "duration": 10,
                        "timestamp": f"{DATE} {t}:00", "edge_id": e}).encode() for u, c, t, e in EVENTS]
    bad = [(reason, value if isinstance(value, bytes) else value.encode())
           for reason, values in BAD.items() for value in values]
    edge_dir = layout.logs(DATE) / "edge=edge-01"
    edge_dir.mkdir(parents=True)
    (edge_dir / "part-00000.txt").write_bytes(b"\n".join(good[:6] + [v for _, v in bad] + good[:2] + good[6:]) + b"\n")
    (layout.logs(DATE) / COMMIT_MARKER).touch()  # complete, as an ingest would leave it
    layout.reference.mkdir(parents=True)
    catalog_df(spark).toPandas().astype({"episode": "Int64"}).to_parquet(layout.catalog)

    common = ["--date", DATE, "--data-dir", str(tmp_path)]
    assert features.main(common) == 0
    assert predict.main(common + ["--top-k", "3"]) == 0

    report = read_json(layout.report(DATE, "features"))
    # Every line counts, the empty one included: lines in = accepted + duplicates + quarantined.
    assert report["lines_in"] == len(good) + 2 + len(bad)
    assert report["accepted"] == len(good) and report["duplicates"] == 2
    assert report["quarantined_by_reason"] == {reason: len(values) for reason, values in BAD.items()}
    rows = [json.loads(line) for p in layout.quarantine(DATE).glob("*.json") for line in p.read_text().splitlines()]
    assert sorted((r["reason"], base64.b64decode(r["line_base64"])) for r in rows) == sorted(bad)
    # One day of logs: nothing to train on yet, so the simple model predicts, and says so.
    assert read_json(layout.predictions(DATE, "summary.json"))["model"] == "simple"
    preds = pq.read_table(layout.predictions(DATE, "users")).to_pandas().set_index("user_id")
    assert sorted(preds.index) == ["U1", "U2", "U3", "U4", "U5"]
    assert preds.loc["U1", "content_id"] == "C4"  # next episode, as in the hand-checked test


def test_opening_edges_are_a_list_of_edge_ids():
    assert predict.edge_list("edge-09, edge-10") == ["edge-09", "edge-10"] and predict.edge_list("") == []
    for bad in ("edge:09", "edge-09,edge 10"):
        with pytest.raises(argparse.ArgumentTypeError, match="not an edge id"):
            predict.edge_list(bad)
