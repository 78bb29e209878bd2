"""Batch metrics: the registry, the text file and its exporter, and a real Pushgateway."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgecache.layout import Layout, write_json_atomic
from edgecache.ops.push_metrics import (
    batch_registry,
    connection_url,
    push_metrics,
    pushgateway_conn_json,
    pushgateway_target,
    read_reports,
)
from edgecache.ops.redis_server import free_port
from tests.conftest import ROOT
from tests.services import http_get, process, require_binary

DATE = "2025-04-12"
REPORTS = {
    "generate": {"lines": 123, "wall_seconds": 4.5},
    "features": {"accepted": 120, "quarantined_by_reason": {"bad_json": 2, "bad_id": 1}, "wall_seconds": 3.0},
    "predict": {"predictions": 40, "wall_seconds": 2.0},
    "warm": {"keys_written": 81, "wall_seconds": 0.5},
}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "instance")))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def write_reports(root) -> None:
    for stage, rep in REPORTS.items():
        write_json_atomic(Layout(root).report(DATE, stage), rep)


def test_registry_holds_the_run_figures():
    got = samples(generate_latest(batch_registry(REPORTS, DATE)).decode())
    assert got[("edgecache_batch_events_generated", ())] == 123
    assert got[("edgecache_batch_records_accepted", ())] == 120
    assert got[("edgecache_batch_records_quarantined", (("reason", "bad_json"),))] == 2
    assert got[("edgecache_batch_records_quarantined", (("reason", "bad_id"),))] == 1
    assert got[("edgecache_batch_predictions", ())] == 40
    assert got[("edgecache_batch_redis_keys_warmed", ())] == 81
    assert got[("edgecache_batch_stage_duration_seconds", (("stage", "generate"),))] == 4.5
    assert got[("edgecache_batch_logical_date_seconds", ())] == 1744416000  # 2025-04-12T00:00Z


def test_federated_rounds_become_labelled_gauges():
    fed = {"epsilon_spent": 3.9, "rounds": [
        {"round": 1, "seconds": 2.5, "update_bytes": 1216, "change": 2.7,
         "validation": {"edge-01": {"rows": 10, "logloss": 0.69, "auc": 0.5},
                        "edge-02": {"rows": 0, "logloss": None, "auc": None}}},
        {"round": 2, "seconds": 1.5, "update_bytes": 1216, "change": 0.4,
         "validation": {"edge-01": {"rows": 10, "logloss": 0.2, "auc": 0.8}}}]}
    reports = {**REPORTS, "predict": {**REPORTS["predict"], "training": {"federated": fed}}}
    got = samples(generate_latest(batch_registry(reports, DATE)).decode())
    assert got[("edgecache_federated_round_duration_seconds", (("round", "2"),))] == 1.5
    assert got[("edgecache_federated_round_update_bytes", (("round", "1"),))] == 1216
    assert got[("edgecache_federated_round_model_change", (("round", "1"),))] == 2.7
    assert got[("edgecache_federated_validation_logloss", (("edge", "edge-01"), ("round", "2")))] == 0.2
    assert got[("edgecache_federated_validation_auc", (("edge", "edge-01"), ("round", "1")))] == 0.5
    assert ("edgecache_federated_validation_auc", (("edge", "edge-02"), ("round", "1"))) not in got  # no held-out rows
    assert got[("edgecache_federated_rounds", ())] == 2 and got[("edgecache_federated_epsilon_spent", ())] == 3.9
    # a run trained centrally has no federated figures
    assert not any(k[0].startswith("edgecache_federated") for k in samples(generate_latest(batch_registry(REPORTS, DATE)).decode()))


def test_the_evaluation_of_the_deployed_caches_is_pushed_with_the_run(tmp_path):
    write_reports(tmp_path)
    layout = Layout(tmp_path)
    assert not any(k[0].startswith("edgecache_evaluation") for k in samples(
        generate_latest(batch_registry(read_reports(layout, DATE), DATE)).decode()))
    report = {"requests_replayed": 5000, "deployed": {"policies": {
        "predictive": {"object_hit_ratio": 0.5, "byte_hit_ratio": 0.4},
        "predictive+admission": {"object_hit_ratio": 0.6, "byte_hit_ratio": 0.55}}}}
    write_json_atomic(layout.evaluation(DATE) / "report.json", report)
    got = samples(generate_latest(batch_registry(read_reports(layout, DATE), DATE)).decode())
    assert got[("edgecache_evaluation_hit_ratio", (("kind", "object"), ("policy", "predictive+admission")))] == 0.6
    assert got[("edgecache_evaluation_hit_ratio", (("kind", "byte"), ("policy", "predictive")))] == 0.4
    assert got[("edgecache_evaluation_requests", ())] == 5000
    # the evaluation is not a stage of its own in the durations
    assert ("edgecache_batch_stage_duration_seconds", (("stage", "evaluate"),)) not in got


def test_the_push_goes_to_the_pushgateway_connection_else_the_variable_else_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # no metadata DB needed: connections from the environment
    monkeypatch.delenv("AIRFLOW_CONN_PUSHGATEWAY_DEFAULT", raising=False)
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    assert pushgateway_target() is None
    monkeypatch.setenv("PUSHGATEWAY_URL", "http://127.0.0.1:9999")
    assert pushgateway_target() == "http://127.0.0.1:9999"
    monkeypatch.setenv("AIRFLOW_CONN_PUSHGATEWAY_DEFAULT", pushgateway_conn_json("https://gateway.example:9091"))
    assert pushgateway_target() == "https://gateway.example:9091"  # the connection wins
    assert connection_url("http://10.0.0.5", 9091, None) == "http://10.0.0.5:9091"
    with pytest.raises(ValueError, match="not a Pushgateway URL"):
        pushgateway_conn_json("127.0.0.1")


def test_text_file_is_served_by_the_exporter(tmp_path):
    write_reports(tmp_path)
    result = push_metrics(tmp_path, DATE, None)
    assert result["target"] == str(Layout(tmp_path).metrics_file)
    port = free_port()
    cmd = [sys.executable, str(ROOT / "monitoring" / "start_metrics_server.py"), "--port", str(port),
           "--metrics-file", result["target"]]
    url = f"http://127.0.0.1:{port}/metrics"
    with process(cmd, url):
        got = samples(http_get(url))
    assert got[("edgecache_batch_events_generated", ())] == 123
    assert got[("edgecache_batch_records_quarantined", (("reason", "bad_json"),))] == 2


def test_push_to_a_real_pushgateway(tmp_path):
    binary = require_binary("prometheus-pushgateway", "prometheus-pushgateway")
    write_reports(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([binary, f"--web.listen-address=127.0.0.1:{port}"], f"{url}/-/ready"):
        push_metrics(tmp_path, DATE, url)
        got = samples(http_get(f"{url}/metrics"))
    assert got[("edgecache_batch_events_generated", ())] == 123
    assert got[("edgecache_batch_redis_keys_warmed", ())] == 81
    assert not Layout(tmp_path).metrics_file.exists()


def test_no_reports_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="no stage reports"):
        push_metrics(tmp_path, DATE, None)
