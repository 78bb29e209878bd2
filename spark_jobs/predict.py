"""spark-submit entry point: the predict job (see edgecache.jobs.predict)."""

import sys

from edgecache.jobs.predict import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
