"""DAG integrity: it imports cleanly, wires the tasks in order, and looks nothing up at parse time."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

DAG_FILE = ROOT / "dags" / "predictive_caching.py"
ORDER = ["generate_logs", "spark_features", "spark_predict"]


def _no_lookups(*args, **kwargs):
    raise AssertionError("a connection or variable was looked up while parsing the DAG")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.connection import Connection
    from airflow.sdk import BaseHook, Variable

    mp = pytest.MonkeyPatch()
    for target, name in ((BaseHook, "get_connection"), (Connection, "get_connection_from_secrets"),
                         (Variable, "get")):
        mp.setattr(target, name, _no_lookups)
    try:
        yield DagBag(dag_folder=str(DAG_FILE))
    finally:
        mp.undo()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert list(dagbag.dags) == ["predictive_caching"]


def test_tasks_run_as_the_data_flows(dagbag):
    dag = dagbag.dags["predictive_caching"]
    assert sorted(dag.task_ids) == sorted(ORDER + ["choose_source", "ingest_logs", "next_day_logs", "warm_cache",
                                                   "evaluate", "push_metrics"])
    for upstream, downstream in zip(ORDER[1:], ORDER[2:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    # The warm and the evaluation need only the predictions: side by side after them.
    assert dag.get_task("warm_cache").upstream_task_ids == {"spark_predict"}
    # The evaluation also needs D+1's logs, made beside the pipeline from whichever source ran.
    assert dag.get_task("evaluate").upstream_task_ids == {"spark_predict", "next_day_logs"}
    next_day = dag.get_task("next_day_logs")
    assert next_day.upstream_task_ids == {"generate_logs", "ingest_logs"}
    assert next_day.trigger_rule == "none_failed_min_one_success"
    # The metrics go last, after both, whatever became of them.
    push = dag.get_task("push_metrics")
    assert push.upstream_task_ids == {"warm_cache", "evaluate"} and not push.downstream_task_ids
    assert push.trigger_rule == "all_done"
    # The logs come from the generator or from the operator's files: one branch runs.
    assert dag.get_task("generate_logs").upstream_task_ids == {"choose_source"}
    assert dag.get_task("ingest_logs").upstream_task_ids == {"choose_source"}
    features = dag.get_task("spark_features")
    assert features.upstream_task_ids == {"generate_logs", "ingest_logs"}
    assert features.trigger_rule == "none_failed_min_one_success"


def test_spark_tasks_use_spark_submit(dagbag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    dag = dagbag.dags["predictive_caching"]
    for task_id, script in (("generate_logs", "generate_logs.py"), ("ingest_logs", "ingest_logs.py"),
                            ("spark_features", "features.py"),
                            ("spark_predict", "predict.py"), ("next_day_logs", "next_day_logs.py"),
                            ("evaluate", "evaluate.py")):
        task = dag.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator)
        assert task._conn_id == "spark_default"
        assert task.application == str(ROOT / "spark_jobs" / script)


def test_schedule_params_and_docs(dagbag):
    dag = dagbag.dags["predictive_caching"]
    assert dag.catchup is False
    assert dag.doc_md and "generate_logs" in dag.doc_md
    assert {"edgecache", "spark", "redis"} <= set(dag.tags)
    assert {"users", "edges", "events", "seed", "top_k", "cache_gb", "window_days", "decay_days", "model",
            "source", "logs_path", "catalog_path"} <= set(dag.params)
    assert all(t.retries >= 1 and t.retry_exponential_backoff for t in dag.tasks)
    # Nothing hangs for ever: every task, and the run, has a timeout.
    assert all(t.execution_timeout is not None and t.execution_timeout.total_seconds() > 0 for t in dag.tasks)
    assert dag.dagrun_timeout is not None and dag.dagrun_timeout > max(t.execution_timeout for t in dag.tasks)


def test_outlets_give_lineage(dagbag):
    dag = dagbag.dags["predictive_caching"]
    names = {a.name for t in dag.tasks for a in t.outlets}
    assert names == {"edgecache_logs", "edgecache_features", "edgecache_predictions", "edgecache_evaluation"}
    assert [a.name for a in dag.get_task("evaluate").outlets] == ["edgecache_evaluation"]


def test_dates_come_from_the_run_not_the_clock():
    source = DAG_FILE.read_text()
    assert "now()" not in source and "today()" not in source


def test_run_date_renders_for_runs_with_and_without_a_logical_date(dagbag):
    # A run triggered through the REST API with logical_date null has no `logical_date` in its
    # template context at all; Airflow renders with StrictUndefined, so the template must not name it.
    import datetime as dt
    from types import SimpleNamespace

    import jinja2

    task = dagbag.dags["predictive_caching"].get_task("generate_logs")
    template = task.application_args[task.application_args.index("--date") + 1]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    after = dt.datetime(2026, 11, 26, 22, 34, tzinfo=dt.timezone.utc)
    manual = SimpleNamespace(logical_date=None, run_after=after)
    assert env.from_string(template).render(dag_run=manual) == "2026-11-26"
    scheduled = SimpleNamespace(logical_date=dt.datetime(2025, 4, 12, tzinfo=dt.timezone.utc), run_after=after)
    assert env.from_string(template).render(dag_run=scheduled, logical_date=scheduled.logical_date) == "2025-04-12"


def test_every_workload_knob_is_a_param_passed_to_generate(dagbag):
    from dataclasses import fields

    from edgecache.simulate.generate_logs import build_parser
    from edgecache.settings import WorkloadParams

    dag = dagbag.dags["predictive_caching"]
    args = dag.get_task("generate_logs").application_args
    parser = build_parser()
    for f in fields(WorkloadParams):
        assert f.name in dag.params
        flag = f"--{f.name.replace('_', '-')}"
        optional = isinstance(getattr(WorkloadParams(), f.name), str) and f.name not in ("workload", "snm_shape")
        value = f"params.{f.name} or ''" if optional else f"params.{f.name}"
        assert args[args.index(flag) + 1] == "{{ " + value + " }}"
        given = "" if dag.params[f.name] is None else str(dag.params[f.name])
        assert parser.parse_args(["--date", "2025-04-12", flag, given]) is not None


def test_every_param_without_a_value_accepts_the_trigger_forms_null(dagbag):
    """The trigger form sends an empty field as null: a param whose default is empty must take
    null, or the form's Trigger button stays disabled."""
    import jsonschema

    params = dagbag.dags["predictive_caching"].params
    empty = [k for k in params if params[k] in (None, "")]
    assert {"logs_path", "catalog_path", "new_edge_day", "opening_edges"} <= set(empty)
    for name in empty:
        jsonschema.validate(None, params.get_param(name).schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("12/04/2025", params.get_param("new_edge_day").schema)


def test_federated_settings_are_params_passed_to_predict(dagbag):
    from edgecache.pipeline.predict import build_parser

    dag = dagbag.dags["predictive_caching"]
    args = dag.get_task("spark_predict").application_args
    argv = ["--date", "2025-04-12"]
    for name in ("training", "fl_rounds", "fl_fraction", "fl_local_steps", "fl_fine_tune_steps", "fl_epsilon",
                 "fl_clip_norm", "fl_secure"):
        flag = f"--{name.replace('_', '-')}"
        assert args[args.index(flag) + 1] == f"{{{{ params.{name} }}}}"
        argv += [flag, str(dag.params[name])]  # a boolean renders as True / False
    parsed = build_parser().parse_args(argv)
    assert parsed.training == "federated" and parsed.fl_secure is False and parsed.fl_rounds == dag.params["fl_rounds"]


def test_federated_params_and_flags_come_from_one_definition(dagbag, capsys):
    from edgecache.federated.config import KNOBS, FedConfig
    from edgecache.pipeline.predict import build_parser, fed_config

    dag = dagbag.dags["predictive_caching"]
    parsed = build_parser().parse_args(["--date", "2025-04-12"])
    assert fed_config(parsed) == FedConfig()
    for knob in KNOBS:
        schema = dag.params.get_param(knob.name).schema
        assert schema["type"] == knob.kind and {k: schema[k] for k in knob.bounds()} == knob.bounds()
        assert dag.params[knob.name] == getattr(parsed, knob.name) == knob.default
    # the job refuses what the param's schema refuses
    for flag, value in (("--fl-rounds", "0"), ("--fl-clip-norm", "0"), ("--fl-epsilon", "-1")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--date", "2025-04-12", flag, value])
    assert "--fl-rounds" in capsys.readouterr().err


def test_schedule_comes_from_the_environment(monkeypatch):
    from edgecache.settings import Settings

    monkeypatch.delenv("EDGECACHE_SCHEDULE", raising=False)
    assert Settings.from_env().schedule == "@daily"
    monkeypatch.setenv("EDGECACHE_SCHEDULE", "none")
    assert Settings.from_env().schedule is None
    monkeypatch.setenv("EDGECACHE_SCHEDULE", " @hourly ")
    assert Settings.from_env().schedule == "@hourly"
