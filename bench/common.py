"""Helpers shared by the benchmarks: run a command and measure its wall time and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def stage(name: str, data: Path, date: str, *args: str) -> None:
    """Run one ``edgecache`` stage for ``date`` on the data directory ``data``; exit on failure."""
    cmd = [str(ROOT / ".venv" / "bin" / "edgecache"), name, "--date", date, "--data-dir", str(data), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_results(path: Path, results: Any) -> None:
    """A benchmark's results as sorted JSON, and where they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"results in {path}")


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int  # summed over the process and all its children, sampled


def venv_env() -> dict[str, str]:
    """The environment for spark-submit: this interpreter's bin first, workers on it too."""
    return dict(os.environ, PYSPARK_PYTHON=sys.executable,
                PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))


def measure(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.1) -> Measured:
    """Run ``cmd`` to completion; raise on failure; return wall time and peak tree RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.decode()[-3000:]}")
    return Measured(time.perf_counter() - started, peak)


def bare_spark_submit(master: str) -> Measured:
    """The reference: spark-submit of a job that starts Spark, runs one trivial action, stops."""
    return measure(["spark-submit", "--master", master, "--conf", "spark.ui.enabled=false",
                    str(HERE / "noop_job.py")])
