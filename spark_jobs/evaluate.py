"""spark-submit entry point: the evaluate job (see edgecache.jobs.evaluate)."""

import sys

from edgecache.jobs.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
