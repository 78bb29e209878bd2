"""Links from the Airflow UI to the project's two Grafana dashboards.

* Navigation bar: "Edge cache" and "Pipeline" under a "Grafana" group; they open Grafana in
  a new browser tab.
* Every DAG's page: a "Grafana" tab that embeds the Pipeline dashboard filtered on that DAG
  (``?var-dag_id=<dag_id>``). Grafana must allow embedding (``GF_SECURITY_ALLOW_EMBEDDING=true``).
* Every task instance: a "Grafana: Pipeline" extra-link button to the same filtered dashboard,
  which opens in a new tab and needs no embedding.

The Grafana base URL comes from ``EDGECACHE_GRAFANA_URL`` (default ``http://127.0.0.1:3000``),
read when the plugin loads: restart the api-server after changing it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

GRAFANA_URL_ENV = "EDGECACHE_GRAFANA_URL"
DEFAULT_GRAFANA_URL = "http://127.0.0.1:3000"
EDGE_UID = "edgecache-edge"
PIPELINE_UID = "edgecache-pipeline"
CATEGORY = "Grafana"
PIPELINE_TAB_ROUTE = "edgecache-grafana-pipeline"
# Airflow's UI replaces this token with the page's DAG id in the href of a "dag" external view.
DAG_ID_TOKEN = "{DAG_ID}"


def grafana_base_url() -> str:
    """The Grafana base URL from the environment, without a trailing slash."""
    url = (os.environ.get(GRAFANA_URL_ENV) or DEFAULT_GRAFANA_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{GRAFANA_URL_ENV} must be an http(s) URL such as {DEFAULT_GRAFANA_URL}, got {url!r}")
    return url


def dashboard_url(uid: str, base: str | None = None, dag_id: str | None = None) -> str:
    """``{base}/d/{uid}``, filtered on ``dag_id`` when given (the Pipeline dashboard's variable)."""
    url = f"{base or grafana_base_url()}/d/{uid}"
    if dag_id is not None:
        # The UI token must reach the browser verbatim; a real DAG id is URL-encoded.
        url += "?var-dag_id=" + (dag_id if dag_id == DAG_ID_TOKEN else quote(dag_id, safe=""))
    return url


def grafana_views(base: str | None = None) -> list[dict[str, Any]]:
    """The UI entries: two navigation links and one DAG tab."""
    base = base or grafana_base_url()
    return [
        # No url_route: the UI renders a plain link that opens in a new tab.
        {"name": "Edge cache", "href": dashboard_url(EDGE_UID, base), "destination": "nav", "category": CATEGORY},
        {"name": "Pipeline", "href": dashboard_url(PIPELINE_UID, base), "destination": "nav", "category": CATEGORY},
        # A DAG tab needs url_route: the UI embeds the href in an iframe at .../plugin/<url_route>.
        {
            "name": "Grafana",
            "href": dashboard_url(PIPELINE_UID, base, dag_id=DAG_ID_TOKEN),
            "destination": "dag",
            "url_route": PIPELINE_TAB_ROUTE,
        },
    ]


class GrafanaPipelineLink(BaseOperatorLink):
    """Task instance button: the Pipeline dashboard filtered on the task's DAG."""

    name = "Grafana: Pipeline"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return dashboard_url(PIPELINE_UID, dag_id=ti_key.dag_id)


class EdgecacheGrafanaPlugin(AirflowPlugin):
    """Grafana links for the edgecache project."""

    name = "edgecache_grafana"
    external_views: ClassVar[list[dict[str, Any]]] = grafana_views()
    global_operator_extra_links: ClassVar[list[BaseOperatorLink]] = [GrafanaPipelineLink()]
