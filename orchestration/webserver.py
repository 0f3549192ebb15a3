"""Asking the Dagster webserver over its GraphQL endpoint, with the standard library only, so
that the commands and sensors that do (a reload, a new task's run) import nothing of Dagster."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any


class WebserverError(Exception):
    """The webserver did not answer, or not with GraphQL data; the message says which."""


def post_graphql(
    endpoint: str, query: str, variables: Mapping[str, Any] | None, timeout_s: float
) -> dict[str, Any]:
    """The `data` of the answer to `query` posted to `endpoint` (`<webserver>/graphql`)."""
    request = urllib.request.Request(
        endpoint,
        data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise WebserverError(f"{endpoint}: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise WebserverError(f"unexpected answer {json.dumps(body)[:300]}")
    return body["data"]
