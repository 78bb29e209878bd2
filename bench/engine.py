"""Benchmark: features and prediction for 1, 3, 10 and 30 million events on local[2].

    python bench/engine.py [--events 1000000 3000000 10000000 30000000] [--window-days 3] [--merge]

For each size N, the logs of ``window_days + 1`` days (the feature window of D and the
training day before it) hold N events in all, at 5 views per viewer per day. They are
generated first (not timed). Then the DAG's tasks run with spark-submit as two nights
run them:
  first night (D-1): ``spark_features`` validates every earlier day's JSON lines and
      builds the features of D-1 and D-2 (the cold start);
  nightly (D): ``spark_features`` validates D's lines and builds D's features (D-1's are
      there from the night before); ``spark_predict`` trains the scorer and the demand
      model on D-1 against D and predicts D+1.
Reports wall time and peak memory of each, and their ratios to a bare spark-submit
measured in the same run. The model gate's cost: ``spark_predict`` runs a second time on
the same data with ``--gate false``, and the ratio of the two wall times is reported
(with the gate's own seconds from the predict summary). Aim: nightly features + prediction for 10 million events in
under 3 minutes. With ``--merge`` the sizes measured now replace the same sizes in
``bench/results/engine.json`` and the others stay; each row keeps its own reference and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common import HERE, bare_spark_submit, measure

ROOT = HERE.parent
DATE = "2025-04-12"
PREVIOUS = "2025-04-11"


def spark_submit(args: argparse.Namespace, job: str, *job_args: str) -> list[str]:
    date = [] if "--date" in job_args else ["--date", DATE]
    return ["spark-submit", "--master", args.master, "--driver-memory", args.driver_memory,
            "--conf", "spark.ui.enabled=false", str(ROOT / "spark_jobs" / job), *date, *job_args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000, 30_000_000])
    parser.add_argument("--window-days", type=int, default=3)
    parser.add_argument("--views-per-user", type=float, default=5.0)
    parser.add_argument("--titles", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="3g")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the data under this folder and keep it (one size only), to run a job again")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other sizes already in bench/results/engine.json")
    args = parser.parse_args(argv)
    if args.keep and len(args.events) > 1:
        parser.error("--keep takes one size")

    ref = bare_spark_submit(args.master)
    gib = 1024**3
    print(f"bare spark-submit (reference): {ref.seconds:.1f} s, peak {ref.peak_rss_bytes / gib:.2f} GiB")
    days = args.window_days + 1
    rows = []
    for total in args.events:
        per_day = total // days
        users = int(per_day / args.views_per_user)
        data = args.keep or Path(tempfile.mkdtemp(prefix="edgecache-bench-engine-"))
        data.mkdir(parents=True, exist_ok=True)
        try:
            common = ["--data-dir", str(data)]
            measure(spark_submit(args, "generate_logs.py", *common, "--events", str(per_day), "--users", str(users),
                                 "--titles", str(args.titles), "--history-days", str(days)))
            # The night before D: the first run, which validates every earlier day and builds
            # the features of D-1 and D-2 (cold). Then the night of D, as every later night runs.
            cold = measure(spark_submit(args, "features.py", *common, "--date", PREVIOUS,
                                        "--window-days", str(args.window_days)))
            feat = measure(spark_submit(args, "features.py", *common, "--window-days", str(args.window_days)))
            pred = measure(spark_submit(args, "predict.py", *common))
            reports = {s: json.loads((data / "reports" / f"date={DATE}" / f"{s}.json").read_text())
                       for s in ("features", "predict")}
            ungated = measure(spark_submit(args, "predict.py", *common, "--gate", "false"))
            events = sum(json.loads((data / "reports" / f"date={DATE}" / "generate.json").read_text())
                         ["lines_per_edge"].values())
        finally:
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
        row = {
            "events": total, "events_per_day": per_day, "events_on_D": events, "users": users,
            "titles": args.titles, "days": days,
            "first_night_features_seconds": round(cold.seconds, 1),
            "features_seconds": round(feat.seconds, 1), "predict_seconds": round(pred.seconds, 1),
            "total_seconds": round(feat.seconds + pred.seconds, 1),
            "features_peak_gib": round(feat.peak_rss_bytes / gib, 2), "predict_peak_gib": round(pred.peak_rss_bytes / gib, 2),
            "candidate_rows_trained": reports["predict"]["training"].get("scorer_rows"),
            "model": reports["predict"]["model"],
            "deployed": reports["predict"].get("deployed"),
            "predict_without_gate_seconds": round(ungated.seconds, 1),
            "gate_added": round(pred.seconds / ungated.seconds - 1, 3),
            "gate_seconds_in_job": reports["predict"].get("seconds", {}).get("gate"),
            "predict_steps_seconds": {**reports["predict"].get("seconds", {}),
                                      **{f"train_{k}": v for k, v in
                                         reports["predict"]["training"].get("seconds", {}).items()}},
            "reference_seconds": round(ref.seconds, 1),
            "measured_on": dt.date.today().isoformat(),
        }
        rows.append(row)
        print(f"{total:>11,} events ({users:,} viewers, {days} days): first night's features {cold.seconds:6.1f} s; "
              f"nightly: features {feat.seconds:6.1f} s "
              f"({feat.seconds / ref.seconds:.1f} x ref, peak {row['features_peak_gib']} GiB), "
              f"predict {pred.seconds:6.1f} s ({pred.seconds / ref.seconds:.1f} x ref, peak {row['predict_peak_gib']} GiB), "
              f"total {row['total_seconds']} s; the gate adds {row['gate_added']:+.1%} to predict "
              f"({ungated.seconds:.1f} s without it)", flush=True)
    out = HERE / "results" / "engine.json"
    out.parent.mkdir(exist_ok=True)
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        kept = [dict(r, reference_seconds=r.get("reference_seconds", old["reference_seconds"]))
                for r in old["runs"] if r["events"] not in {r2["events"] for r2 in rows}]
        rows = sorted(kept + rows, key=lambda r: r["events"])
    out.write_text(json.dumps({"reference_seconds": round(ref.seconds, 1), "master": args.master,
                               "window_days": args.window_days, "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
