"""Loopback servers for tests: a static HTTP server with byte counting, range requests and injected faults.

Started and stopped by the test that uses it (a context manager); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class ServerLog:
    bytes_sent: Counter[str] = field(default_factory=Counter)  # path -> body bytes sent
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def paths(self, method: str = "GET") -> list[str]:
        return [p for m, p in self.requests if m == method]


@dataclass
class Faults:
    """What the server does wrong, by path: 'status:404', 'status:500', 'truncate', 'stall', or other bytes."""

    by_path: dict[str, str | bytes] = field(default_factory=dict)
    stall_seconds: float = 5.0


def _handler(root: Path, log: ServerLog, faults: Faults) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass

        def _file(self) -> Path | None:
            path = (root / self.path.split("?", 1)[0].lstrip("/")).resolve()
            if not str(path).startswith(str(root.resolve())) or not path.is_file():
                return None
            return path

        def _send(self, body: bytes, head_only: bool) -> None:
            path = self.path.split("?", 1)[0]
            fault = faults.by_path.get(path)
            if isinstance(fault, str) and fault.startswith("status:"):
                self.send_response(int(fault.split(":")[1]))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(fault, bytes):
                body = fault
            status, headers = 200, {"Accept-Ranges": "bytes"}
            match = _RANGE.match(self.headers.get("Range", ""))
            if match and not head_only:
                start = int(match.group(1))
                end = int(match.group(2)) + 1 if match.group(2) else len(body)
                end = min(end, len(body))
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
                body, status = body[start:end], 206
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if head_only:
                return
            if fault == "truncate":
                body = body[: len(body) // 2]
                self.close_connection = True
            if fault == "stall":
                self.wfile.write(body[:16])
                self.wfile.flush()
                time.sleep(faults.stall_seconds)
                self.close_connection = True
                return
            self.wfile.write(body)
            log.bytes_sent[path] += len(body)

        def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
            log.requests.append(("HEAD", self.path))
            self._serve(head_only=True)

        def do_GET(self) -> None:  # noqa: N802
            log.requests.append(("GET", self.path))
            self._serve(head_only=False)

        def _serve(self, head_only: bool) -> None:
            path = self._file()
            if path is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send(path.read_bytes(), head_only)

    return Handler


@contextmanager
def static_server(root: Path, faults: Faults | None = None) -> Iterator[tuple[str, ServerLog]]:
    """Serve ``root`` on 127.0.0.1 (a free port) until the block ends; yields (base URL, log)."""
    log = ServerLog()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(root, log, faults or Faults()))
    server.daemon_threads = True
    server.block_on_close = False  # a stalled handler must not hold up the end of the test
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def tree_size(root: Path, relpaths: list[str]) -> int:
    return sum(os.path.getsize(root / p) for p in relpaths)
