"""spark-submit entry point: the next day's logs with the day's workload (see edgecache.simulate.next_day_logs)."""

import sys

from edgecache.simulate.next_day_logs import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
