"""`GET /` on the daemon: the status page, for people (`exporter.status_page` renders it).

The page carries no script and its Content-Security-Policy allows none, so even text that escaped
escaping could not run. JSON answers of `/batches...` and `/campaigns...` point back to it with a
`Link: </>; rel="status"` header.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from exporter.campaign.record import CampaignStore
from exporter.clock import SystemClock
from exporter.ports import BatchQueue, Clock, Ledger
from exporter.status_data import PageLimits, StatusSource
from exporter.status_page import render_status

__all__ = ["add_status_page"]

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LINKED = ("/batches", "/campaigns")


@web.middleware
async def _status_link(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON about batches and campaigns says where the page for people is."""
    response = await handler(request)
    if request.path.startswith(_LINKED) and not response.prepared:
        response.headers["Link"] = '</>; rel="status"'
    return response


def add_status_page(
    app: web.Application,
    queue: BatchQueue,
    ledger: Ledger,
    campaigns: CampaignStore,
    *,
    clock: Clock | None = None,
    limits: PageLimits | None = None,
    refresh_seconds: int = 10,
) -> None:
    """Serve the status page on `/` (call before the app starts: it adds a middleware)."""
    source = StatusSource(queue, ledger, campaigns, clock or SystemClock(), limits)

    async def page(_: web.Request) -> web.Response:
        html = render_status(await source.snapshot(), refresh_seconds=refresh_seconds)
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=_HEADERS)

    app.router.add_get("/", page)
    app.middlewares.append(_status_link)
