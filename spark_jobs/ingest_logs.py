"""spark-submit entry point: the ingest job (see edgecache.jobs.ingest)."""

import sys

from edgecache.jobs.ingest import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
