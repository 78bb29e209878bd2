"""The Grafana plugin: Airflow loads it from plugins/ and serves the dashboard links the UI shows."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

PLUGINS = ROOT / "plugins"
PLUGIN_FILE = PLUGINS / "edgecache_grafana.py"
GRAFANA = "http://grafana.test:3000"
DAG_ID = "predictive_caching"

EXPECTED_VIEWS = [
    {"name": "Edge cache", "href": f"{GRAFANA}/d/edgecache-edge", "destination": "nav", "category": "Grafana"},
    {"name": "Pipeline", "href": f"{GRAFANA}/d/edgecache-pipeline", "destination": "nav", "category": "Grafana"},
    {"name": "Grafana", "href": f"{GRAFANA}/d/edgecache-pipeline?var-dag_id={{DAG_ID}}", "destination": "dag",
     "url_route": "edgecache-grafana-pipeline"},
]

# Runs in a fresh interpreter: what the api-server does with the plugin. It validates the plugins with
# the model behind GET /api/v2/plugins, collects the UI's routed views, and asks the real DAG's
# deserialized tasks for their extra links as GET .../extraLinks does. Prints one JSON line.
PROBE = f"""
import json
from airflow import plugins_manager
from airflow.api_fastapi.core_api.datamodels.plugins import PluginResponse
from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstancekey import TaskInstanceKey
from airflow.serialization.serialized_objects import DagSerialization

plugins = [PluginResponse.model_validate(p).model_dump(mode="json", exclude_none=True)
           for p in plugins_manager.get_plugin_info()]
routed, _ = plugins_manager._get_ui_plugins()
links = {{}}
if plugins:
    bag = DagBag(dag_folder={str(ROOT / "dags" / "predictive_caching.py")!r})
    dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[{DAG_ID!r}]))

    class TI:
        def __init__(self, task_id):
            self.key = TaskInstanceKey({DAG_ID!r}, task_id, "scheduled__2025-04-12T00:00:00+00:00", 1)

    links = {{t.task_id: {{name: t.get_extra_links(TI(t.task_id), name) for name in t.extra_links}}
              for t in dag.tasks}}
print(json.dumps({{"import_errors": plugins_manager.get_import_errors(), "plugins": plugins,
                  "routes": [v["url_route"] for v in routed], "links": links}}))
"""


def airflow_env(tmp_path: Path, grafana_url: str | None = GRAFANA) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    })
    env.pop("EDGECACHE_GRAFANA_URL", None)
    if grafana_url is not None:
        env["EDGECACHE_GRAFANA_URL"] = grafana_url
    return env


def probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def views_of(plugins: list[dict]) -> list[dict]:
    [plugin] = [p for p in plugins if p["name"] == "edgecache_grafana"]
    keys = ("name", "href", "destination", "category", "url_route")
    return [{k: v[k] for k in keys if k in v} for v in plugin["external_views"]]


def test_airflow_plugins_command_lists_the_grafana_links(tmp_path):
    airflow = Path(sys.executable).parent / "airflow"
    out = subprocess.run([str(airflow), "plugins", "--output", "json"], env=airflow_env(tmp_path),
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    plugins = json.loads(out.stdout)
    [plugin] = [p for p in plugins if p["name"] == "edgecache_grafana"]
    assert plugin["source"] == "$PLUGINS_FOLDER/edgecache_grafana.py"
    assert plugin["external_views"] == EXPECTED_VIEWS
    assert plugin["global_operator_extra_links"] == ["<edgecache_grafana.GrafanaPipelineLink object>"]
    assert plugin["appbuilder_menu_items"] == []  # nothing that needs the FAB provider


def test_api_serves_the_views_and_every_task_links_to_the_pipeline_dashboard(tmp_path):
    result = probe(airflow_env(tmp_path))
    assert result["import_errors"] == {}
    assert views_of(result["plugins"]) == EXPECTED_VIEWS  # survived the API's validation unchanged
    assert "edgecache-grafana-pipeline" in result["routes"]  # the DAG tab was not dropped as a route clash
    expected = {"Grafana: Pipeline": f"{GRAFANA}/d/edgecache-pipeline?var-dag_id={DAG_ID}"}
    assert result["links"] and all(links == expected for links in result["links"].values())


def test_default_grafana_url_without_the_variable(tmp_path):
    result = probe(airflow_env(tmp_path, grafana_url=None))
    assert result["import_errors"] == {}
    assert [v["href"] for v in views_of(result["plugins"])] == [
        "http://127.0.0.1:3000/d/edgecache-edge",
        "http://127.0.0.1:3000/d/edgecache-pipeline",
        "http://127.0.0.1:3000/d/edgecache-pipeline?var-dag_id={DAG_ID}",
    ]


def test_a_malformed_grafana_url_is_a_plugin_import_error(tmp_path):
    result = probe(airflow_env(tmp_path, grafana_url="grafana.test:3000"))
    assert result["plugins"] == []
    [(source, error)] = result["import_errors"].items()
    assert source == str(PLUGIN_FILE) and "EDGECACHE_GRAFANA_URL must be an http(s) URL" in error


def load_plugin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgecache_grafana_under_test", PLUGIN_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hrefs_follow_the_environment(monkeypatch):
    monkeypatch.delenv("EDGECACHE_GRAFANA_URL", raising=False)
    mod = load_plugin_module()
    assert mod.grafana_base_url() == "http://127.0.0.1:3000"
    monkeypatch.setenv("EDGECACHE_GRAFANA_URL", "https://grafana.example.com/grafana/")
    assert mod.grafana_base_url() == "https://grafana.example.com/grafana"
    assert mod.dashboard_url("edgecache-edge") == "https://grafana.example.com/grafana/d/edgecache-edge"
    assert mod.dashboard_url("edgecache-pipeline", dag_id="a b/c") == (
        "https://grafana.example.com/grafana/d/edgecache-pipeline?var-dag_id=a%20b%2Fc")
    from airflow.sdk.types import TaskInstanceKey

    link = mod.GrafanaPipelineLink().get_link(None, ti_key=TaskInstanceKey(DAG_ID, "spark_features", "r1"))
    assert link == f"https://grafana.example.com/grafana/d/edgecache-pipeline?var-dag_id={DAG_ID}"
    # The plugin's class attributes are fixed when Airflow imports the file.
    assert load_plugin_module().EdgecacheGrafanaPlugin.external_views[0]["href"] == (
        "https://grafana.example.com/grafana/d/edgecache-edge")


@pytest.mark.parametrize("url", ["grafana:3000", "ftp://grafana.test", "http://"])
def test_malformed_urls_are_refused(monkeypatch, url: str):
    monkeypatch.delenv("EDGECACHE_GRAFANA_URL", raising=False)
    mod = load_plugin_module()
    monkeypatch.setenv("EDGECACHE_GRAFANA_URL", url)
    with pytest.raises(ValueError, match="EDGECACHE_GRAFANA_URL"):
        mod.grafana_base_url()
