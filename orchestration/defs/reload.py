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
#: Reloading one code location (a shard, `sharding.py`): the others are left as they are.
RELOAD_LOCATION_MUTATION = (
    "mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) "
    "{ __typename ... on PythonError { message } ... on UnauthorizedError { message } "
    "... on RepositoryLocationNotFound { message } ... on ReloadNotSupported { message } } }"
)
RELOAD_TIMEOUT_S = 120
RELOAD_BY_HAND = "press Reload in the UI (Deployment > Code locations) or restart the daemon"


def request_reload(
    environ: Mapping[str, str], *, wait: bool = False, location: str | None = None
) -> str:
    """Ask the webserver at ORCH_WEBSERVER_URL to reload the code location (only `location`
    when it is named, else every location of the workspace); what was done, for the log.

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
    what = f"the code location {location}" if location else "the code location"
    if not wait:
        threading.Thread(
            target=_post, args=(endpoint, location), name="orch-reload", daemon=True
        ).start()
        return f"asked {endpoint} to reload {what}"
    problem = _post(endpoint, location)
    if problem is not None:
        return f"could not reload {what} through {endpoint} ({problem}): " + RELOAD_BY_HAND
    return f"{endpoint} reloaded {what}"


def _post(endpoint: str, location: str | None = None) -> str | None:
    """Post the mutation; None when the webserver reloaded, else what went wrong."""
    query, variables, field, done = (
        (RELOAD_MUTATION, None, "reloadWorkspace", "Workspace")
        if location is None
        else (
            RELOAD_LOCATION_MUTATION,
            {"name": location},
            "reloadRepositoryLocation",
            "WorkspaceLocationEntry",
        )
    )
    try:
        data = post_graphql(endpoint, query, variables, RELOAD_TIMEOUT_S)
    except WebserverError as exc:
        return str(exc)  # a sensor's next tick asks again while the change is still missing
    result = data.get(field)
    if isinstance(result, dict) and result.get("__typename") == done:
        return None
    if isinstance(result, dict) and result.get("message"):
        return f"{result.get('__typename')}: {result['message']}"
    return f"unexpected answer {json.dumps(data)[:300]}"
