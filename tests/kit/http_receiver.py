"""A real HTTP server on loopback that records what it is sent (webhook and Telegram receivers in tests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """The requests a :func:`receiver` got, and the replies it is told to give."""

    url: str = ""
    requests: list[tuple[str, Any]] = field(default_factory=list)  # (path, JSON body)
    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # consumed first, then 200 {"ok": true}
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def receiver() -> Iterator[Received]:
    """Serve on 127.0.0.1 (a free port) until the block ends."""
    got = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
            with got.lock:
                got.requests.append((self.path, body))
                status, reply = got.replies.pop(0) if got.replies else (200, {"ok": True})
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
