"""`POST /v3/auth/tokens`: IAM's password authentication (KeystoneCreateUserTokenByPassword), so
`EXPORTER_CREDENTIALS=iam-token` runs against this machine.

The body is IAM's: `auth.identity.methods = ["password"]`, `auth.identity.password.user` with `name`,
`password` and `domain.name`, and `auth.scope.project.id` (or `.name`, a region's main project). The user
is `sim_iam_user` of account `sim_iam_domain` with password `sim_iam_password`; a token scoped to a project
served here is answered `201` with `X-Subject-Token` and `token.expires_at`, valid
`sim_token_ttl_seconds` (the DLI routes accept it until then, or until `POST /_sim/tokens/expire`). A
wrong user or password is IAM's `401`; a body of another shape `400`. Neither throttled nor faulted.

A workload identity's exchange (`EXPORTER_CREDENTIALS=workload-identity`, the SDK's `FederalAccessor`)
is `federation.py`'s.
"""

from __future__ import annotations

import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from exporter.simulator.answers import json_response
from exporter.simulator.state import STATE, SimulatorState

__all__ = ["TOKENS_ROUTE", "create_token", "dig", "iam_error", "iso"]

TOKENS_ROUTE = "iam_tokens"


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iam_error(status: int, title: str, message: str) -> web.Response:
    return json_response(status, {"error": {"code": status, "title": title, "message": message}})


def dig(data: Any, *path: str) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _scope(state: SimulatorState, data: Any) -> str | None:
    """The project the token is for: its ID, or the region's main project by name."""
    project = dig(data, "auth", "scope", "project")
    if not isinstance(project, dict):
        return None
    if project.get("id") in state.projects:
        return str(project["id"])
    region = state.settings.sim_region or state.settings.obs_region
    return state.settings.project_id if project.get("name") == region else None


def _password_ok(state: SimulatorState, user: Any) -> bool:
    settings = state.settings
    if not isinstance(user, dict) or settings.sim_iam_password is None:
        return False
    expected = settings.sim_iam_password.get_secret_value().encode()
    given = str(user.get("password", "")).encode()
    names = (user.get("name"), dig(user, "domain", "name"))
    return names == (settings.sim_iam_user, settings.sim_iam_domain) and hmac.compare_digest(given, expected)


async def create_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        data = json.loads(await request.read())
    except ValueError:
        data = None
    if dig(data, "auth", "identity", "methods") != ["password"]:
        return iam_error(400, "Bad Request", "The request body is invalid.")
    if not _password_ok(state, dig(data, "auth", "identity", "password", "user")):
        return iam_error(401, "Unauthorized", "The username or password is wrong.")
    project_id = _scope(state, data)
    if project_id is None:
        return iam_error(400, "Bad Request", "The scope is invalid: no such project.")
    now = time.time()
    token, expires_at = state.keys.issue_token(now, state.settings.sim_token_ttl_seconds, project_id)
    body = {
        "token": {
            "expires_at": iso(expires_at),
            "issued_at": iso(now),
            "methods": ["password"],
            "project": {"id": project_id},
            "user": {"name": state.settings.sim_iam_user, "domain": {"name": state.settings.sim_iam_domain}},
        }
    }
    return json_response(201, body, headers={"X-Subject-Token": token})
