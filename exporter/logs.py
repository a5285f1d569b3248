"""structlog set-up: JSON or console lines, context bound per batch/chunk, secrets redacted.

Redaction is a plain processor (event dict in, event dict out) placed last before rendering, so no
component can forget it.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from pydantic import SecretStr

__all__ = [
    "REDACTED",
    "configure_logging",
    "forget_secret",
    "log_asyncio_exception",
    "log_tasks",
    "redact",
    "redact_text",
    "register_secret",
    "render_json",
]

REDACTED = "***"
_SENSITIVE_KEY = re.compile(
    r"(^|_|-)(ak|sk|secret|password|passwd|token|securitytoken|authorization|credential|signature"
    r"|x-auth-token|x-security-token|x-subject-token|x-metadata-token|access[_-]?key)($|_|-)",
    re.IGNORECASE,
)
_SENSITIVE_TEXT = [
    re.compile(
        r"(SDK-HMAC-\w+|V11-HMAC-\w+)\s+Access=[^,\s]+,\s*SignedHeaders=[^,\s]+,\s*Signature=[0-9a-f]+"
    ),
    re.compile(
        r"(?i)(authorization|x-auth-token|x-security-token|x-subject-token|x-metadata-token|securitytoken"
        r"|password|secret)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    ),
    re.compile(r"(?i)(redis|rediss)://[^:@/\s]*:[^@/\s]+@"),
]
# One cheap search first: the three patterns above cannot match text without one of these.
_MAYBE_SENSITIVE = re.compile(r"(?i)hmac-|authorization|token|password|secret|://")
_known_secrets: set[str] = set()


@functools.lru_cache(maxsize=4096)
def _is_sensitive_key(key: str) -> bool:
    """Event keys repeat endlessly (`chunk`, `batch_id`, ...): decide once per key, not per line."""
    return _SENSITIVE_KEY.search(key) is not None


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a secret value so it is masked wherever it appears in a log line, even inside text."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value and len(value) >= 4:
        _known_secrets.add(value)
        _redact_short_text.cache_clear()  # answers given before this secret was known may hold it


def forget_secret(value: str) -> None:
    """Stop looking for a value that is no longer in use (a rotated key), so the list stays short; key
    names and patterns still mask it where it would show up in a secret's usual place."""
    _known_secrets.discard(value)


_SHORT_TEXT = 200


def redact_text(text: str) -> str:
    """Mask known secret values and anything shaped like a signature, token header or URL password."""
    return _redact_short_text(text) if len(text) <= _SHORT_TEXT else _redact_any_text(text)


@functools.lru_cache(maxsize=4096)
def _redact_short_text(text: str) -> str:
    """Short values repeat on every line (batch and project IDs, event names): check each once."""
    return _redact_any_text(text)


def _redact_any_text(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if _MAYBE_SENSITIVE.search(text) is None:
        return text
    text = _SENSITIVE_TEXT[0].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _SENSITIVE_TEXT[1].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _SENSITIVE_TEXT[2].sub(lambda m: f"{m.group(1)}://{REDACTED}@", text)


_PLAIN_TYPES = frozenset({type(None), bool, int, float})


def _redact_value(key: str, value: Any) -> Any:
    kind = type(value)  # exact-type checks first: this runs for every value of every line
    if kind in _PLAIN_TYPES:
        return value
    if kind is str:
        return REDACTED if _is_sensitive_key(key) else redact_text(value)
    if isinstance(value, bool | int | float):  # subclasses, such as an IntEnum
        return value
    if _is_sensitive_key(key) or isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):  # dicts, and read-only ones such as aiohttp's CIMultiDictProxy
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) == 2 and isinstance(value[0], str):  # a (name, value) pair, e.g. one header
            return [value[0], _redact_value(value[0], value[1])]
        return [_redact_value(key, v) for v in value]
    # Anything else (exceptions, aiohttp's RequestInfo, ...) would be rendered by repr(), unredacted.
    return redact_text(repr(value))


# Written by structlog's own processors before redaction (add_log_level, TimeStamper): nothing to mask.
_STAMPED_KEYS = frozenset({"level", "timestamp"})


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys and secret values anywhere in the event."""
    return {
        key: value if key in _STAMPED_KEYS else _redact_value(key, value) for key, value in event_dict.items()
    }


def render_json(event: Mapping[str, Any], **_options: Any) -> str:
    """One compact JSON line: orjson (five times the stdlib's speed on these lines, and the daemon writes
    four per chunk); the stdlib for the rare value orjson refuses, such as an int beyond 64 bits."""
    try:
        return orjson.dumps(event, default=repr).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(event, default=repr, separators=(",", ":"))


def configure_logging(
    fmt: str = "json",
    level: str = "info",
    stream: TextIO | None = None,
    secrets: Iterable[str | SecretStr | None] = (),
) -> None:
    """Set structlog up once per process: timestamps, level, context vars, redaction, renderer."""
    for secret in secrets:
        register_secret(secret)
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=render_json)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamping: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *stamping, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One writer for every logger: the lazy module-level loggers call the factory on each line, and a
        # new WriteLogger per line was a measurable share of the hot path's CPU.
        logger_factory=_SharedWriter(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(stream or sys.stderr, level, stamping, renderer)


class _SharedWriter:
    """A structlog logger factory that hands out one `WriteLogger` (it is stateless but for its file)."""

    __slots__ = ("_writer",)

    def __init__(self, stream: TextIO) -> None:
        self._writer = structlog.WriteLogger(stream)

    def __call__(self, *_args: Any) -> structlog.WriteLogger:
        return self._writer


def _route_stdlib_logging(stream: TextIO, level: str, pre_chain: list[Any], renderer: Any) -> None:
    """Libraries' stdlib logging (aiohttp, botocore, asyncio) through the same processors, redaction
    included, so no line escapes it; libraries speak from warning up unless a higher level was asked."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def log_asyncio_exception(_loop: object, context: dict[str, Any]) -> None:
    """asyncio's exception handler: "Task exception was never retrieved" and the like become one
    structured, redacted line with the traceback, instead of plain text on stderr."""
    error = context.get("exception")
    task = context.get("task") or context.get("future")
    structlog.get_logger("asyncio").error(
        "asyncio.unhandled",
        message=context.get("message"),
        task=getattr(task, "get_name", lambda: None)(),
        exc_info=error if isinstance(error, BaseException) else None,
    )


def log_tasks() -> None:
    """SIGUSR1 in the daemon: one line per asyncio task with where it waits, to see what a stuck pass
    is waiting for without stopping it."""
    for task in asyncio.all_tasks():
        frames = io.StringIO()
        task.print_stack(limit=12, file=frames)
        structlog.get_logger("asyncio").warning("task.stack", task=task.get_name(), stack=frames.getvalue())
