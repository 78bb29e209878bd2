"""spark-submit entry point: the features job (see edgecache.jobs.features)."""

import sys

from edgecache.jobs.features import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
