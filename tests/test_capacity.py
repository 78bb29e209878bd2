"""The capacity model's arithmetic (tools/capacity.py) on made-up inputs, and the page
docs/capacity.md against the model."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_capacity():
    """tools/capacity.py by path (tools/ is not a package, and putting it on sys.path would let
    its script names shadow other modules for the whole test session)."""
    spec = importlib.util.spec_from_file_location("tools_capacity", ROOT / "tools" / "capacity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


capacity = _load_capacity()
Targets, doc_block, doc_inputs = capacity.Targets, capacity.doc_block, capacity.doc_inputs
load_inputs, model, render = capacity.load_inputs, capacity.model, capacity.render

# Round numbers, in the shape load_inputs returns.
INPUTS = {
    "engine": {
        "master": "local[2]", "cores": 2, "window_days": 3, "reference_seconds": 10.0,
        "runs": [
            {"events": 4_000_000, "events_per_day": 1_000_000, "users": 200_000, "titles": 1000,
             "features_seconds": 100.0, "predict_seconds": 100.0, "total_seconds": 200.0},
            {"events": 8_000_000, "events_per_day": 2_000_000, "users": 400_000, "titles": 1000,
             "features_seconds": 150.0, "predict_seconds": 120.0, "total_seconds": 270.0},
        ],
    },
    "delivery": {"cpus": 2, "decisions_per_second": 2000.0, "p99_ms": 5.0, "redis_us_per_decision": 50.0,
                 "warm_keys_per_second": 200_000.0, "warm_keys": 2_000_000},
    "redis": {
        "version": "6.2.14", "allocator": "libc", "zset_max_small": 128, "hash_max_small": 512,
        "top_k": 10, "viewers": 1_000_000, "id_space": 10_000_000, "bytes_per_viewer": 300.0,
        "reference_bytes_per_key": 100.0, "titles": 1000, "edges": 2,
        "prior_bytes_per_entry": 100.0, "prior_entries": 1000.0,
        "trans_bytes_per_entry": 200.0, "trans_entries": 1000.0, "meta_bytes": 100.0,
        "cache": [{"entries": 50.0, "bytes_per_entry": 30.0, "encoding": "ziplist"},
                  {"entries": 2000.0, "bytes_per_entry": 100.0, "encoding": "skiplist"}],
        "sizes": [{"entries": 50.0, "bytes_per_entry": 15.0, "encoding": "ziplist"},
                  {"entries": 2000.0, "bytes_per_entry": 80.0, "encoding": "hashtable"}],
        "edge_beyond_memory_usage_bytes": 0.0, "bytes_per_edge_measured": 301_000.0,
        "mean_bytes_per_cached_title": 2e9, "cache_gb": 90.0, "catalog_bytes_per_title": 80.0,
        "empty_bytes": 1_000_000, "edge_warm_seconds_per_edge": 1.0, "edge_followers_seconds_per_edge": 0.5,
        "edge_server_us_per_edge": 10_000, "viewer_keys_per_second": 100_000.0, "loadavg": 1.0,
    },
}
SMALL = Targets(users=1_000_000, titles=1000, edges=10, events_per_day=1e8, cache_gb=100.0, top_k=10, window_days=3)


def value(figures: dict, name: str) -> float:
    return figures[name]["value"]


def test_doubling_events_doubles_the_variable_spark_cost_only():
    one = model(INPUTS, SMALL)
    two = model(INPUTS, dataclasses.replace(SMALL, events_per_day=2 * SMALL.events_per_day))
    for name in ("spark_features_core_hours", "spark_predict_core_hours_by_events"):
        assert value(two, name) == pytest.approx(2 * value(one, name))
    # the per-viewer estimate and the fixed part do not move with events
    by_viewers = "spark_predict_core_hours_by_viewers"
    assert value(two, by_viewers) == pytest.approx(value(one, by_viewers))
    assert value(two, "spark_fixed_wall_seconds") == value(one, "spark_fixed_wall_seconds")


def test_spark_figures_by_hand():
    f = model(INPUTS, SMALL)
    # features: 100 s at 1 M/day, 150 s at 2 M/day -> 50 us a day-event on 2 cores, intercept 50 s
    assert value(f, "spark_features_core_hours") == pytest.approx(2 * 50e-6 * 1e8 / 3600)
    # predict: 20 s per million events -> 20 us; per viewer: 20 s per 200,000 -> 100 us
    assert value(f, "spark_predict_core_hours_by_events") == pytest.approx(2 * 20e-6 * 1e8 / 3600)
    assert value(f, "spark_predict_core_hours_by_viewers") == pytest.approx(2 * 100e-6 * 1e6 / 3600)
    assert value(f, "spark_fixed_wall_seconds") == pytest.approx(50 + 80)
    # a 7-day window against the runs' 3 days scales the features job only
    f7 = model(INPUTS, dataclasses.replace(SMALL, window_days=7))
    assert value(f7, "spark_features_core_hours") == pytest.approx(value(f, "spark_features_core_hours") * 7 / 3)
    assert value(f7, "spark_predict_core_hours_by_events") == value(f, "spark_predict_core_hours_by_events")


def test_the_fit_uses_the_largest_runs():
    inputs = copy.deepcopy(INPUTS)
    inputs["engine"]["runs"].insert(0, {"events": 400_000, "events_per_day": 100_000, "users": 20_000,
                                        "titles": 1000, "features_seconds": 90.0, "predict_seconds": 99.0,
                                        "total_seconds": 189.0})
    assert value(model(inputs, SMALL), "spark_features_core_hours") == value(model(INPUTS, SMALL),
                                                                               "spark_features_core_hours")
    assert value(model(inputs, dataclasses.replace(SMALL, fit_points=3)), "spark_features_core_hours") != \
        value(model(INPUTS, SMALL), "spark_features_core_hours")


def test_memory_totals_are_per_edge_times_edges_plus_viewers_times_per_viewer():
    f = model(INPUTS, SMALL)
    per_edge, per_viewer = value(f, "redis_bytes_per_edge_state"), value(f, "redis_bytes_per_viewer")
    shared = SMALL.titles * 80.0 + 1_000_000
    assert value(f, "redis_bytes_total") == pytest.approx(per_edge * SMALL.edges + per_viewer * SMALL.users + shared)
    # 100 GB / 2 GB = 50 cached titles, small encodings; 1000 titles in prior and trans; meta
    assert per_edge == pytest.approx(1000 * 100 + 1000 * 200 + 50 * (30 + 15) + 100)
    assert value(f, "redis_bytes_per_edge_with_viewers") == pytest.approx(per_edge + 100_000 * 300)


def test_a_large_cache_takes_the_large_encodings():
    f = model(INPUTS, dataclasses.replace(SMALL, cache_gb=6000.0))  # 3000 titles: skiplist and hashtable
    assert value(f, "edge_cache_bytes") == pytest.approx(3000 * (100 + 80))
    f = model(INPUTS, dataclasses.replace(SMALL, cache_gb=400.0))  # 200 titles: skiplist, still a small hash
    assert value(f, "edge_cache_bytes") == pytest.approx(200 * (100 + 15))


def test_delivery_nodes_and_redis_primaries():
    f = model(INPUTS, dataclasses.replace(SMALL, peak_rps=12_000.0, utilisation=0.5, node_cores=8))
    assert value(f, "decisions_per_second_per_core") == 1000.0
    assert value(f, "delivery_cores") == 24 and value(f, "delivery_nodes") == 3
    assert value(f, "redis_cores_for_decisions") == pytest.approx(0.6)
    assert value(f, "redis_primaries_for_decisions") == 2
    default_peak = model(INPUTS, SMALL)
    assert value(default_peak, "peak_requests_per_second") == pytest.approx(3 * 1e8 / 86400)


def test_warm_time():
    f = model(INPUTS, dataclasses.replace(SMALL, warm_writers=4))
    assert value(f, "warm_viewer_seconds_total") == pytest.approx(2 * 1e6 / 200_000)
    assert value(f, "warm_seconds_per_edge") == pytest.approx(2 * 1e5 / 200_000 + 1.0)
    assert value(f, "warm_seconds_one_writer") == pytest.approx(10 + 10 * 1.0)
    assert value(f, "warm_seconds_parallel") == pytest.approx(20 / 4)


def test_another_redis_build_is_set_beside_the_figures_not_used():
    other = {"version": "7.0.15", "allocator": "jemalloc-5.3.0", "bytes_per_viewer": 330.0,
             "bytes_per_edge_measured": 301_000.0, "titles": 1000}
    inputs = dict(INPUTS, redis_other_build=other)
    assert model(inputs, SMALL) == model(INPUTS, SMALL)
    page = render(inputs, SMALL, model(inputs, SMALL))
    assert "Redis 7.0.15 (jemalloc-5.3.0" in page and "1.10 and 1.00 times" in page


def test_a_top_k_the_memory_run_did_not_measure_is_refused():
    with pytest.raises(ValueError, match="--top-k 20"):
        model(INPUTS, dataclasses.replace(SMALL, top_k=20))


def test_the_page_quotes_the_model():
    """docs/capacity.md's figures are what tools/capacity.py computes from the inputs the page
    keeps (refresh with ``python tools/capacity.py --write-doc``)."""
    text = (ROOT / "docs" / "capacity.md").read_text()
    targets, inputs = doc_inputs(text)
    assert targets == Targets(), "the page is written for the default targets"
    assert doc_block(text) == render(inputs, targets, model(inputs, targets))
    figures = model(inputs, targets)
    for name in ("spark_core_hours_low", "spark_core_hours_high", "redis_bytes_total", "delivery_nodes"):
        assert capacity._num(value(figures, name), figures[name]["unit"]) in doc_block(text)


def test_power_exponent_and_fit():
    assert capacity.power_exponent([1.0, 10.0], [2.0, 20.0]) == pytest.approx(1.0)
    a, b = capacity.linear_fit([1.0, 2.0, 3.0], [3.0, 5.0, 7.0])
    assert (a, b) == (pytest.approx(1.0), pytest.approx(2.0))
    assert math.isclose(capacity.power_exponent([1.0, 100.0], [1.0, 10.0]), 0.5)
