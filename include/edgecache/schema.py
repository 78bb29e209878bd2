"""The log record contract shared by the generator, the validator and the tests."""

from __future__ import annotations

import re

# Fields of one viewing-log record, in the seed tutorial's order plus edge_id.
LOG_FIELDS: tuple[str, ...] = ("user_id", "device", "content_id", "duration", "timestamp", "edge_id")

# Ids are short and plain so that no id can forge or collide with a Redis key.
# \z (end of input) in Java's regex, which Spark uses: its $ also matches before a final
# line break, so "U1\n" would pass. Python checks with fullmatch.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}\z"
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

DEVICES: tuple[str, ...] = ("TV", "Mobile", "Tablet", "Laptop", "Desktop")

TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"  # Spark datetime pattern
TIMESTAMP_STRFTIME = "%Y-%m-%d %H:%M:%S"  # the same, for Python


def is_valid_id(value: str) -> bool:
    """True when ``value`` may be used as a user, content or edge id."""
    return bool(ID_RE.fullmatch(value))
