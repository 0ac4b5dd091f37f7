"""A loopback HTTP server (127.0.0.1 only) that serves fixture files the way real servers fail:
honouring ``Range``, or dropping the connection, stalling, answering 404 or 503, or ignoring
``Range``. Every request is recorded, so a test can check that a download resumed where it stopped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """How to serve one path. ``drop_after``: bytes sent before the connection is closed, per
    request in turn (None = send everything); ``stall_after``: bytes sent before going silent for
    ``stall_seconds``, per request in turn; ``status``: an error status per request in turn (then
    200); ``ranges``: honour ``Range`` (False: always send the whole file with 200)."""

    body: bytes
    drop_after: list[int | None] = field(default_factory=list)
    stall_after: list[int | None] = field(default_factory=list)
    stall_seconds: float = 5.0
    status: list[int] = field(default_factory=list)
    ranges: bool = True
    length: int | None = None  # the Content-Length to claim (default: the bytes this answer holds)


class Loopback:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range")))
                route = owner.routes.get(self.path.split("?")[0])
                if route is None:
                    self._answer(404, b"not found")
                    return
                if route.status:
                    code = route.status.pop(0)
                    self._answer(code, b"try later")
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and route.ranges and wanted.startswith("bytes="):
                    start = int(wanted[6:].split("-")[0])
                    if start >= len(route.body):
                        self._answer(416, b"")
                        return
                body = route.body[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(route.body) - 1}/{len(route.body)}")
                self.send_header("Content-Length", str(route.length if route.length is not None else len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                drop = route.drop_after.pop(0) if route.drop_after else None
                stall = route.stall_after.pop(0) if route.stall_after else None
                cut = min(x for x in (drop, stall, len(body)) if x is not None)
                try:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    if stall is not None and cut == stall:
                        owner.stop.wait(route.stall_seconds)
                        return
                    if drop is None:
                        return
                except (BrokenPipeError, ConnectionResetError):
                    return
                self.close_connection = True

            def _answer(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> Loopback:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        time.sleep(0)
