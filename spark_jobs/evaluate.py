"""spark-submit entry point: the evaluate job (see edgecache.evaluation.evaluate)."""

import sys

from edgecache.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
