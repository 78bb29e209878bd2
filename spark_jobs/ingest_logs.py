"""spark-submit entry point: the ingest job (see edgecache.pipeline.ingest_logs)."""

import sys

from edgecache.pipeline.ingest_logs import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
