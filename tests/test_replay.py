"""The replay driver against a real HTTP server that misbehaves on purpose.

The server below is a small stand-in for an edge service, on 127.0.0.1: it checks the
bearer token and answers each title in its own way (a decision, a 422, a 500, an HTML page
with 200), so every outcome the driver sorts replies into is met over real HTTP. The
driver runs as the ``edgecache replay`` command in a subprocess, as an operator runs it:
the exit code and stderr are what is checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgecache.serving.delivery.replay import classify, replay
from edgecache.layout import Layout

DATE = "2025-04-13"
TOKEN = "replay-test-token-7f3a9c1e5b"
EDGES = ("E1", "E2")

# title -> how the stand-in answers it (anything else: a decision, a hit for C-hit)
BAD_ID = "C-bad"  # 422, as the service answers a malformed id
CRASH = "C-crash"  # 500 with a plain-text body
HTML = "C-html"  # 200 with an HTML page, as a proxy in front of a service might send


@dataclass
class StandIn:
    """What the stand-in saw; its URL."""

    url: str = ""
    authorizations: list[str | None] = field(default_factory=list)  # one per request, GET / included
    delivered: list[dict] = field(default_factory=list)  # bodies of accepted POST /deliver
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(seen: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

        def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization")
            with seen.lock:
                seen.authorizations.append(header)
            if header != f"Bearer {TOKEN}":
                self._send(401, json.dumps({"detail": "missing or wrong bearer token"}))
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802
            # like the real service, GET / answers without a token; the header is recorded all the same
            with seen.lock:
                seen.authorizations.append(self.headers.get("Authorization"))
            self._send(200, json.dumps({"edges": list(EDGES)}))

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if self.path != "/deliver" or not self._authorized():
                return
            with seen.lock:
                seen.delivered.append(body)
            title = body["content_id"]
            if title == BAD_ID:
                self._send(422, json.dumps({"detail": "content_id: not an id"}))
            elif title == CRASH:
                self._send(500, "Internal Server Error", "text/plain")
            elif title == HTML:
                self._send(200, "<html><body>try again later</body></html>", "text/html")
            else:
                self._send(200, json.dumps({"hit": title == "C-hit", "degraded": False, "source": "edge"}))

    return Handler


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    seen = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    server.daemon_threads = True
    seen.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_logs(data_dir: Path, titles_by_edge: dict[str, list[str]]) -> Path:
    """One log file per edge, a request a second from 10:00, plus one line that is not JSON."""
    logs = Layout(data_dir).logs(DATE)
    for edge, titles in titles_by_edge.items():
        folder = logs / f"edge={edge}"
        folder.mkdir(parents=True)
        lines = [json.dumps({"user_id": f"U{i}", "device": "TV", "content_id": title, "duration": 5,
                             "timestamp": f"{DATE} 10:00:{i:02d}", "edge_id": edge})
                 for i, title in enumerate(titles)]
        (folder / "part-0.jsonl").write_text("\n".join([*lines, "not json"]) + "\n")
    return logs


def run_replay(data_dir: Path, url: str, env_extra: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    # no token from the caller's environment or project: only what the test gives
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECACHE_API_TOKEN")}
    env["EDGECACHE_LOCAL_DIR"] = str(data_dir / "local")
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "edgecache.cli", "replay", "--date", DATE, "--data-dir", str(data_dir),
         "--service", url, "--rate", "2000", "--duration", "30", *extra],
        env=env, capture_output=True, text=True, timeout=60,
    )


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and not re.search(r"^\w+(Error|Exception):", stderr, re.MULTILINE), stderr


# -- the reply's meaning, without a network ---------------------------------------------------

@pytest.mark.parametrize(("status", "raw", "expected"), [
    (200, b'{"hit": true}', ("decided", {"hit": True})),
    (200, b"<html>busy</html>", ("error", "200 not a JSON object")),
    (200, b"[1, 2]", ("error", "200 not a JSON object")),
    (200, b"\xff\xfe", ("error", "200 not a JSON object")),
    (422, b'{"detail": "bad id"}', ("rejected", "422")),
    (404, b"", ("rejected", "404")),
    (413, b"too large", ("rejected", "413")),
    (429, b"slow down", ("error", "429")),
    (500, b"Internal Server Error", ("error", "500")),
    (502, b"<html>Bad Gateway</html>", ("error", "502")),
    (401, b'{"detail": "no"}', ("refused", None)),
    (403, b"", ("refused", None)),
])
def test_classify(status: int, raw: bytes, expected: tuple) -> None:
    assert classify(status, raw) == expected


# -- over real HTTP -----------------------------------------------------------------------------

def test_mixed_replies_are_counted_by_status_and_fail_the_run(tmp_path: Path, stand_in: StandIn) -> None:
    write_logs(tmp_path, {"E1": ["C-hit", "C2", BAD_ID, CRASH, HTML, "C-hit"],
                          "E2": [CRASH, "C-hit", BAD_ID, BAD_ID]})
    result = run_replay(tmp_path, stand_in.url, {"EDGECACHE_API_TOKEN": TOKEN}, "--json")
    assert_no_traceback(result.stderr)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sent"] == 10
    assert (summary["hits"], summary["misses"], summary["degraded"]) == (3, 1, 0)
    assert summary["errors"] == {"500": 2, "200 not a JSON object": 1}
    assert summary["rejected_4xx"] == {"422": 3}
    assert summary["not_sent"] == {"bad_json": 2}
    assert summary["per_edge"]["E1"] == {"hits": 2, "decided": 3, "hit_ratio": pytest.approx(2 / 3)}
    # GET / and all ten POSTs carried the token
    assert stand_in.authorizations == [f"Bearer {TOKEN}"] * 11


def test_expected_rejections_alone_do_not_fail_the_run(tmp_path: Path, stand_in: StandIn) -> None:
    """The shipped logs hold malformed lines on purpose: their 422s are reported, not errors."""
    write_logs(tmp_path, {"E1": ["C-hit", BAD_ID, "C2"], "E2": [BAD_ID]})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = run_replay(tmp_path, stand_in.url, {"EDGECACHE_API_TOKEN_FILE": str(token_file)})
    assert_no_traceback(result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rejected by the service" in result.stdout and "{'422': 2}" in result.stdout
    assert "errors (server and transport; any fails the run): 0" in result.stdout
    assert set(stand_in.authorizations) == {f"Bearer {TOKEN}"}


def test_a_run_in_which_every_request_was_rejected_fails(tmp_path: Path, stand_in: StandIn) -> None:
    write_logs(tmp_path, {"E1": [BAD_ID, BAD_ID]})
    result = run_replay(tmp_path, stand_in.url, {"EDGECACHE_API_TOKEN": TOKEN})
    assert_no_traceback(result.stderr)
    assert result.returncode == 1
    assert "no request got a decision" in result.stdout


def test_a_refused_token_stops_the_run_with_one_line(tmp_path: Path, stand_in: StandIn) -> None:
    write_logs(tmp_path, {"E1": ["C-hit"] * 40, "E2": ["C2"] * 40})
    result = run_replay(tmp_path, stand_in.url, {"EDGECACHE_API_TOKEN": "another-token-of-enough-length"})
    assert_no_traceback(result.stderr)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: the edge service refused the token: HTTP 401 from {stand_in.url}/deliver")
    assert "missing or wrong bearer token" in errors[0]
    assert result.stdout == ""
    # it stopped instead of sending the other 80 requests to be refused as well: GET /, then
    # at most the one request each edge had in flight
    assert not stand_in.delivered and 2 <= len(stand_in.authorizations) <= 3
    assert set(stand_in.authorizations) == {"Bearer another-token-of-enough-length"}


def test_no_token_is_one_line_and_nothing_is_sent(tmp_path: Path, stand_in: StandIn) -> None:
    write_logs(tmp_path, {"E1": ["C-hit"]})
    result = run_replay(tmp_path, stand_in.url, {})
    assert_no_traceback(result.stderr)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no API token: set $EDGECACHE_API_TOKEN or $EDGECACHE_API_TOKEN_FILE, or start `edgecache serve` "
        f"once to create {tmp_path / 'local' / 'api_token'}"]
    assert stand_in.authorizations == []


def test_a_placeholder_token_is_refused_before_sending(tmp_path: Path, stand_in: StandIn) -> None:
    write_logs(tmp_path, {"E1": ["C-hit"]})
    result = run_replay(tmp_path, stand_in.url, {"EDGECACHE_API_TOKEN": "change-me"})
    assert_no_traceback(result.stderr)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "placeholder" in result.stderr
    assert stand_in.authorizations == []


def test_the_library_call_sends_the_given_token(tmp_path: Path, stand_in: StandIn) -> None:
    logs = write_logs(tmp_path, {"E1": ["C-hit", "C2"], "E2": [BAD_ID]})
    summary = replay([stand_in.url], logs, rate=1000, duration=10, progress=None, token=TOKEN)
    assert (summary["sent"], summary["hits"], summary["misses"]) == (3, 1, 1)
    assert summary["errors"] == {} and summary["rejected_4xx"] == {"422": 1}
    assert set(stand_in.authorizations) == {f"Bearer {TOKEN}"}
