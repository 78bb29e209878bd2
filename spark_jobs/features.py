"""spark-submit entry point: the features job (see edgecache.pipeline.features)."""

import sys

from edgecache.pipeline.features import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
