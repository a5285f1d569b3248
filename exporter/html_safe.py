"""A tiny safe template helper: markup is built with `tag()`, and every value in it is escaped by default.

Only `Markup` (what `tag()` and `join()` return) is inserted as it is; any other string is text: passed
through the log redaction (a secret that slipped into a message shows as `***`), then escaped, quotes
included, so it is safe in content and in attribute values alike.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from exporter.logs import redact_text

__all__ = ["Markup", "join", "tag", "tag_void", "text"]


class Markup(str):
    """HTML this module built: inserted as it is; every other string is escaped."""

    __slots__ = ()


def text(value: object) -> Markup:
    """Any value as HTML text: redacted, then escaped (quotes too, so it is safe in attributes)."""
    return Markup(html.escape(redact_text(str(value)), quote=True))


def join(parts: Iterable[str]) -> Markup:
    return Markup("".join(part if isinstance(part, Markup) else text(part) for part in parts))


def tag(element: str, /, *children: str, **attrs: object) -> Markup:
    """`<name attrs>children</name>`; `class_` stands for `class`, `aria_label` for `aria-label`."""
    rendered = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{text(value)}"'
        for key, value in attrs.items()
        if value is not None
    )
    return Markup(f"<{element}{rendered}>{join(children)}</{element}>")


def tag_void(element: str, /, **attrs: object) -> Markup:
    """An element without content or end tag (`<meta ...>`)."""
    return Markup(tag(element, **attrs).removesuffix(f"</{element}>"))
