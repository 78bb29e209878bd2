"""`make test` checks the Debian tools the tests need, from the list .ci/run installs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _copy_with_list(tmp_path: Path, lines: str) -> Path:
    (tmp_path / ".ci").mkdir()
    script = tmp_path / ".ci" / "system-tools"
    shutil.copy(ROOT / ".ci" / "system-tools", script)
    (tmp_path / ".ci" / "system-packages").write_text(lines)
    return script


def _run(script: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # a PATH with `id` and nothing else: no apt-get, so nothing is installed even as root
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").symlink_to(shutil.which("id"))
    return subprocess.run(["/bin/bash", str(script)], env={"PATH": str(bin_dir)}, capture_output=True, text=True)


def test_a_missing_tool_is_named_with_one_install_line_and_exit_2(tmp_path):
    script = _copy_with_list(tmp_path, "# a comment\nid  coreutils\nno-such-tool-1  pkg-one\n"
                                       "no-such-tool-2  pkg-two\nno-such-tool-3  pkg-one\n")
    out = _run(script, tmp_path)
    assert out.returncode == 2
    assert "no-such-tool-1 no-such-tool-2 no-such-tool-3" in out.stderr
    [install] = [line for line in out.stderr.splitlines() if "apt-get install" in line]
    assert install.endswith("apt-get install -y --no-install-recommends pkg-one pkg-two")  # each package once
    assert "coreutils" not in out.stderr


def test_nothing_missing_is_silent_success(tmp_path):
    out = _run(_copy_with_list(tmp_path, "id  coreutils\n"), tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_ci_and_make_test_use_the_one_list():
    """.ci/run installs through the same script `make test` runs first; this machine has every
    tool on the list (CI installs them), which is what lets no test skip for one."""
    assert ".ci/system-tools" in (ROOT / ".ci" / "run").read_text()
    make = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert ".ci/system-tools" in make.stdout
    out = subprocess.run([str(ROOT / ".ci" / "system-tools")], capture_output=True, text=True,
                         env={**os.environ, "PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
