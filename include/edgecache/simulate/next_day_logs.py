"""Spark job: day D+1's synthetic logs, drawn with day D's workload, for the evaluation to replay.

The task ``next_day_logs`` runs it after ``generate_logs``. It reads D's generate report for
the workload's knobs, so D+1 has the same catalog, viewers and tastes, and writes D+1's logs
and generate report (``generated_by``: this stage) unless D+1's logs are already there. With an
operator's own logs there is no generate report for D: nothing is made, and the report says so.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyspark.sql import SparkSession

from edgecache.layout import Layout, read_json, shift_day, write_json_atomic
from edgecache.pipeline.job import base_parser, run_job
from edgecache.simulate import generate_logs

STAGE = "next_day_logs"


def next_day(date: str) -> str:
    return shift_day(date, 1)


def build_parser() -> argparse.ArgumentParser:
    return base_parser("Generate day D+1's logs with day D's workload, unless they are there.")


def workload_argv(parser: argparse.ArgumentParser, workload: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Flags for the generate parser from a report's "workload" dict, and the keys it does not know."""
    actions = {s: a for a in parser._actions for s in a.option_strings}
    argv, unknown = [], []
    for key, value in sorted(workload.items()):
        flag = f"--{key.replace('_', '-')}"
        action = actions.get(flag)
        if action is None:
            unknown.append(key)
        elif action.nargs == 0:  # a switch: present when the run had it on
            if bool(value) != bool(action.default):
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv, unknown


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    target = next_day(args.date)
    if layout.has_logs(target):
        return {"next_date": target, "logs_generated": False, "reason": f"the logs of {target} are there"}
    source = layout.report(args.date, "generate")
    if not source.exists():
        # An operator's own logs: D+1 comes in by ingest, not from here.
        print(f"{STAGE}: no generate report for {args.date} (own logs?): {target}'s logs are left to ingest")
        return {"next_date": target, "logs_generated": False, "reason": f"no generate report for {args.date}"}
    parser = generate_logs.build_parser()
    argv, unknown = workload_argv(parser, read_json(source)["workload"])
    gen_args = parser.parse_args(["--date", target, "--data-dir", str(layout.root), "--master", args.master, *argv])
    report = generate_logs.run(spark, gen_args)
    report.update(stage="generate", date=target, generated_by=STAGE, workload_keys_ignored=unknown)
    write_json_atomic(layout.report(target, "generate"), report)
    return {"next_date": target, "logs_generated": True, "lines": report["lines"], "workload_keys_ignored": unknown}


def main(argv: list[str] | None = None) -> int:
    return run_job(STAGE, build_parser(), run, argv)
