"""spark-submit entry point: generate one day of viewing logs (see edgecache.simulate.generate_logs)."""

import sys

from edgecache.simulate.generate_logs import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
