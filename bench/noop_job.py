"""Reference Spark job for the benchmark: start a session, run one trivial action, stop.

Its wall time under spark-submit is the fixed cost every Spark task of the DAG pays.
"""

import sys

from edgecache.pipeline.spark import get_spark


def main() -> int:
    spark = get_spark("edgecache-bench-noop")
    spark.range(1).count()
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
