"""spark-submit entry point: the predict job (see edgecache.pipeline.predict)."""

import sys

from edgecache.pipeline.predict import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
