"""Bring your own logs: ingest an operator's files (gzip, CRLF, BOM, duplicates, bad lines,
no edge_id in some records), with their catalog, a movie-only one, or none at all, and run
features -> predict -> evaluate on them; every input error is one line and exit 2."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from edgecache.pipeline.catalog import BYTES_PER_SECOND
from edgecache.evaluation import evaluate
from edgecache.pipeline import features, predict
from edgecache.pipeline import ingest_logs as ingest
from edgecache.layout import Layout, read_json
from edgecache.pipeline.validate import Event, sort_lines
from tests.operator_logs import EDGES, TITLES, day_records, write_catalog_csv, write_day
from tests.test_validate import BAD

DAYS = ("2025-04-10", "2025-04-11", "2025-04-12", "2025-04-13")
DATE = "2025-04-12"
BAD_LINES = [v if isinstance(v, bytes) else v.encode() for values in BAD.values() for v in values]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Four days of an operator's logs; D carries every kind of bad line."""
    root = tmp_path_factory.mktemp("operator") / "logs"
    expected = {d: write_day(root, d, day_records(d), BAD_LINES if d == DATE else []) for d in DAYS}
    return root, expected


def ingest_days(data, src, catalog=None, days=DAYS) -> None:
    for d in days:
        argv = ["--date", d, "--data-dir", str(data), "--source", str(src), "--master", "local[2]"]
        assert ingest.main(argv + (["--catalog", str(catalog)] if catalog else [])) == 0


def pipeline(data) -> None:
    common = ["--date", DATE, "--data-dir", str(data), "--master", "local[2]"]
    assert features.main(common + ["--window-days", "2"]) == 0
    assert predict.main(common + ["--top-k", "5", "--cache-gb", "10"]) == 0
    assert evaluate.main(common + ["--sizes", "5,20"]) == 0


@pytest.fixture(scope="module")
def movie_only(tmp_path_factory, source, spark):
    """Ingested with a catalog of only content_id and size_bytes, then the whole pipeline."""
    src, _ = source
    data = tmp_path_factory.mktemp("movie-only")
    catalog = write_catalog_csv(data.parent / "catalog.csv")
    ingest_days(data, src, catalog)
    pipeline(data)
    return Layout(data)


def test_gzip_crlf_bom_folder_gives_every_good_line(movie_only, source):
    src, expected = source
    feat = read_json(movie_only.report(DATE, "features"))
    want = expected[DATE]
    assert feat["lines_in"] == want["lines_in"]
    assert feat["accepted"] == want["accepted"] and feat["duplicates"] == want["duplicates"]
    assert feat["lines_in"] == feat["accepted"] + feat["duplicates"] + feat["quarantined"]
    events = pq.read_table(movie_only.events(DATE)).to_pandas()
    got = {Event(r.user_id, r.device, r.content_id, r.duration, str(r.timestamp), r.edge_id)
           for r in events.itertuples()}
    assert got == {Event(**r) for r in day_records(DATE)}  # edge_id from the folder where the record had none


def test_every_bad_kind_is_counted_and_the_good_lines_still_predict(movie_only):
    feat = read_json(movie_only.report(DATE, "features"))
    assert feat["quarantined_by_reason"] == {reason: len(values) for reason, values in BAD.items()}
    assert feat["quarantined"] == len(BAD_LINES)
    preds = pq.read_table(movie_only.predictions(DATE, "users")).to_pandas()
    assert set(preds["user_id"]) == {r["user_id"] for r in day_records(DATE)}
    assert set(pq.read_table(movie_only.predictions(DATE, "prefetch")).to_pandas()["edge_id"]) == set(EDGES)


def test_movie_only_catalog_runs_features_predict_evaluate(movie_only):
    info = read_json(movie_only.catalog_info)
    assert info["titles"] == len(TITLES) and info["source"].endswith("catalog.csv")
    catalog = pq.read_table(movie_only.catalog).to_pandas()
    assert set(catalog["kind"]) == {"movie"} and catalog["series_id"].isna().all()
    assert pq.read_table(movie_only.features(DATE, "user_series")).num_rows == 0
    report = read_json(movie_only.evaluation(DATE) / "report.json")
    assert report["requests_replayed"] == len(day_records("2025-04-13"))
    assert report["validation"]["duplicates"] == 5
    lru = report["results"]["titles"]["LRU"]["20"]["object_hit_ratio"]
    assert 0 < lru < 1


def test_no_catalog_infers_one_from_the_logs(tmp_path, source, spark):
    src, _ = source
    ingest_days(tmp_path, src)
    pipeline(tmp_path)
    layout = Layout(tmp_path)
    assert read_json(layout.catalog_info)["source"] == "inferred"
    catalog = pq.read_table(layout.catalog).to_pandas().set_index("content_id")
    seen = [r for d in DAYS for r in day_records(d)]
    assert set(catalog.index) == {r["content_id"] for r in seen}  # D+1's new titles joined at evaluate
    longest = {}
    for r in [r for d in DAYS[:-1] for r in day_records(d)]:
        longest[r["content_id"]] = max(longest.get(r["content_id"], 0), r["duration"])
    for title, minutes in longest.items():  # sized by bitrate x longest view, as first seen
        assert catalog.loc[title, "size_bytes"] == minutes * 60 * BYTES_PER_SECOND
    assert read_json(layout.evaluation(DATE) / "report.json")["requests_replayed"] > 0


def test_reingesting_a_day_is_idempotent(tmp_path, source, spark):
    src, _ = source
    ingest_days(tmp_path, src, days=(DATE,))
    layout = Layout(tmp_path)
    first = {p.relative_to(layout.logs(DATE)): p.read_bytes() for p in layout.logs(DATE).rglob("part-*")}
    ingest_days(tmp_path, src, days=(DATE,))
    again = {p.relative_to(layout.logs(DATE)): p.read_bytes() for p in layout.logs(DATE).rglob("part-*")}
    assert first == again and len(first) == 4
    # The stored lines are the source's lines, bad ones included, byte for byte.
    lines = sorted(b for data in first.values() for b in data.splitlines())
    assert len(lines) == read_json(layout.report(DATE, "ingest"))["lines"]


def test_glob_source_and_edge_flag(tmp_path, spark):
    flat = tmp_path / "incoming"
    flat.mkdir()
    records = day_records(DATE)[:50]
    no_edge = [json.dumps({k: v for k, v in r.items() if k != "edge_id"}).encode() for r in records]
    (flat / f"views-{DATE}.log").write_bytes(b"\n".join(no_edge) + b"\n")
    (flat / "views-2025-04-11.log").write_bytes(no_edge[0] + b"\n")  # another day: not matched
    data = tmp_path / "data"
    assert ingest.main(["--date", DATE, "--data-dir", str(data), "--source", str(flat / "views-{date}.log"),
                        "--edge", "nice"]) == 0
    assert sorted(p.parent.name for p in Layout(data).logs(DATE).rglob("part-*")) == ["edge=nice"]
    out = sort_lines((Layout(data).logs(DATE) / "edge=nice" / "part-00000.jsonl").read_bytes().splitlines(),
                     DATE, "nice")
    assert len(out.events) == 50 and {e.edge_id for e in out.events} == {"nice"}


# --- errors a person can act on: one line, exit 2, before any Spark work ----------------

def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # A master Spark cannot start proves the check came first: Spark would fail with a trace.
    return subprocess.run([sys.executable, "-m", "edgecache.cli", *argv, "--master", "bogus://nowhere"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]


def test_a_wrong_catalog_is_one_line_and_exit_2(tmp_path, source):
    src, _ = source
    bad = tmp_path / "catalog.csv"
    bad.write_text("content_id,size_bytes\nM1,100\nM2,-4\n")
    out = run_cli("ingest", "--date", DATE, "--data-dir", str(tmp_path), "--source", str(src), "--catalog", str(bad))
    one_line_error(out, str(bad), "'size_bytes'", "row 2", "negative")
    assert not Layout(tmp_path).logs(DATE).exists()


@pytest.mark.parametrize("case", ["missing source", "empty day", "no logs", "no features", "no predictions"])
def test_missing_inputs_are_one_line_and_exit_2(tmp_path, case):
    data = str(tmp_path / "data")
    if case == "missing source":
        out = run_cli("ingest", "--date", DATE, "--data-dir", data, "--source", str(tmp_path / "nowhere"))
        one_line_error(out, "does not exist")
    elif case == "empty day":
        (tmp_path / "src" / f"date={DATE}").mkdir(parents=True)
        (tmp_path / "src" / f"date={DATE}" / "a.jsonl").write_bytes(b"")
        one_line_error(run_cli("ingest", "--date", DATE, "--data-dir", data, "--source", str(tmp_path / "src")),
                       "all empty")
    elif case == "no logs":
        one_line_error(run_cli("features", "--date", DATE, "--data-dir", data), f"no logs for {DATE}")
    elif case == "no features":
        one_line_error(run_cli("predict", "--date", DATE, "--data-dir", data), f"no features for {DATE}")
    else:
        one_line_error(run_cli("evaluate", "--date", DATE, "--data-dir", data), "run features and predict")


# --- the DAG's path for real data ----------------------------------------------------------

@pytest.mark.e2e
def test_the_dag_ingests_a_folder_the_test_writes(tmp_path, source, redis_server):
    src, expected = source
    catalog = write_catalog_csv(tmp_path / "catalog.csv")
    env = dict(os.environ, EDGECACHE_DATA_DIR=str(tmp_path / "data"), EDGECACHE_LOCAL_DIR=str(tmp_path / "local"),
               REDIS_URL=redis_server.url, SPARK_MASTER="local[2]")
    env.pop("AIRFLOW_HOME", None)  # the run makes its own
    conf = {"source": "ingest", "logs_path": str(src), "catalog_path": str(catalog), "window_days": 2,
            "top_k": 5, "cache_gb": 10}
    out = subprocess.run([sys.executable, "-m", "edgecache.cli", "run", "--date", DATE, "--conf", json.dumps(conf)],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tasks = {line.split()[0]: line.split()[-1] for line in out.stdout.split("wall time per task:")[1]
             .split("outputs:")[0].strip().splitlines()}
    assert tasks["generate_logs"] == "skipped" and tasks["ingest_logs"] == "success"
    assert all(state == "success" for task, state in tasks.items() if task != "generate_logs"), tasks

    layout = Layout(tmp_path / "data")
    assert not layout.report(DATE, "generate").exists()
    feat = read_json(layout.report(DATE, "features"))
    assert (feat["lines_in"], feat["accepted"], feat["duplicates"]) == (
        expected[DATE]["lines_in"], expected[DATE]["accepted"], expected[DATE]["duplicates"])
    assert read_json(layout.catalog_info)["titles"] == len(TITLES)
    preds = pq.read_table(layout.predictions(DATE, "users")).to_pandas()
    assert len(preds) == len({r["user_id"] for r in day_records(DATE)})
    client = redis_server.client()
    for row in preds.head(20).itertuples():
        assert client.get(f"user:{row.user_id}") == row.content_id.encode()
    # D+1 is not ingested yet: next_day_logs leaves it to ingest, evaluate says so, both succeed.
    assert read_json(layout.report(DATE, "next_day_logs"))["logs_generated"] is False
    assert read_json(layout.report(DATE, "evaluate"))["skipped"].startswith("no logs for 2025-04-13")


def test_warm_without_predictions_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgecache.cli", "warm", "--date", DATE, "--data-dir", str(tmp_path),
                          "--redis-url", "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=60)
    one_line_error(out, "no predictions at")


def test_records_without_a_folder_are_routed_by_their_edge_id(tmp_path, spark):
    flat = tmp_path / "incoming"
    flat.mkdir()
    records = day_records(DATE)[:40]
    lines = [json.dumps(r).encode() for r in records] + [b'{"user_id": "no-edge"}', b"garbage"]
    (flat / "all.jsonl").write_bytes(gzip.compress(b"\n".join(lines)))  # gzip without the suffix
    (flat / "all.jsonl").rename(flat / "all.jsonl.gz")
    data = tmp_path / "data"
    assert ingest.main(["--date", DATE, "--data-dir", str(data), "--source", str(flat)]) == 0
    report = read_json(Layout(data).report(DATE, "ingest"))
    want = {e: sum(r["edge_id"] == e for r in records) for e in EDGES}
    assert report["lines_per_edge"] == {**want, "(no edge)": 2} and report["lines"] == len(lines)
    assert features.main(["--date", DATE, "--data-dir", str(data)]) == 0
    feat = read_json(Layout(data).report(DATE, "features"))
    assert feat["accepted"] == 40 and feat["quarantined_by_reason"] == {"bad_json": 1, "missing_field": 1}
