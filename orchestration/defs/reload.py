"""Asking the webserver to load the code location again, so that a project added to the registry
while Dagster runs gets its assets, and a changed dependency graph its lineage, without anyone
pressing Reload.

Why through the webserver: the sensor that notices the change runs inside the code server that
must be replaced, and only the process that started that server can replace it. With `orch up`
(`dagster dev`) that is the code-server proxy the webserver talks to; its GraphQL
`reloadWorkspace` mutation restarts the server, the webserver follows at once and the daemon
within its workspace refresh (a minute). Without a webserver (a bare `dagster-daemon`), the
daemon must be restarted, which the log says.

No Dagster import: `orch deps detect` asks for a reload through the same function.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping

from orchestration.settings import WEBSERVER_URL_VAR
from orchestration.webserver import WebserverError, post_graphql

RELOAD_MUTATION = (
    "mutation { reloadWorkspace { __typename "
    "... on PythonError { message } ... on UnauthorizedError { message } } }"
)
RELOAD_TIMEOUT_S = 120
RELOAD_BY_HAND = "press Reload in the UI (Deployment > Code locations) or restart the daemon"


def request_reload(environ: Mapping[str, str], *, wait: bool = False) -> str:
    """Ask the webserver at ORCH_WEBSERVER_URL to reload the code location; what was done, for
    the log.

    A sensor asks in the background (`wait=False`): its own code server is the one replaced. A
    command that ends right after asking waits for the answer (`wait=True`), so it can say
    whether the reload happened.
    """
    url = environ.get(WEBSERVER_URL_VAR)
    if not url:
        return (
            f"{WEBSERVER_URL_VAR} is not set, so the code location cannot be reloaded from here: "
            + RELOAD_BY_HAND
        )
    endpoint = url.rstrip("/") + "/graphql"
    if not wait:
        threading.Thread(target=_post, args=(endpoint,), name="orch-reload", daemon=True).start()
        return f"asked {endpoint} to reload the code location"
    problem = _post(endpoint)
    if problem is not None:
        return f"could not reload the code location through {endpoint} ({problem}): " + (
            RELOAD_BY_HAND
        )
    return f"{endpoint} reloaded the code location"


def _post(endpoint: str) -> str | None:
    """Post the mutation; None when the webserver reloaded, else what went wrong."""
    try:
        data = post_graphql(endpoint, RELOAD_MUTATION, None, RELOAD_TIMEOUT_S)
    except WebserverError as exc:
        return str(exc)  # a sensor's next tick asks again while the change is still missing
    result = data.get("reloadWorkspace")
    if isinstance(result, dict) and result.get("__typename") == "Workspace":
        return None
    if isinstance(result, dict) and result.get("message"):
        return f"{result.get('__typename')}: {result['message']}"
    return f"unexpected answer {json.dumps(data)[:300]}"
