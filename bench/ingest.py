"""Benchmark: ingest and validation of 10 million log lines on local[2], against a bare read.

    python bench/ingest.py [--lines 10000000] [--master local[2]] [--repeat 2]

One day of N lines is generated first with the project's generator (not timed). Then, in
one SparkSession, each of these runs ``--repeat`` times and the best time counts:

  reference   ``spark.read.text(day).count()``: Spark reads every line and does nothing;
  ingest      ``edgecache ingest`` of that day into a second data directory (copies the
              lines into the layout, routed by edge);
  copy        the lines written to Parquet unchanged, one column: the least any
              validation that writes its events costs here;
  validate    the features job's validation of the day: every line checked (lines in the
              seed's shape by one pattern in the JVM, the others by
              ``edgecache.pipeline.validate.check_line`` in Python workers), events and quarantine
              written, exact duplicates dropped, outcomes counted;
  from_json   for comparison, a bare ``from_json`` of every line into the record's fields
              (what Spark's own JSON reader costs, with none of the contract's checks).

Prints lines per second and each time as a ratio to the reference, and writes them to
``bench/results/ingest.json``. Aim: ingest and validation within 3x of the reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATE = "2025-04-12"


def best_of(repeat: int, fn) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--driver-memory", default="3g")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ingest.json")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", f"--driver-memory {args.driver_memory} pyspark-shell")
    from pyspark.sql import functions as F

    from edgecache.pipeline import ingest_logs as ingest
    from edgecache.simulate import generate_logs as generate
    from edgecache.pipeline.features import validate_day
    from edgecache.layout import Layout
    from edgecache.pipeline.spark import get_spark

    spark = get_spark("edgecache-bench-ingest", args.master)
    spark.conf.set("spark.sql.shuffle.partitions", "8")
    work = Path(tempfile.mkdtemp(prefix="edgecache-bench-ingest-"))
    try:
        src, dst = Layout(work / "generated"), Layout(work / "ingested")
        users = max(1000, args.lines // 5)
        gen_args = generate.build_parser().parse_args(
            ["--date", DATE, "--data-dir", str(src.root), "--history-days", "1", "--events", str(args.lines),
             "--users", str(users), "--titles", "20000"])
        started = time.perf_counter()
        lines = generate.run(spark, gen_args)["lines"]
        print(f"generated {lines:,} lines in {time.perf_counter() - started:.0f} s (not timed)", flush=True)
        day = str(src.logs(DATE))

        ref = best_of(args.repeat, lambda: spark.read.text(day).count())
        copy_s = best_of(args.repeat, lambda: spark.read.text(day).write.mode("overwrite").parquet(
            str(work / "copy")))
        ingest_args = ingest.build_parser().parse_args(
            ["--date", DATE, "--data-dir", str(dst.root), "--source", str(src.root / "logs")])
        ingest.check(ingest_args)
        ingest_s = best_of(args.repeat, lambda: ingest.run(spark, ingest_args))
        outcome: dict[str, int] = {}
        validate_s = best_of(args.repeat, lambda: outcome.update(validate_day(spark, dst, DATE)))
        schema = ("user_id string, device string, content_id string, duration string, timestamp string, "
                  "edge_id string, _corrupt string")
        from_json_s = best_of(args.repeat, lambda: spark.read.text(day).select(
            F.from_json("value", schema, {"columnNameOfCorruptRecord": "_corrupt"}).alias("r")
        ).where("r._corrupt IS NULL AND r.user_id IS NOT NULL").count())
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()

    assert sum(outcome.values()) == lines, (outcome, lines)
    rows = {"reference": ref, "copy": copy_s, "ingest": ingest_s, "validate": validate_s, "from_json": from_json_s}
    print(f"\n{lines:,} lines on {args.master}, best of {args.repeat}")
    print("| step | seconds | lines per second | x reference |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.1f} | {lines / seconds:,.0f} | {seconds / ref:.1f} |")
    result = {"date": dt.date.today().isoformat(), "lines": lines, "master": args.master, "repeat": args.repeat,
              "cpus": os.cpu_count(), "outcome": outcome,
              "seconds": {k: round(v, 2) for k, v in rows.items()},
              "lines_per_second": {k: round(lines / v) for k, v in rows.items()},
              "ratio_to_reference": {k: round(v / ref, 2) for k, v in rows.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
