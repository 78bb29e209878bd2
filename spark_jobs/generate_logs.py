"""spark-submit entry point: generate one day of viewing logs (see edgecache.jobs.generate)."""

import sys

from edgecache.jobs.generate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
