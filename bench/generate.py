"""Benchmark: generate one day of 10 million views with spark-submit on local[2].

    python bench/generate.py [--events 10000000] [--users 2000000] [--titles 20000]

Reports wall time and peak memory (the whole process tree: JVM and Python workers), as
figures and as ratios to a bare spark-submit measured in the same run. Aim: 10 million
events in 60 s or less, peak memory under 2 GB, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common import HERE, bare_spark_submit, measure

ROOT = HERE.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--titles", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="1g")
    args = parser.parse_args(argv)

    ref = bare_spark_submit(args.master)
    data = Path(tempfile.mkdtemp(prefix="edgecache-bench-gen-"))
    try:
        cmd = ["spark-submit", "--master", args.master, "--driver-memory", args.driver_memory,
               "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=8",
               str(ROOT / "spark_jobs" / "generate_logs.py"), "--date", "2025-04-12", "--data-dir", str(data),
               "--users", str(args.users), "--events", str(args.events), "--titles", str(args.titles)]
        run = measure(cmd)
        report = json.loads((data / "reports" / "date=2025-04-12" / "generate.json").read_text())
        log_bytes = sum(p.stat().st_size for p in (data / "logs").rglob("*.jsonl"))
    finally:
        shutil.rmtree(data, ignore_errors=True)

    gib = 1024**3
    print(f"bare spark-submit (reference): {ref.seconds:6.1f} s   peak {ref.peak_rss_bytes / gib:.2f} GiB")
    print(f"generate {report['lines']:,} lines ({log_bytes / gib:.2f} GiB of JSON Lines), {args.users:,} viewers, "
          f"{args.titles:,} titles, {args.master}")
    print(f"  wall  {run.seconds:6.1f} s  = {run.seconds / ref.seconds:.2f} x reference   "
          f"({report['lines'] / run.seconds / 1e6:.2f} M lines/s; job itself {report['wall_seconds']:.1f} s)")
    print(f"  peak  {run.peak_rss_bytes / gib:6.2f} GiB = {run.peak_rss_bytes / ref.peak_rss_bytes:.2f} x reference")
    out = HERE / "results" / "generate.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "lines": report["lines"], "users": args.users, "titles": args.titles, "master": args.master,
        "wall_seconds": round(run.seconds, 1), "job_seconds": report["wall_seconds"],
        "peak_rss_bytes": run.peak_rss_bytes, "reference_seconds": round(ref.seconds, 1),
        "reference_peak_rss_bytes": ref.peak_rss_bytes,
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
