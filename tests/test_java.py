"""A missing Java gives a clear message, not a JVM stack trace."""

from __future__ import annotations

import os
import subprocess
import sys

from edgecache.pipeline.java import java_major_version, require_java


def _env_without_java(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)  # an empty folder: no java on PATH
    return env


def test_java_check_reports_missing_java_with_install_hint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgecache.pipeline.java"], env=_env_without_java(tmp_path),
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Java was not found" in out.stderr
    assert "openjdk-17" in out.stderr
    assert "Traceback" not in out.stderr


def test_spark_job_without_java_exits_cleanly(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "edgecache.cli", "generate", "--date", "2025-04-12", "--data-dir", str(tmp_path)],
        env=_env_without_java(tmp_path), capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert "Java was not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_java_on_this_machine_is_new_enough():
    assert java_major_version(require_java()) >= 17
