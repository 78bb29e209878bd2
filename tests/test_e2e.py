"""The whole DAG, run twice by `edgecache run` (airflow dags test) on a tiny dataset."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from edgecache.serving.keys import edge_cache_key, user_key, user_topk_key
from edgecache.pipeline.features import FEATURE_TABLES
from edgecache.layout import Layout, read_json
from tests.test_cache import snapshot
from tests.test_jobs import table, text_lines

pytestmark = pytest.mark.e2e

DATE = "2025-04-12"
CONF = {"users": 300, "edges": 3, "titles": 120, "events": 2000, "seed": 11, "bad_rate": 0.01, "top_k": 5,
        "cache_gb": 20, "window_days": 3}


def run_dag(tmp_path, redis_url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({
        "EDGECACHE_DATA_DIR": str(tmp_path / "data"),
        "EDGECACHE_LOCAL_DIR": str(tmp_path / "local"),
        "REDIS_URL": redis_url,
        "SPARK_MASTER": "local[2]",
    })
    # The test process points AIRFLOW_HOME at its own folder; the run makes its own.
    env.pop("AIRFLOW_HOME", None)
    out = subprocess.run([sys.executable, "-m", "edgecache.cli", "run", "--date", DATE, "--conf", json.dumps(CONF)],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def outputs(layout: Layout) -> dict:
    return {
        "logs": text_lines(layout.logs(DATE)),
        "quarantine": sorted(line for p in layout.quarantine(DATE).glob("*.json") for line in p.read_text().splitlines()),
        **{f"features/{n}": table(layout.features(DATE, n)) for n in FEATURE_TABLES},
        **{f"predictions/{n}": table(layout.predictions(DATE, n)) for n in ("users", "prefetch", "edge_demand")},
        "models": read_json(layout.predictions(DATE, "summary.json"))["models"],
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("e2e")
    client = redis_server.client()
    client.flushdb()
    first = run_dag(tmp, redis_server.url)
    layout = Layout(tmp / "data")
    state1, out1 = snapshot(client), outputs(layout)
    client.flushdb()
    began = dt.datetime.now(dt.UTC)
    second = run_dag(tmp, redis_server.url)  # same folders, no clean-up in between
    yield {"layout": layout, "client": client, "stdout": [first.stdout, second.stdout], "tmp": tmp, "began": began,
           "state": [state1, snapshot(client)], "outputs": [out1, outputs(layout)]}
    client.flushdb()


def test_summary_is_printed(two_runs):
    text = two_runs["stdout"][0]
    for needle in ("log lines", "predictions written", "federated training", "redis keys written", "GET user:",
                   "generate_logs", "spark_features", "spark_predict", "warm_cache", "push_metrics"):
        assert needle in text


def test_redis_serves_the_parquet_predictions(two_runs):
    client, layout = two_runs["client"], two_runs["layout"]
    preds = pq.read_table(layout.predictions(DATE, "users")).to_pandas()
    assert len(preds) > 100
    for row in preds.itertuples():
        assert client.get(user_key(row.user_id)) == row.content_id.encode()
        assert json.loads(client.get(user_topk_key(row.user_id))) == list(row.ranked)
    prefetch = pq.read_table(layout.predictions(DATE, "prefetch")).to_pandas()
    for edge_id, group in prefetch.groupby("edge_id"):
        assert sorted(client.zrange(edge_cache_key(edge_id), 0, -1)) == sorted(c.encode() for c in group["content_id"])


def test_two_runs_leave_identical_redis_state(two_runs):
    first, second = two_runs["state"]
    assert len(first) > 200
    assert first == second


def test_two_runs_leave_identical_outputs(two_runs):
    first, second = two_runs["outputs"]
    assert all(first.values())
    assert first == second


def test_the_airflow_ui_shows_the_run_s_real_start_and_duration(two_runs):
    """``airflow dags test`` dates a run's start at its logical date; ``edgecache run`` sets
    it to when the run began, so the UI shows minutes, not the months since that date."""
    db = two_runs["tmp"] / "local" / "airflow" / "airflow.db"
    with sqlite3.connect(db) as con:
        start, end = con.execute("SELECT start_date, end_date FROM dag_run WHERE dag_id = 'predictive_caching' "
                                 "ORDER BY id DESC LIMIT 1").fetchone()

    def utc(value: str) -> dt.datetime:
        t = dt.datetime.fromisoformat(value)
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)

    start, end = utc(start), utc(end)
    assert two_runs["began"] <= start + dt.timedelta(seconds=1)
    assert dt.timedelta(0) < end - start < dt.timedelta(minutes=20)


def test_the_learned_model_predicts(two_runs):
    summary = read_json(two_runs["layout"].predictions(DATE, "summary.json"))
    assert summary["model"] == "learned"
    assert summary["training"]["trained_on"]["labels"] == DATE


def test_metrics_file_written(two_runs):
    text = two_runs["layout"].metrics_file.read_text()
    assert "edgecache_batch_predictions" in text and "edgecache_batch_records_quarantined" in text
    # pushed after the evaluation, so its verdict on the deployed caches is in the same push
    assert 'edgecache_evaluation_hit_ratio{kind="object",policy="predictive+admission"}' in text


def test_evaluate_task_writes_its_report(two_runs):
    out = two_runs["layout"].evaluation(DATE)
    report = json.loads((out / "report.json").read_text())
    assert {"LRU", "Belady", "predictive", "oracle"} <= set(json.dumps(report).split('"'))
    assert (out / "report.md").read_text().startswith("#") or "|" in (out / "report.md").read_text()
    assert (out / "hit_ratio.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "traces").iterdir()) == ["edge=edge-01.csv", "edge=edge-02.csv",
                                                                  "edge=edge-03.csv"]


PROBE = """
from edgecache.pipeline.spark import get_spark
spark = get_spark("edgecache-probe")
import edgecache
print("EXECUTOR", spark.sparkContext.parallelize([0, 1], 2).map(lambda _: __import__("edgecache").__file__).collect())
spark.stop()
"""


@pytest.mark.cluster
def test_the_spark_jobs_on_a_standalone_cluster_give_the_local_outputs(two_runs, tmp_path_factory):
    """Day D's Spark work done again by spark-submit against a real standalone master and
    worker, from a copy of the local run's folders: the validation, features and
    predictions of D equal the local[2] run's, and the executors import the shipped package.
    (The jobs are what runs on Spark; the DAG around them does not change with the master.)"""
    from tests.services import spark_standalone

    local = two_runs["layout"]
    tmp = tmp_path_factory.mktemp("standalone")
    data = Layout(tmp / "data")
    shutil.copytree(local.root, data.root)
    for path in (data.events(DATE), data.quarantine(DATE), data.features_day(DATE), data.predictions_day(DATE)):
        shutil.rmtree(path)
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, EDGECACHE_LOCAL_DIR=str(tmp / "local"))
    jobs = Path(__file__).resolve().parents[1] / "spark_jobs"
    with spark_standalone(tmp) as master:

        def submit(script: Path, *args: str) -> str:
            out = subprocess.run([os.path.join(bin_dir, "spark-submit"), "--master", master, "--conf",
                                  "spark.ui.enabled=false", str(script), *args],
                                 capture_output=True, text=True, timeout=600, env=env)
            assert out.returncode == 0, out.stderr[-3000:]
            return out.stdout

        probe = tmp / "probe.py"
        probe.write_text(PROBE)
        line = next(x for x in submit(probe).splitlines() if x.startswith("EXECUTOR"))
        assert line.count("edgecache.zip") == 2, line  # from the zip, not the installed package
        common = ["--date", DATE, "--data-dir", str(data.root)]
        submit(jobs / "features.py", *common, "--window-days", str(CONF["window_days"]))
        submit(jobs / "predict.py", *common, "--top-k", str(CONF["top_k"]), "--cache-gb", str(CONF["cache_gb"]))

    def in_place(out: dict, root) -> dict:  # quarantined lines name their file: drop the folder
        return {**out, "quarantine": [line.replace(str(root), "<data>") for line in out["quarantine"]]}

    assert in_place(outputs(data), data.root) == in_place(two_runs["outputs"][0], local.root)


def test_replay_through_the_service_matches_the_evaluation(two_runs, redis_server):
    """D+1's logs sent through an edge service warmed by the DAG give the hit ratio the
    evaluation computed for the caches as deployed (last: it changes the caches in Redis)."""
    from edgecache.serving.delivery.replay import replay
    from edgecache.ops.redis_server import free_port
    from tests.services import process

    layout = two_runs["layout"]
    report = read_json(layout.evaluation(DATE) / "report.json")
    expected = report["deployed"]["policies"]["predictive+admission"]["object_hit_ratio"]
    port = free_port()
    cmd = [sys.executable, "-m", "edgecache.cli", "serve", "--port", str(port), "--redis-url", redis_server.url,
           "--cache-gb", str(CONF["cache_gb"]), "--clock", "replay"]
    for edge in sorted(report["edges"]):
        cmd += ["--edge", edge]
    with process(cmd, f"http://127.0.0.1:{port}/healthz"):
        summary = replay([f"http://127.0.0.1:{port}"], layout.logs(report["replayed_date"]), rate=1000,
                         duration=120, progress=None)
    assert summary["degraded"] == 0 and set(summary["errors"]) <= {"422"}
    assert summary["hits"] + summary["misses"] >= 0.99 * report["requests_replayed"]
    assert abs(summary["hit_ratio"] - expected) <= 0.01, (summary["hit_ratio"], expected)
