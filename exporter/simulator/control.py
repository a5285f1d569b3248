"""The control endpoints under `/_sim/`: read or change the fault knobs, read or zero the counters.

`GET|POST /_sim/faults` (read or change knobs), `GET /_sim/stats` (counters, see `SimStats.snapshot` and
`SimulatorState.snapshot`), `POST /_sim/reset` (zero the counters and the throttle window, reseed the
dice, empty the target projects down to their seeded names) and `GET /_sim/projects/{project_id}/jobs`
(a target project's `{"jobs": {name: job_id}}`: the truth a migration's job map is compared with).
Credentials (`keys.py`): `GET /_sim/keys` (labels, states, use counts), `POST /_sim/keys` (accept a key:
`{"ak", "sk", "security_token"?, "label"?, "ttl_seconds"?}`, answers its label), `POST
/_sim/keys/{label}/disable` and `POST /_sim/tokens/expire` (every issued IAM token ends now). They need
no authentication and are neither throttled nor faulted.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from exporter.simulator.answers import json_response
from exporter.simulator.state import STATE

__all__ = [
    "disable_key",
    "expire_tokens",
    "get_faults",
    "get_keys",
    "get_project_jobs",
    "get_stats",
    "post_faults",
    "post_key",
    "post_reset",
]


async def get_faults(request: web.Request) -> web.Response:
    return json_response(200, request.app[STATE].knobs.model_dump())


async def post_faults(request: web.Request) -> web.Response:
    """Change fault knobs: a JSON object of knob -> value (`p_500` or `sim_p_500`)."""
    try:
        changes = json.loads(await request.read())
    except ValueError:
        changes = None
    if not isinstance(changes, dict):
        return json_response(400, {"error": "send a JSON object of knob -> value"})
    try:
        knobs = request.app[STATE].set_faults(changes)
    except ValueError as error:
        return json_response(400, {"error": str(error)})
    return json_response(200, knobs.model_dump())


async def get_stats(request: web.Request) -> web.Response:
    return json_response(200, request.app[STATE].snapshot())


async def post_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return json_response(200, {"reset": True})


async def get_project_jobs(request: web.Request) -> web.Response:
    """A target project's jobs as name -> job ID; 404 for a project that is not a target here."""
    project_id = request.match_info["project_id"]
    project = request.app[STATE].targets.get(project_id)
    if project is None:
        return json_response(404, {"error": f"{project_id} is not a target project of this simulator"})
    return json_response(200, {"jobs": project.names()})


async def get_keys(request: web.Request) -> web.Response:
    return json_response(200, request.app[STATE].keys.snapshot())


async def post_key(request: web.Request) -> web.Response:
    """Accept one more key pair (a rotation: the new key before the old one is disabled)."""
    try:
        data: Any = json.loads(await request.read())
    except ValueError:
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("ak"), str)
        or not isinstance(data.get("sk"), str)
    ):
        return json_response(
            400, {"error": 'send {"ak": ..., "sk": ...} (security_token, label, ttl_seconds)'}
        )
    ttl = data.get("ttl_seconds")
    try:
        key = request.app[STATE].keys.add(
            data["ak"],
            data["sk"],
            label=data.get("label"),
            security_token=data.get("security_token"),
            expires_at=time.time() + float(ttl) if ttl is not None else None,
        )
    except (TypeError, ValueError) as error:
        return json_response(400, {"error": str(error)})
    return json_response(200, {"label": key.label})


async def disable_key(request: web.Request) -> web.Response:
    label = request.match_info["label"]
    if not request.app[STATE].keys.disable(label):
        return json_response(404, {"error": f"no key labelled {label!r}"})
    return json_response(200, {"disabled": label})


async def expire_tokens(request: web.Request) -> web.Response:
    return json_response(200, {"expired": request.app[STATE].keys.expire_tokens(time.time())})
