"""Asking the webserver to load the code location again, so that a project added to the registry
while Dagster runs gets its assets without anyone pressing Reload.

Why through the webserver: the sensor that notices the new project runs inside the code server
that must be replaced, and only the process that started that server can replace it. With
`orch up` (`dagster dev`) that is the code-server proxy the webserver talks to; its GraphQL
`reloadWorkspace` mutation restarts the server, the webserver follows at once and the daemon
within its workspace refresh (a minute). Without a webserver (a bare `dagster-daemon`), the
daemon must be restarted, which the log says.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Mapping

WEBSERVER_URL_VAR = "ORCH_WEBSERVER_URL"
RELOAD_MUTATION = "mutation { reloadWorkspace { __typename } }"
RELOAD_TIMEOUT_S = 120


def request_reload(environ: Mapping[str, str]) -> str:
    """Ask for a reload in the background (the caller's own server is the one replaced); what
    was done, for the log."""
    url = environ.get(WEBSERVER_URL_VAR)
    if not url:
        return (
            f"{WEBSERVER_URL_VAR} is not set, so the code location cannot be reloaded from here: "
            "press Reload in the UI (Deployment > Code locations) or restart the daemon"
        )
    endpoint = url.rstrip("/") + "/graphql"
    threading.Thread(target=_post, args=(endpoint,), name="orch-reload", daemon=True).start()
    return f"asked {endpoint} to reload the code location"


def _post(endpoint: str) -> None:
    request = urllib.request.Request(
        endpoint,
        data=json.dumps({"query": RELOAD_MUTATION}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=RELOAD_TIMEOUT_S) as response:
            response.read()
    except OSError:
        pass  # the next tick asks again if the project is still missing
