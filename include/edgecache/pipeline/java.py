"""Find a Java runtime Spark 4 can use, and say clearly what to do when there is none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

MIN_JAVA = 17

INSTALL_HINT = (
    "Spark needs a Java Development Kit, version 17 or newer.\n"
    "  Debian/Ubuntu: sudo apt-get install openjdk-17-jdk-headless\n"
    "  macOS:         brew install openjdk@17\n"
    "Then make sure `java -version` works, or set JAVA_HOME to the JDK's folder."
)


class JavaNotFoundError(RuntimeError):
    """No usable Java runtime: the message says how to install one."""


def java_executable() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = os.path.join(home, "bin", "java")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("java")


def java_major_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise JavaNotFoundError(f"could not read the Java version from {java!r}:\n{text}\n{INSTALL_HINT}")
    major = int(m.group(1))
    # Java 8 and older report "1.8.0_..."
    return int(m.group(2)) if major == 1 and m.group(2) else major


def require_java() -> str:
    """Return the java executable, or raise JavaNotFoundError with install instructions."""
    java = java_executable()
    if java is None:
        raise JavaNotFoundError(f"Java was not found.\n{INSTALL_HINT}")
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise JavaNotFoundError(f"Java {major} was found at {java}, but Spark 4 needs {MIN_JAVA}+.\n{INSTALL_HINT}")
    return java


def main() -> int:
    try:
        java = require_java()
    except JavaNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"java: {java} (version {java_major_version(java)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
