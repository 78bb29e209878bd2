"""The edge API's shared token: where the service and its clients find it.

Requests that change what a cache holds (``POST /deliver``) carry
``Authorization: Bearer <token>``. The token comes from, in order:

1. ``$EDGECACHE_API_TOKEN``;
2. the file named by ``$EDGECACHE_API_TOKEN_FILE`` (a compose or Kubernetes secret);
3. ``<local dir>/api_token``, which ``edgecache serve`` creates (mode 0600, random) when
   none of the above is set, so a local service and a local replay agree without set-up.

A token must be at least ``MIN_LENGTH`` characters; placeholders are refused.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from edgecache.settings import Settings

MIN_LENGTH = 16
PLACEHOLDERS = {"change-me", "changeme", "password", "secret", "token", "admin"}


class TokenError(ValueError):
    """No usable token: the message says where one was looked for."""


def default_path() -> Path:
    return Settings.from_env().local_dir / "api_token"


def _checked(token: str, where: str) -> str:
    token = token.strip()
    if token.lower() in PLACEHOLDERS or len(token) < MIN_LENGTH:
        raise TokenError(f"the API token from {where} is a placeholder or shorter than {MIN_LENGTH} characters")
    return token


def load_token(create: bool = False) -> str:
    """The configured token; with ``create``, make the local one when nothing is configured."""
    if os.environ.get("EDGECACHE_API_TOKEN"):
        return _checked(os.environ["EDGECACHE_API_TOKEN"], "$EDGECACHE_API_TOKEN")
    if os.environ.get("EDGECACHE_API_TOKEN_FILE"):
        path = Path(os.environ["EDGECACHE_API_TOKEN_FILE"])
        try:
            return _checked(path.read_text(), str(path))
        except OSError as exc:
            raise TokenError(f"cannot read the API token file {path}: {exc.strerror}") from None
    path = default_path()
    if path.exists():
        return _checked(path.read_text(), str(path))
    if not create:
        raise TokenError(
            f"no API token: set $EDGECACHE_API_TOKEN or $EDGECACHE_API_TOKEN_FILE, "
            f"or start `edgecache serve` once to create {path}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL: two services starting at once must not each write a different token
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _checked(path.read_text(), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def authorized(header: str | bytes | None, token: str) -> bool:
    """Whether an Authorization header carries the token (compared in constant time)."""
    if header is None:
        return False
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def auth_header(token: str | None = None) -> dict[str, str]:
    """The header a client sends."""
    return {"Authorization": f"Bearer {token or load_token()}"}
