"""How the simulator answers: DLI-shaped JSON bodies and errors, and a reset in place of an answer.

Handlers raise `DliFailure`; the outermost middleware (`gateway.frame`) turns it into the error body
DLI's error_codes.rst shows, `{"error_code": ..., "error_msg": ...}`, with the failure's HTTP status.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from aiohttp import web

__all__ = [
    "DliFailure",
    "NoAnswer",
    "bad_request",
    "error_response",
    "json_response",
    "reset_connection",
]


class DliFailure(Exception):
    """An error answer in DLI's shape: `{"error_code": ..., "error_msg": ...}` with an HTTP status.

    `is_success`, when given, goes into the body too (first), the way some DLI services add it.
    """

    def __init__(self, status: int, code: str, message: str, *, is_success: bool | str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.is_success = is_success

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, is_success=self.is_success)


class NoAnswer(web.Response):
    """Stands for a connection that was reset instead of answered (aiohttp cannot write it: fine)."""


def json_response(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    is_success: bool | str | None = None,
) -> web.Response:
    payload: dict[str, Any] = {} if is_success is None else {"is_success": is_success}
    payload.update(error_code=code, error_msg=message)
    return json_response(status, payload, headers)


def bad_request(message: str) -> DliFailure:
    """400 DLI.0001, DLI's answer to a parameter it does not accept."""
    return DliFailure(400, "DLI.0001", message)


def reset_connection(request: web.Request) -> web.Response:
    """Abort the TCP connection with an RST (SO_LINGER 0), the way a crashing backend drops it."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return NoAnswer(status=500)
