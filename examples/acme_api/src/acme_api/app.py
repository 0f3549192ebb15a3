"""WSGI application serving Acme articles as JSON (standard library only).

Run locally with:  python3 -m acme_api.app  (serves on http://127.0.0.1:8000)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from acme_api import __version__

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

ARTICLES: tuple[dict[str, str], ...] = (
    {"title": "Hello, World!", "body": "The first Acme article."},
    {"title": "Release notes 0.1", "body": "What changed in the first release."},
)


def _slugify(text: str) -> str:
    """Lowercase, ASCII-only slug; a stop-gap until acme_core.slugify is used here."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))


def _json(start_response: StartResponse, status: str, payload: object) -> list[bytes]:
    body = json.dumps(payload, sort_keys=True).encode("utf-8")
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Route GET /health, GET /articles and GET /articles/<slug>; everything else is 404/405."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/").rstrip("/") or "/"

    if method != "GET":
        return _json(start_response, "405 Method Not Allowed", {"error": "only GET is supported"})
    if path == "/health":
        return _json(start_response, "200 OK", {"status": "ok", "version": __version__})
    if path == "/articles":
        listing = [{"slug": _slugify(a["title"]), "title": a["title"]} for a in ARTICLES]
        return _json(start_response, "200 OK", {"articles": listing})
    if path.startswith("/articles/"):
        wanted = path.removeprefix("/articles/")
        for article in ARTICLES:
            if _slugify(article["title"]) == wanted:
                return _json(start_response, "200 OK", {"slug": wanted, **article})
        return _json(start_response, "404 Not Found", {"error": f"no article {wanted!r}"})
    return _json(start_response, "404 Not Found", {"error": f"no route for {path!r}"})


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, application) as server:
        server.serve_forever()
