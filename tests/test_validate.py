"""Every malformed line is quarantined with its reason and counted; good lines still flow."""

from __future__ import annotations

import json

import pytest

from edgecache.schema import REASONS
from edgecache.validate import accepted, classify, quarantined

GOOD = {"user_id": "U001", "device": "TV", "content_id": "C456", "duration": 42,
        "timestamp": "2025-04-12 22:30:00", "edge_id": "edge-01"}


def line(**changes) -> str:
    return json.dumps({**GOOD, **changes})


BAD = {
    "bad_json": ['{"user_id": "U001", "device": "TV"', "not json at all", "", "[1, 2]", "null"],
    "missing_field": [json.dumps({k: v for k, v in GOOD.items() if k != "content_id"}), line(edge_id=None)],
    "bad_id": [line(user_id="U1:*"), line(content_id="C 456"), line(edge_id="x" * 65),
               line(user_id={"nested": 1}), line(content_id=""), line(user_id="U1\n")],
    "unknown_device": [line(device="Toaster"), line(device="tv")],
    "bad_duration": [line(duration="forty"), line(duration="NaN")],
    "negative_duration": [line(duration=-1), line(duration=-0.5)],
    "bad_timestamp": [line(timestamp="12/04/2025 25:61"), line(timestamp="2025-13-45 10:00:00"),
                      line(timestamp="2025-04-12")],
}


@pytest.fixture(scope="module")
def classified(spark):
    rows = [(line(), "good.json"), (line(user_id="U002", duration=12.7, extra="kept"), "good.json")]
    rows += [(value, f"{reason}.json") for reason, values in BAD.items() for value in values]
    return classify(spark.createDataFrame(rows, "value string, source string")).cache()


def test_every_reason_is_exercised():
    assert set(BAD) == set(REASONS)


def test_each_malformed_line_gets_its_reason(classified):
    got = {(r["line"], r["reason"]) for r in quarantined(classified).collect()}
    want = {(value, reason) for reason, values in BAD.items() for value in values}
    assert got == want


def test_quarantine_keeps_the_source_file(classified):
    for r in quarantined(classified).collect():
        assert r["source"] == f"{r['reason']}.json"


def test_counts_add_up(classified):
    n_bad = sum(len(v) for v in BAD.values())
    assert classified.count() == accepted(classified).count() + quarantined(classified).count()
    assert quarantined(classified).count() == n_bad
    by_reason = {r["reason"]: r["count"] for r in quarantined(classified).groupBy("reason").count().collect()}
    assert by_reason == {reason: len(values) for reason, values in BAD.items()}


def test_good_lines_are_typed_events(classified):
    rows = sorted(accepted(classified).collect(), key=lambda r: r["user_id"])
    assert [(r["user_id"], r["device"], r["content_id"], r["duration"], str(r["timestamp"]), r["edge_id"])
            for r in rows] == [
        ("U001", "TV", "C456", 42, "2025-04-12 22:30:00", "edge-01"),
        ("U002", "TV", "C456", 12, "2025-04-12 22:30:00", "edge-01"),
    ]
