"""
# predictive_caching

The nightly pipeline of the edge predictive cache, for one logical day D:

1. **choose_source**, then **generate_logs** (Spark): synthetic viewing logs for D, JSON Lines
   per edge (and the days before D that the feature window needs, when missing); or, with
   the param `source` = `ingest`, **ingest_logs** (Spark): your own logs for D from
   `logs_path` (a folder or glob; `{date}` stands for D) and your catalog from
   `catalog_path` (CSV or Parquet; empty: keep the one there, or infer one from the logs).
   Beside the pipeline, **next_day_logs** (Spark) draws day D+1's logs with D's workload for
   the evaluation (with your own logs it has nothing to do: D+1 comes by ingest).
2. **spark_features** (Spark SQL): validate the logs (bad lines are quarantined with a
   reason and counted), then per-viewer, per-series, per-edge and transition features
   over the window ending at D (and D-1, for training).
3. **spark_predict** (Spark MLlib): train the scorer on D-1's features against D's views,
   by federated learning across the edges (each edge trains on its own rows; only model
   updates reach the server; `fl_*` params), and the demand model on D's requests per
   edge; then rank each viewer's candidates and each edge's titles for D+1; the prefetch
   set fills `cache_gb` per edge.
4. **warm_cache** and **evaluate**, side by side once the predictions are written.
   **warm_cache** writes `user:<id>` (top title), the ranked top-k and each edge's cache
   contents into Redis (connection `redis_default`), with a TTL, and what the edge
   services (`edgecache serve`) need to decide and predict during the day: the catalog,
   each edge's demand and transitions.
   **evaluate** (Spark, libCacheSim) replays day D+1's requests (with your own logs, once
   D+1 is ingested, else it says so and skips) against D's predictions and the classic cache policies (LRU,
   LFU, S3-FIFO, SIEVE, Belady) at 1-20 % of the catalog, and the caches as deployed;
   hit-ratio report, plot and replayable traces under `evaluation/date=D/`.
5. **push_metrics**, last, whatever became of the others (`all_done`): the run's batch
   metrics, the evaluation's hit ratios among them, to the Pushgateway of the connection
   `pushgateway_default` (or `PUSHGATEWAY_URL`), else to a text file.

Every task has an execution timeout, and the run a timeout of its own.

Trigger it with *Trigger DAG w/ config* to change the dataset size, the seed, the workload
model (`catalog` or the shot noise model `snm`) and its shapes, top-k or the cache size, or
the model. Outputs land under `$EDGECACHE_DATA_DIR` (default `data/`).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, dag, task

from edgecache.federated.config import KNOBS
from edgecache.settings import WORKLOAD_CHOICES, WORKLOAD_HELP, Settings, WorkloadParams

SETTINGS = Settings.from_env()  # environment only: no connection or network look-up here
# The federated settings (DAG params fl_*, predict's --fl-* flags): one definition, KNOBS.
FED_ARGS = tuple(k.name for k in KNOBS)
WORKLOAD = WorkloadParams.from_env()
DATA_DIR = str(SETTINGS.data_dir)
JOBS = Path(__file__).resolve().parents[1] / "spark_jobs"

# The run's day: the logical date, or run_after for a run triggered without one (the REST API
# allows logical_date null; the context then has no `logical_date` at all, so read the run's).
RUN_DATE = "{{ (dag_run.logical_date or dag_run.run_after).strftime('%Y-%m-%d') }}"

LOGS = Asset(name="edgecache_logs", uri=f"file://{DATA_DIR}/logs")
FEATURES = Asset(name="edgecache_features", uri=f"file://{DATA_DIR}/features")
PREDICTIONS = Asset(name="edgecache_predictions", uri=f"file://{DATA_DIR}/predictions")
EVALUATION = Asset(name="edgecache_evaluation", uri=f"file://{DATA_DIR}/evaluation")

# Session defaults (time zone, shuffle partitions) come from edgecache.pipeline.spark.get_spark;
# the Spark connection or these settings override them.
SPARK_CONF = {"spark.ui.enabled": "false"}
# A task that hangs (a stuck Spark job, a Redis that never answers) fails after this and is
# retried; the run as a whole gives up well before the next night's run is due.
TASK_TIMEOUT = timedelta(hours=3)
RUN_TIMEOUT = timedelta(hours=20)


def workload_arg(name: str) -> str:
    """The template of a workload knob's value; an optional text knob's empty field is null."""
    if isinstance(getattr(WORKLOAD, name), str) and name not in WORKLOAD_CHOICES:
        return f"{{{{ params.{name} or '' }}}}"
    return f"{{{{ params.{name} }}}}"


def workload_param(name: str, kind: object) -> Param:
    """A workload knob as a DAG param: a name from a fixed list, a date, an integer or a number."""
    default = getattr(WORKLOAD, name)
    if name in WORKLOAD_CHOICES:
        return Param(default, type="string", enum=list(WORKLOAD_CHOICES[name]), description=WORKLOAD_HELP[name])
    if kind in (str, "str"):  # new_edge_day: empty (the form sends null), or a date
        return Param(
            default or None, type=["null", "string"], pattern=r"^$|^\d{4}-\d{2}-\d{2}$", description=WORKLOAD_HELP[name]
        )
    return Param(default, type="integer" if kind in (int, "int") else "number", description=WORKLOAD_HELP[name])


def spark_job(task_id: str, script: str, args: list[str], outlets: list[Asset]) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS / script),
        conn_id="spark_default",
        name=f"edgecache-{task_id}",
        conf=SPARK_CONF,
        application_args=["--date", RUN_DATE, "--data-dir", DATA_DIR, *args],
        outlets=outlets,
    )


@dag(
    dag_id="predictive_caching",
    schedule=SETTINGS.schedule,  # EDGECACHE_SCHEDULE; default @daily
    start_date=pendulum.datetime(2025, 4, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=RUN_TIMEOUT,
    tags=["edgecache", "spark", "redis"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": TASK_TIMEOUT,
    },
    params={
        # Where the logs come from: the generator, or an operator's own files.
        "source": Param(
            SETTINGS.source,
            type="string",
            enum=["generate", "ingest"],
            description="generate synthetic logs, or ingest your own from logs_path",
        ),
        # Optional: the trigger form sends an empty field as null, which a plain string refuses.
        "logs_path": Param(
            SETTINGS.logs_path or None,
            type=["null", "string"],
            description="with source=ingest: folder or glob of your JSON Lines logs ({date} = the day)",
        ),
        "catalog_path": Param(
            SETTINGS.catalog_path or None,
            type=["null", "string"],
            description="with source=ingest: your catalog, CSV or Parquet (empty: keep or infer)",
        ),
        # Every workload knob (see edgecache.settings.WorkloadParams), then the model's.
        **{f.name: workload_param(f.name, f.type) for f in fields(WorkloadParams)},
        "top_k": Param(SETTINGS.top_k, type="integer", minimum=1, description="titles predicted per viewer"),
        "cache_gb": Param(
            SETTINGS.cache_gb,
            type="number",
            exclusiveMinimum=0,
            description="prefetch capacity of each edge cache, in GB",
        ),
        "window_days": Param(
            SETTINGS.window_days, type="integer", minimum=1, description="days of history the features cover"
        ),
        "decay_days": Param(
            SETTINGS.decay_days,
            type="number",
            exclusiveMinimum=0,
            description="e-folding time of the popularity decay, in days",
        ),
        "model": Param(
            SETTINGS.model,
            type="string",
            enum=["learned", "simple"],
            description="learned scorer, or the simple tiered baseline",
        ),
        # How the learned scorer trains (see edgecache.federated): federated by default.
        "training": Param(
            SETTINGS.training,
            type="string",
            enum=["federated", "central", "local"],
            description="federated across edges, central (all logs pooled) or local (each edge alone)",
        ),
        "opening_edges": Param(
            None,
            type=["null", "string"],
            pattern=r"^([A-Za-z0-9_-]{1,64}(,[A-Za-z0-9_-]{1,64})*)?$",
            description="edges that open tomorrow with no logs yet (comma-separated ids): the learned demand "
            "model ranks their prefetch set from what the other edges know",
        ),
        **{k.name: Param(k.default, type=k.kind, description=k.help, **k.bounds()) for k in KNOBS},
    },
)
def predictive_caching():
    @task.branch
    def choose_source(source: str) -> str:
        return "ingest_logs" if source == "ingest" else "generate_logs"

    ingest_logs = spark_job(
        "ingest_logs",
        "ingest_logs.py",
        ["--source", "{{ params.logs_path or '' }}", "--catalog", "{{ params.catalog_path or '' }}"],
        [LOGS],
    )
    generate_logs = spark_job(
        "generate_logs",
        "generate_logs.py",
        [arg for f in fields(WorkloadParams) for arg in (f"--{f.name.replace('_', '-')}", workload_arg(f.name))]
        + ["--history-days", "{{ params.window_days + 1 }}"],
        [LOGS],
    )
    spark_features = spark_job(
        "spark_features",
        "features.py",
        ["--window-days", "{{ params.window_days }}", "--decay-days", "{{ params.decay_days }}"],
        [FEATURES],
    )
    spark_features.trigger_rule = "none_failed_min_one_success"  # one of generate and ingest is skipped
    spark_predict = spark_job(
        "spark_predict",
        "predict.py",
        [
            "--top-k",
            "{{ params.top_k }}",
            "--cache-gb",
            "{{ params.cache_gb }}",
            "--model",
            "{{ params.model }}",
            "--training",
            "{{ params.training }}",
            "--opening-edges",
            "{{ params.opening_edges or '' }}",
        ]
        + [arg for name in FED_ARGS for arg in (f"--{name.replace('_', '-')}", f"{{{{ params.{name} }}}}")],
        [PREDICTIONS],
    )

    @task
    def warm_cache(run_date: str) -> dict:
        from airflow.providers.redis.hooks.redis import RedisHook

        from edgecache.serving.warm_cache import warm_stage

        client = RedisHook(redis_conn_id="redis_default").get_conn()
        return warm_stage(client, SETTINGS.data_dir, run_date, SETTINGS.ttl_seconds)

    # Last, after the warm and the evaluation whatever their outcome: a failed night's figures
    # are the ones an operator most needs on the dashboards.
    @task(trigger_rule="all_done")
    def push_metrics(run_date: str) -> dict:
        from edgecache.ops.push_metrics import push_metrics as push
        from edgecache.ops.push_metrics import pushgateway_target

        # looked up when the task runs, never while the DAG is parsed
        return push(SETTINGS.data_dir, run_date, pushgateway_target())

    # Day D's predictions meet day D+1's requests; the job generates D+1's logs if missing.
    next_day_logs = spark_job("next_day_logs", "next_day_logs.py", [], [LOGS])
    next_day_logs.trigger_rule = "none_failed_min_one_success"  # after whichever source ran
    evaluate = spark_job("evaluate", "evaluate.py", [], [EVALUATION])

    warmed = warm_cache(RUN_DATE)
    choose_source("{{ params.source }}") >> [generate_logs, ingest_logs] >> spark_features
    [generate_logs, ingest_logs] >> next_day_logs >> evaluate
    spark_features >> spark_predict >> [warmed, evaluate] >> push_metrics(RUN_DATE)


predictive_caching()
