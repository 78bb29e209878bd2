"""The package as a zip for Spark executors that do not have it installed.

On a cluster (``spark://``, YARN, Kubernetes) the jobs' Python code runs in executors on
other machines. ``get_spark`` ships this zip with ``SparkContext.addPyFile``, so
the executors import the same ``edgecache`` the driver runs; its third-party libraries
(numpy, pandas, pyarrow) must be in the executors' Python (see the README).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # include/edgecache
ZIP_NAME = "edgecache.zip"
FIXED_TIME = (2025, 1, 1, 0, 0, 0)  # the same bytes for the same code


def package_zip(dest_dir: Path) -> Path:
    """Write ``edgecache.zip`` (every .py file of the package, under ``edgecache/``) into
    ``dest_dir``; return its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / ZIP_NAME
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(PACKAGE.rglob("*.py")):
            info = zipfile.ZipInfo(str(Path("edgecache") / path.relative_to(PACKAGE)), FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    tmp.replace(out)
    return out
