"""Tests for the WSGI app; run with `python3 -m unittest discover -s tests -t .`."""

import json
import sys
import unittest
from pathlib import Path
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from acme_api.app import application


def call(path: str, method: str = "GET") -> tuple[str, dict]:
    """Invoke the WSGI app in-process and return (status, decoded JSON body)."""
    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": method}
    setup_testing_defaults(environ)
    captured: dict = {}

    def start_response(status: str, headers: list) -> None:
        captured["status"] = status
        captured["headers"] = dict(headers)

    body = b"".join(application(environ, start_response))
    assert captured["headers"]["Content-Type"] == "application/json"
    return captured["status"], json.loads(body)


class ApplicationTest(unittest.TestCase):
    def test_health(self) -> None:
        status, payload = call("/health")
        self.assertEqual(status, "200 OK")
        self.assertEqual(payload["status"], "ok")

    def test_lists_articles_with_slugs(self) -> None:
        status, payload = call("/articles")
        self.assertEqual(status, "200 OK")
        self.assertIn("hello-world", [a["slug"] for a in payload["articles"]])

    def test_fetches_one_article(self) -> None:
        status, payload = call("/articles/hello-world/")
        self.assertEqual(status, "200 OK")
        self.assertEqual(payload["title"], "Hello, World!")

    def test_unknown_article_is_404(self) -> None:
        status, payload = call("/articles/nope")
        self.assertEqual(status, "404 Not Found")
        self.assertIn("nope", payload["error"])

    def test_post_is_rejected(self) -> None:
        status, _ = call("/articles", method="POST")
        self.assertEqual(status, "405 Method Not Allowed")


if __name__ == "__main__":
    unittest.main()
