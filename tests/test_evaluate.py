"""Evaluation: hand-made days with exact hit counts, the outputs, and the job end to end."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from edgecache.evaluation.report import (
    CSV_HEADER,
    Catalog,
    Requests,
    capacities,
    content_numbers,
    edge_rankings,
    edge_traces,
    evaluate,
    hit_ratio_vs,
    next_episodes,
    popularity_predictions,
    to_markdown,
    user_metrics,
    write_outputs,
)
from edgecache.evaluation import evaluate as job
from edgecache.pipeline import features, predict
from edgecache.simulate import generate_logs as generate
from edgecache.simulate import next_day_logs
from edgecache.settings import Settings
from edgecache.layout import Layout, read_json
from edgecache.evaluation.policies import POLICIES

DATE, NEXT = "2025-04-12", "2025-04-13"
T0 = 1744502400  # 2025-04-13 00:00:00 UTC


def catalog_frame(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"content_id": [f"C{i:05d}" for i in range(1, n + 1)],
                         "size_bytes": [i * 100 for i in range(1, n + 1)]})


def events_frame(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["edge_id", "user_id", "content_id", "ts"])


def demand_frame(rankings: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(e, c, float(len(r) - i), i + 1) for e, r in rankings.items() for i, c in enumerate(r)]
    return pd.DataFrame(rows, columns=["edge_id", "content_id", "score", "rank"])


# One small day: edge-01 asks for C1 three times, C2 twice, C3 once; edge-02 for C5 twice
# and once for a title outside the catalog.
DAY = events_frame([
    ("edge-01", "U1", "C00001", T0 + 10), ("edge-01", "U2", "C00002", T0 + 20),
    ("edge-01", "U1", "C00001", T0 + 30), ("edge-01", "U3", "C00003", T0 + 40),
    ("edge-01", "U2", "C00002", T0 + 50), ("edge-01", "U1", "C00001", T0 + 60),
    ("edge-02", "U4", "C00005", T0 + 15), ("edge-02", "U5", "C00099", T0 + 25),
    ("edge-02", "U4", "C00005", T0 + 35),
])
PREDICTED = demand_frame({"edge-01": ["C00002", "C00001", "C00004"], "edge-02": ["C00005"]})
USERS = pd.DataFrame({"user_id": ["U1", "U2", "U3"],
                      "ranked": [["C00001", "C00002"], ["C00009", "C00002"], ["C00007"]]})


@pytest.fixture(scope="module")
def small_report():
    report, traces = evaluate(DAY, catalog_frame(), PREDICTED, USERS, sizes_pct=(10, 20, 50))
    return {**report, "date": DATE, "replayed_date": NEXT}, traces


# --- pure pieces ------------------------------------------------------------------------


def test_content_numbers():
    assert content_numbers(["C00042", "C1", "title_7"]).tolist() == [42, 1, 7]
    for bad in ("C", "C0", "7x"):
        with pytest.raises(ValueError):
            content_numbers([bad])


def test_catalog_sizes_fall_back_to_kibibytes_past_uint32():
    c = Catalog.from_frame(pd.DataFrame({"content_id": ["C2", "C1"], "size_bytes": [5 * 2**30, 1025]}))
    assert c.unit == 1024
    assert c.obj_id.tolist() == [1, 2] and c.size.tolist() == [2, 5 * 2**20]
    assert Catalog.from_frame(catalog_frame()).unit == 1


def test_capacities_are_shares_of_titles_and_bytes():
    caps = capacities(Catalog.from_frame(catalog_frame()), (10, 20, 50))
    assert caps == {"titles": {10: 1, 20: 2, 50: 5}, "bytes": {10: 550, 20: 1100, 50: 2750}}
    assert capacities(Catalog.from_frame(catalog_frame(400)), (1, 2, 5, 10, 20))["titles"] == {
        1: 4, 2: 8, 5: 20, 10: 40, 20: 80}


def test_edge_traces_are_in_time_order_without_unknown_titles():
    shuffled = DAY.sample(frac=1.0, random_state=3)
    traces, unknown = edge_traces(Requests.from_frame(shuffled), Catalog.from_frame(catalog_frame()))
    assert unknown == 1
    assert sorted(traces) == ["edge-01", "edge-02"]
    assert traces["edge-01"].obj_id.tolist() == [1, 2, 1, 3, 2, 1]
    assert traces["edge-01"].size.tolist() == [100, 200, 100, 300, 200, 100]
    assert traces["edge-02"].timestamp.tolist() == [T0 + 15, T0 + 35]
    # same second: viewer, then title decide, so every run replays the same order
    tie = events_frame([("e", "U2", "C00001", 5), ("e", "U1", "C00003", 5), ("e", "U1", "C00002", 5)])
    traces, _ = edge_traces(Requests.from_frame(tie), Catalog.from_frame(catalog_frame()))
    assert traces["e"].obj_id.tolist() == [2, 3, 1]


def test_edge_rankings_follow_rank_and_drop_unknown_titles():
    demand = demand_frame({"e": ["C00003", "C00077", "C00001"]}).sample(frac=1.0, random_state=1)
    r = edge_rankings(demand, Catalog.from_frame(catalog_frame()))["e"]
    assert r.obj_id.tolist() == [3, 1] and r.size.tolist() == [300, 100]
    assert r.score.tolist() == [3.0, 1.0]  # the unknown C77 (score 2) is dropped with its score


def series_catalog() -> pd.DataFrame:
    """C1-C3: one series (episodes 1-3), C4: a movie, C5-C6: another series, rows shuffled."""
    return pd.DataFrame({
        "content_id": ["C00006", "C00002", "C00004", "C00001", "C00005", "C00003"],
        "size_bytes": [600, 200, 400, 100, 500, 300],
        "kind": ["episode", "episode", "movie", "episode", "episode", "episode"],
        "series_id": ["S2", "S1", None, "S1", "S2", "S1"],
        "episode": pd.array([2, 2, None, 1, 1, 3], dtype="Int64"),
    })


def test_next_episodes_link_each_episode_to_the_next_of_its_series():
    frame = series_catalog()
    assert next_episodes(frame, content_numbers(frame["content_id"])).tolist() == [0, 3, 0, 2, 6, 0]
    c = Catalog.from_frame(frame)
    assert c.next_id.tolist() == [2, 3, 0, 0, 6, 0]  # by object id 1..6
    assert c.sequels.size.tolist() == [100, 200, 300, 400, 500, 600]
    assert Catalog.from_frame(catalog_frame(3)).sequels.next_id.tolist() == [0, 0, 0]  # no series columns
    r = edge_rankings(demand_frame({"e": ["C00004"]}), c)["e"]
    assert r.sequels.next_id.tolist() == [2, 3, 0, 0, 6, 0]


# Day D's feature window: edge e1 saw C1 10 times, C2 and C3 5 times each (rank breaks the
# tie); e2 saw C3 7 times.
POPULARITY = pd.DataFrame({"edge_id": ["e1", "e1", "e1", "e2"], "content_id": ["C00003", "C00001", "C00002", "C00003"],
                           "requests": [5, 10, 5, 7], "rank": [3, 1, 2, 1]})
VIEWERS = pd.DataFrame({"user_id": ["U1", "U2", "U3", "U4"], "edge_id": ["e1", "e1", "e1", "e2"],
                        "ranked": [["C00002"], ["C00009", "C00005"], ["C00007"], []]})
FIRSTS = events_frame([("e1", "U1", "C00002", 1), ("e1", "U2", "C00005", 1), ("e1", "U3", "C00001", 1),
                       ("e2", "U4", "C00009", 2), ("e2", "U4", "C00003", 1), ("e2", "U9", "C00003", 1)])


def test_popularity_baseline_gives_each_viewer_their_edges_top_titles():
    base = popularity_predictions(POPULARITY, VIEWERS)
    assert base["user_id"].tolist() == ["U1", "U2", "U3", "U4"]
    assert base["ranked"].tolist() == [["C00001", "C00002", "C00003"]] * 3 + [["C00003"]]
    assert popularity_predictions(POPULARITY, VIEWERS, k=2)["ranked"].tolist()[0] == ["C00001", "C00002"]
    unknown = popularity_predictions(POPULARITY, pd.DataFrame({"user_id": ["U7"], "edge_id": ["e9"]}))
    assert unknown["ranked"].tolist() == [[]]


def test_popularity_baseline_scores_and_ratio_exact():
    requests = Requests.from_frame(FIRSTS)
    # first requests: U1 C2, U2 C5, U3 C1, U4 C3 (before C9), U9 C3 (no list: a miss)
    model = user_metrics(requests, VIEWERS)  # U1 1st, U2 2nd
    assert model == {"evaluated": 5, "with_prediction": 4, "hit@1": 0.2, "hit@10": 0.4, "mrr": pytest.approx(0.3)}
    base = user_metrics(requests, popularity_predictions(POPULARITY, VIEWERS))
    # baseline: U1's C2 2nd, U3's C1 and U4's C3 1st; U2's C5 is not in e1's top
    assert base == {"evaluated": 5, "with_prediction": 4, "hit@1": 0.4, "hit@10": 0.6, "mrr": pytest.approx(0.5)}
    assert hit_ratio_vs(model, base) == pytest.approx(2 / 3)
    assert hit_ratio_vs(model, {"hit@10": 0.0}) is None


def test_report_has_the_baseline_beside_the_model():
    report, _ = evaluate(FIRSTS, catalog_frame(), demand_frame({"e1": ["C00001"]}), VIEWERS, sizes_pct=(10,),
                         popularity=POPULARITY)
    assert report["users"]["hit@10"] == 0.4 and report["users_baseline"]["hit@10"] == 0.6
    assert report["users_hit@10_vs_baseline"] == pytest.approx(2 / 3)
    md = to_markdown(report)
    assert "| model | 5 | 4 | 0.200 | 0.400 | 0.300 |" in md
    assert "| edge popularity | 5 | 4 | 0.400 | 0.600 | 0.500 |" in md
    assert "over the edge-popularity baseline's" in md and ": 0.667." in md
    # per edge: e1 2 of 3 both ways; on e2 the model lists nothing that U4 asks for, the
    # baseline has C3 (U9 has no list from either)
    assert report["users_baseline"]["per_edge"]["e1"]["hit@10"] == report["users"]["per_edge"]["e1"]["hit@10"]
    assert report["users_baseline"]["per_edge"]["e2"]["hit@10"] == 0.5
    assert "Edges where the model's hit@10 is below the baseline's: e2 (0.000 against 0.500)." in md
    # without the window's popularity the report has the model only
    plain, _ = evaluate(FIRSTS, catalog_frame(), demand_frame({"e1": ["C00001"]}), VIEWERS, sizes_pct=(10,))
    assert "users_baseline" not in plain and "edge popularity" not in to_markdown(plain)


def test_user_metrics_on_first_request():
    events = events_frame([
        ("e", "U1", "C00002", 9), ("e", "U1", "C00001", 5),  # first: C1, ranked 1st
        ("e", "U2", "C00002", 1),  # ranked 2nd
        ("e", "U3", "C00008", 1),  # not in the list
        ("e", "U9", "C00001", 1),  # no prediction: a miss
    ])
    m = user_metrics(Requests.from_frame(events), USERS)
    assert m == {"evaluated": 4, "with_prediction": 3, "hit@1": 0.25, "hit@10": 0.5, "mrr": pytest.approx(1.5 / 4)}
    # hit@10 looks at the first ten titles, MRR at the whole list (U1's first title is 12th)
    long = pd.DataFrame({"user_id": ["U1", "U2"], "ranked": [[f"C{i:05d}" for i in range(3, 14)] + ["C00001"], []]})
    m = user_metrics(Requests.from_frame(events[events.user_id.isin(["U1", "U2"])]), long, ks=(1, 10))
    assert m == {"evaluated": 2, "with_prediction": 2, "hit@1": 0.0, "hit@10": 0.0, "mrr": pytest.approx(1 / 12 / 2)}



def test_each_edges_viewers_are_scored_with_their_lists_wherever_they_were_made():
    from edgecache.evaluation.report import user_metrics_by_edge

    events = events_frame([("edge-01", "U1", "C00001", 1), ("edge-09", "U2", "C00002", 1),
                           ("edge-09", "U3", "C00005", 1)])
    # U2 moved to edge-09, which opened today: their list was made at edge-01
    lists = USERS.assign(edge_id=["edge-01", "edge-01", "edge-01"])
    got = user_metrics_by_edge(events, lists)
    assert got["edge-01"]["evaluated"] == 1 and got["edge-01"]["hit@1"] == 1.0
    assert got["edge-09"]["evaluated"] == 2 and got["edge-09"]["with_prediction"] == 2
    assert got["edge-09"]["hit@10"] == 0.5  # U2's C2 is second on their list; U3's C5 is not on theirs


# --- a whole small day --------------------------------------------------------------------


def test_static_policies_exact(small_report):
    report, _ = small_report
    titles, bytes_ = report["results"]["titles"], report["results"]["bytes"]
    # 1 title: predictive holds C2 at edge-01 (2 hits) and C5 at edge-02 (2); the oracle C1 and C5.
    assert titles["predictive"]["10"]["hits"] == 4 and titles["predictive"]["10"]["requests"] == 8
    assert titles["predictive"]["10"]["per_edge"]["edge-01"]["hits"] == 2
    assert titles["oracle"]["10"]["hits"] == 5
    assert titles["predictive"]["10"]["share_of_oracle"] == pytest.approx(0.8)
    assert titles["oracle"]["10"]["share_of_oracle"] == 1.0
    # 550 bytes: C2 (200) and C1 (100) fit at edge-01, C4 (400) does not; C5 (500) at edge-02.
    p = bytes_["predictive"]["10"]
    assert (p["hits"], p["bytes_hit"], p["bytes"]) == (7, 1700, 2000)
    assert p["byte_hit_ratio"] == pytest.approx(0.85)
    assert "byte_hit_ratio" not in titles["LRU"]["10"]


def test_overall_adds_up_the_edges(small_report):
    report, _ = small_report
    for mode, by_policy in report["results"].items():
        for name, by_pct in by_policy.items():
            for pct, e in by_pct.items():
                if e is None:
                    continue
                assert e["hits"] == sum(x["hits"] for x in e["per_edge"].values()), (mode, name, pct)
                assert e["requests"] == 8
                assert e["object_hit_ratio"] == pytest.approx(e["hits"] / 8)


def test_report_facts(small_report):
    report, traces = small_report
    assert report["requests_replayed"] == 8 and report["requests_unknown_title"] == 1
    assert report["edges"]["edge-01"] == {"requests": 6, "titles_requested": 3, "predicted_titles": 3}
    assert report["capacities"]["titles"] == {"10": 1, "20": 2, "50": 5}
    assert report["s3fifo_small_queue"]["titles"] == {"10": None, "20": None, "50": 2}
    assert report["results"]["titles"]["S3-FIFO"]["10"] is None
    assert list(report["results"]["titles"]) == list(POLICIES)
    assert report["users"]["evaluated"] == 5
    assert sorted(traces) == ["edge-01", "edge-02"]


def test_markdown_has_one_row_per_policy_and_a_column_per_size(small_report):
    md = to_markdown(small_report[0])
    assert "| policy | 10 % (1 title) | 20 % (2 titles) | 50 % (5 titles) |" in md
    assert "| predictive | 0.500 |" in md
    assert "| S3-FIFO | n/a | n/a |" in md
    assert "## Byte hit ratio, caches sized in bytes" in md
    assert "| 5 | 3 | 0.200 | 0.400 | 0.300 |" in md  # users: U1 hit@1, U2 hit@10 (rr 1/2)


def test_outputs_are_written_and_replace_an_earlier_run(small_report, tmp_path):
    report, traces = small_report
    out = Layout(tmp_path).evaluation(DATE)
    (out / "traces").mkdir(parents=True)
    (out / "traces" / "edge=gone.csv").write_text("stale\n")
    write_outputs(report, traces, out)
    assert sorted(p.name for p in out.iterdir()) == ["hit_ratio.png", "report.json", "report.md", "traces"]
    assert sorted(p.name for p in (out / "traces").iterdir()) == ["edge=edge-01.csv", "edge=edge-02.csv"]
    assert json.loads((out / "report.json").read_text())["results"] == json.loads(json.dumps(report["results"]))
    assert (out / "report.md").read_text() == to_markdown(report)
    assert (out / "hit_ratio.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "traces" / "edge=edge-01.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER == "timestamp,obj_id,size"
    assert lines[1:] == [f"{T0 + 10 * k},{i},{i * 100}" for k, i in zip(range(1, 7), [1, 2, 1, 3, 2, 1])]


def test_csv_traces_reproduce_the_classic_policies_with_libcachesim_alone(small_report, tmp_path):
    import libcachesim as lcs

    report, traces = small_report
    write_outputs(report, traces, tmp_path / "out")
    for edge in traces:
        for mode in ("titles", "bytes"):
            params = lcs.ReaderInitParam(has_header=True, has_header_set=True, delimiter=",",
                                         ignore_obj_size=mode == "titles")
            params.time_field, params.obj_id_field, params.obj_size_field = 1, 2, 3
            reader = lcs.TraceReader(str(tmp_path / "out" / "traces" / f"edge={edge}.csv"),
                                     lcs.TraceType.CSV_TRACE, params)
            for pct, cap in report["capacities"][mode].items():
                for name, cls in (("LRU", lcs.LRU), ("LFU", lcs.LFU), ("SIEVE", lcs.Sieve)):
                    miss, _ = cls(cap, hashpower=8).process_trace(reader)
                    want = report["results"][mode][name][pct]["per_edge"][edge]
                    assert round((1 - miss) * want["requests"]) == want["hits"], (edge, mode, pct, name)


# --- the job ------------------------------------------------------------------------------


def test_size_list_and_next_day():
    assert job.size_list("20,1,5,5") == [1, 5, 20]
    for bad in ("", "0", "101", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            job.size_list(bad)
    assert job.next_day("2025-12-31") == "2026-01-01"


def test_workload_argv_passes_every_knob_the_generator_knows():
    parser = generate.build_parser()
    argv, unknown = next_day_logs.workload_argv(parser, {"users": 50, "alpha": 0.7, "bad_rate": 0.0, "retired_knob": 3})
    assert argv == ["--alpha", "0.7", "--bad-rate", "0.0", "--users", "50"]
    assert unknown == ["retired_knob"]
    args = parser.parse_args(["--date", NEXT, *argv])
    assert (args.users, args.alpha, args.bad_rate) == (50, 0.7, 0.0)
    switch = argparse.ArgumentParser()
    switch.add_argument("--fast", action="store_true")
    assert next_day_logs.workload_argv(switch, {"fast": True})[0] == ["--fast"]
    assert next_day_logs.workload_argv(switch, {"fast": False})[0] == []


SMALL = ["--users", "150", "--edges", "3", "--titles", "80", "--events", "2500", "--seed", "5",
         "--bad-rate", "0.02", "--peak-hour", "20"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("evaluate")
    common = ["--date", DATE, "--data-dir", str(root), "--master", "local[2]"]
    assert generate.main(common + SMALL) == 0
    assert features.main(common + ["--window-days", "2"]) == 0
    assert predict.main(common + ["--top-k", "5"]) == 0
    layout = Layout(root)
    assert next_day_logs.main(common) == 0
    assert read_json(layout.report(DATE, "next_day_logs"))["logs_generated"] is True
    assert next_day_logs.main(common) == 0  # D+1's logs are there now
    assert job.main(common + ["--workers", "2"]) == 0
    first = read_json(layout.evaluation(DATE) / "report.json")
    assert job.main(common + ["--workers", "1"]) == 0
    return layout, first, read_json(layout.evaluation(DATE) / "report.json")


def test_the_next_day_is_generated_once_with_the_same_workload(evaluated):
    layout, first, second = evaluated
    assert read_json(layout.report(DATE, "next_day_logs"))["logs_generated"] is False  # the second run's
    gen_d, gen_next = read_json(layout.report(DATE, "generate")), read_json(layout.report(NEXT, "generate"))
    assert gen_next["workload"] == gen_d["workload"] and gen_next["workload"]["peak_hour"] == 20
    assert gen_next["date"] == NEXT and gen_next["generated_by"] == "next_day_logs"
    assert sorted(p.name for p in layout.logs(NEXT).glob("edge=*")) == ["edge=edge-01", "edge=edge-02", "edge=edge-03"]


def test_each_edge_has_its_age_in_days(evaluated, tmp_path):
    _, report, _ = evaluated
    history = Settings.from_env().window_days + 1  # the days generate writes up to D
    assert {e: f["age_days"] for e, f in report["edges"].items()} == {f"edge-0{i}": history for i in (1, 2, 3)}
    layout = Layout(tmp_path)
    for day, edges in {"2025-04-01": ["a"], "2025-04-03": ["a", "b"], "2025-04-04": ["a", "b", "c"],
                       "2025-04-05": ["a", "d"]}.items():
        for e in edges:
            (layout.logs(day) / f"edge={e}").mkdir(parents=True)
        if day != "2025-04-04":  # a day that never finished does not count
            (layout.logs(day) / "_COMMITTED").touch()
    assert job.edge_ages(layout, "2025-04-04") == {"a": 4, "b": 2}
    assert job.edge_ages(layout, "2025-04-05") == {"a": 5, "b": 3, "d": 1}


def test_job_counts_every_line_and_replays_every_accepted_request(evaluated):
    layout, report, _ = evaluated
    v = report["validation"]
    lines = sum(len(p.read_text().splitlines()) for p in layout.logs(NEXT).rglob("*.jsonl"))
    assert v["lines_in"] == lines == v["accepted"] + v["duplicates"] + v["quarantined"]
    assert v["quarantined"] == sum(v["quarantined_by_reason"].values()) > 0
    assert report["requests_replayed"] + report["requests_unknown_title"] == v["accepted"]
    assert report["requests_replayed"] == sum(e["requests"] for e in report["edges"].values())
    csv_rows = sum(len(p.read_text().splitlines()) - 1 for p in (layout.evaluation(DATE) / "traces").glob("*.csv"))
    assert csv_rows == report["requests_replayed"]
    users = pq.read_table(layout.predictions(DATE, "users")).num_rows
    assert 0 < report["users"]["with_prediction"] <= min(users, report["users"]["evaluated"])


def test_job_results_hold_the_orderings_and_do_not_depend_on_workers(evaluated):
    _, first, second = evaluated
    assert first["results"] == second["results"]
    titles = first["results"]["titles"]
    for pct in map(str, first["sizes_pct"]):
        belady = titles["Belady"][pct]["hits"]
        for name in ("LRU", "LFU", "S3-FIFO", "SIEVE"):
            assert titles[name][pct] is None or titles[name][pct]["hits"] <= belady
        assert titles["oracle"][pct]["hits"] >= titles["predictive"][pct]["hits"]
    hr = [titles["LRU"][str(p)]["object_hit_ratio"] for p in first["sizes_pct"]]
    assert hr == sorted(hr) and hr[-1] > 0


def test_job_writes_the_report_files_and_its_stage_report(evaluated, capsys):
    layout, first, _ = evaluated
    out = layout.evaluation(DATE)
    assert sorted(p.name for p in out.iterdir()) == ["hit_ratio.png", "report.json", "report.md", "traces"]
    stage = read_json(layout.report(DATE, "evaluate"))
    assert stage["stage"] == "evaluate" and stage["replayed_date"] == NEXT
    assert stage["requests_replayed"] == first["requests_replayed"]
    assert set(stage["object_hit_ratio_at_5pct"]) == set(POLICIES) | {"popularity"}  # the static baseline


def test_cli_prints_the_markdown_table(evaluated, capsys):
    from edgecache.cli import main

    layout, _, _ = evaluated
    assert main(["evaluate", "--date", DATE, "--data-dir", str(layout.root), "--workers", "1",
                 "--sizes", "5,10"]) == 0
    text = capsys.readouterr().out
    assert "## Object hit ratio, caches sized in titles" in text
    assert "| policy | 5 % (4 titles) | 10 % (8 titles) |" in text
    for name in POLICIES:
        assert f"| {name} |" in text


def test_job_fails_loudly_without_predictions(tmp_path, capsys):
    assert job.main(["--date", DATE, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "edge_demand is missing" in err and "\n" not in err


def test_the_recency_popularity_prefetch_is_a_static_set_of_the_most_recent_requests():
    """Two edges, titles of one size: at a cache of one title the set is each edge's title
    with the most decayed requests (not the most requests), held all day."""
    catalog = pd.DataFrame({"content_id": ["C1", "C2", "C3"], "kind": ["movie"] * 3, "series_id": [None] * 3,
                            "episode": [None] * 3, "size_bytes": [100, 100, 100]})
    events = pd.DataFrame({
        "user_id": ["u1", "u2", "u3", "u4", "u5", "u6"], "edge_id": ["e1", "e1", "e1", "e2", "e2", "e2"],
        "content_id": ["C1", "C2", "C2", "C3", "C3", "C1"],
        "ts": [1744502400 + 3600 * i for i in range(6)]})
    popularity = pd.DataFrame({"edge_id": ["e1", "e1", "e2", "e2"], "content_id": ["C1", "C2", "C1", "C3"],
                               "requests": [9, 2, 5, 1], "rank": [1, 2, 1, 2],
                               "requests_decayed": [0.5, 1.9, 3.0, 0.9]})
    demand = pd.DataFrame({"edge_id": ["e1"], "content_id": ["C1"], "score": [1.0], "rank": [1], "size_bytes": [100]})
    users = pd.DataFrame({"user_id": ["u1"], "edge_id": ["e1"], "ranked": [["C1"]]})
    report, _ = evaluate(events, catalog, demand, users, sizes_pct=(34,), popularity=popularity)
    got = report["results"]["titles"]["popularity"]["34"]
    # one title per edge: e1 holds C2 (2 of its 3 requests), e2 holds C1 (1 of 3)
    assert report["capacities"]["titles"]["34"] == 1
    assert (got["hits"], got["requests"]) == (3, 6)
    assert got["per_edge"]["e1"]["hits"] == 2 and got["per_edge"]["e2"]["hits"] == 1
    assert "popularity" in report["policies"] and "| popularity |" in to_markdown(report)
