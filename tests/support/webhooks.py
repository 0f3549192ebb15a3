"""An HTTP server on 127.0.0.1 standing in for a webhook: it records every POST and answers as
told, for the tests of alerts."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Post:
    path: str
    content_type: str
    body: dict[str, Any]


@dataclass
class Sink:
    """An HTTP server on 127.0.0.1 that records every POST and answers with `answer(post)`."""

    answer: Callable[[Post], tuple[int, str]] = lambda _post: (200, "ok")
    posts: list[Post] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> Sink:
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                post = Post(
                    self.path,
                    self.headers.get("Content-Type", ""),
                    json.loads(self.rfile.read(length)),
                )
                sink.posts.append(post)
                status, text = sink.answer(post)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
