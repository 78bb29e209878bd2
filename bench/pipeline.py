"""Benchmark: wall time per task of the default DAG run, against a reference in the same run.

    python bench/pipeline.py [--date 2025-04-12] [--repeat 1]

Runs the DAG as `make run` does (airflow dags test, embedded Redis, default dataset) and
reports each task's wall time from the Airflow metadata DB, as seconds and as a ratio to a
bare spark-submit measured in the same run (JVM start, SparkSession, one trivial action):
the floor under every Spark task on this machine. Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from edgecache.layout import write_json_atomic
from edgecache.ops.localrun import run
from edgecache.settings import DEFAULT_DATE, Settings

HERE = Path(__file__).resolve().parent


def bare_spark_submit_seconds(master: str) -> float:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable,
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    started = time.perf_counter()
    subprocess.run(
        ["spark-submit", "--master", master, "--conf", "spark.ui.enabled=false", str(HERE / "noop_job.py")],
        env=env, check=True, capture_output=True,
    )
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", default=DEFAULT_DATE)
    parser.add_argument("--repeat", type=int, default=1, help="DAG runs to average (default: %(default)s)")
    args = parser.parse_args(argv)
    master = Settings.from_env().spark_master

    reference = bare_spark_submit_seconds(master)
    runs = []
    for _ in range(args.repeat):
        summary = run(args.date)
        # a task the run skipped (the ingest branch of a generated night) has no time
        runs.append({t: d["seconds"] for t, d in summary["tasks"].items() if d.get("seconds") is not None})
    tasks = {t: sum(r[t] for r in runs) / len(runs) for t in runs[0] if all(t in r for r in runs)}
    dag_seconds = sum(tasks.values())

    print(f"\nbare spark-submit (reference): {reference:6.1f} s   master {master}, {os.cpu_count()} cores")
    print(f"{'task':<16}{'seconds':>9}{'x reference':>13}{'share':>8}")
    for task, secs in sorted(tasks.items(), key=lambda kv: -kv[1]):
        print(f"{task:<16}{secs:9.1f}{secs / reference:13.2f}{secs / dag_seconds:8.0%}")
    print(f"{'all tasks':<16}{dag_seconds:9.1f}{dag_seconds / reference:13.2f}")
    result = {
        "date": args.date, "master": master, "cores": os.cpu_count(), "python": platform.python_version(),
        "repeat": args.repeat, "reference_spark_submit_seconds": round(reference, 2),
        "task_seconds": {t: round(s, 2) for t, s in tasks.items()}, "dag_task_seconds": round(dag_seconds, 2),
        "events": summary["events"], "users": summary["users"], "edges": summary["edges"],
    }
    out = HERE / "results" / f"pipeline-{args.date}.json"
    write_json_atomic(out, result)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
