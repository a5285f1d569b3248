"""A tiny HTTP reverse proxy on 127.0.0.1 whose misbehaviour a test controls.

Put between the exporter and a real server (moto's S3 server, the DLI simulator), it lets a test make
that server fail in ways the server cannot be asked to: OBS answering 403 or 503, a body rewritten into
malformed JSON after the work was done, a server that goes away (refuses connections) and comes back
on the same port. A `Rule` sees each request and returns an action: `Forward` (optionally rewriting the
answer's body), `Answer` (a canned reply, upstream never sees the request) or `Drop` (TCP reset).

Headers pass through unchanged (the Host header too, so AK/SK signatures made for the relay's address
still verify upstream); hop-by-hop headers are not forwarded. With `ssl_context` it serves HTTPS, which
the TLS tests use as a self-signed front for plain-HTTP servers.
"""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import yarl
from aiohttp import web

from exporter.simulator.app import reset_connection

__all__ = ["Answer", "Drop", "Forward", "Relay", "RelayRequest", "Rule", "forward_all", "running_relay"]

# Hop-by-hop headers (RFC 9110 section 7.6.1) and the framing ones aiohttp recomputes for the bytes it sends.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass(frozen=True, slots=True)
class RelayRequest:
    """What a rule may look at: the method, the raw path (with query) and the request headers."""

    method: str
    path_qs: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Forward:
    """Pass the request upstream; `rewrite(status, body)` may replace the answer's body."""

    rewrite: Callable[[int, bytes], bytes] | None = None
    label: str = "forwarded"


@dataclass(frozen=True, slots=True)
class Answer:
    """Reply without asking upstream."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    label: str = "answered"


@dataclass(frozen=True, slots=True)
class Drop:
    """Reset the connection instead of answering."""

    label: str = "dropped"


Action = Forward | Answer | Drop
Rule = Callable[[RelayRequest], Action]


def forward_all(_request: RelayRequest) -> Action:
    """The default rule: a transparent proxy."""
    return Forward()


class Relay:
    """The running proxy: its URL, its rule (replaceable at any time), counters, and an outage switch."""

    def __init__(self, upstream: str, rule: Rule, ssl_context: ssl.SSLContext | None) -> None:
        self.upstream = upstream.rstrip("/")
        self.rule = rule
        self.counts: Counter[str] = Counter()
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._down = False
        self.port = 0

    def __repr__(self) -> str:
        return f"<Relay {self.url} -> {self.upstream} down={self._down} counts={dict(self.counts)}>"

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def go_down(self) -> None:
        """Like a server being restarted: refuse new connections and reset requests on open ones."""
        self._down = True
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def come_back(self) -> None:
        """Listen again on the same port."""
        self._down = False
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl_context)
        await self._site.start()
        self.port = int(self._runner.addresses[-1][1])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._down:
            self.counts["down"] += 1
            return reset_connection(request)
        seen = RelayRequest(request.method, request.raw_path, dict(request.headers))
        action = self.rule(seen)
        self.counts[action.label] += 1
        if isinstance(action, Drop):
            return reset_connection(request)
        if isinstance(action, Answer):
            return web.Response(status=action.status, body=action.body, headers=action.headers)
        return await self._forward(request, action)

    async def _forward(self, request: web.Request, action: Forward) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        url = yarl.URL(self.upstream + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                answer_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED
                }
                length = upstream.headers.get("Content-Length")
        except (aiohttp.ClientError, TimeoutError):
            self.counts["upstream_unreachable"] += 1
            return reset_connection(request)
        if action.rewrite is not None:
            payload = action.rewrite(status, payload)
        if request.method == "HEAD" and length is not None:
            answer_headers["Content-Length"] = length  # HEAD has no body: keep the object's size
            return web.Response(status=status, headers=answer_headers)
        return web.Response(status=status, body=payload, headers=answer_headers)


@asynccontextmanager
async def running_relay(
    upstream: str, rule: Rule = forward_all, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Relay]:
    """A relay to `upstream` on a free 127.0.0.1 port for the duration of the block."""
    relay = Relay(upstream, rule, ssl_context)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
