"""A route naming a credential profile this daemon does not have: its batch fails, saying so.

Routes travel on the queue with the profile's name only (never a secret), and each daemon resolves the
name from its own settings. A name it does not know (the campaign was submitted from a machine with
other settings, or the profile was removed) must not sign with some other profile's keys, and must not
crash the pass either: the region's DLI client raises `UnknownProfile` (invalid input: the batch ends
`failed`, with this message in its report and dead letter), and its OBS client refuses every call with
`CREDENTIALS_UNKNOWN` (so even the failed batch's report upload ends cleanly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

from exporter.credentials.source import Auth
from exporter.errors import InvalidInput, Permanent
from exporter.models import ObjectInfo

__all__ = ["UNKNOWN_CODE", "RefusingStore", "UnknownProfile", "UnknownSource"]

UNKNOWN_CODE = "CREDENTIALS_UNKNOWN"


class UnknownProfile(InvalidInput):
    """A batch names a credential profile that is not in this daemon's settings."""

    def __init__(self, name: str, known: Collection[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"credential profile {name!r} is not defined in this daemon's settings (known: {listed}); "
            f"add [credentials.{name}] to the settings file of every replica",
            field="credentials",
        )
        self.name = name


class UnknownSource:
    """A credential source that refuses to hand out anything."""

    __slots__ = ("_known", "_name")

    def __init__(self, name: str, known: Collection[str]) -> None:
        self._name = name
        self._known = tuple(known)

    def __repr__(self) -> str:
        return f"<UnknownSource {self._name}>"

    async def current(self) -> Auth:
        raise UnknownProfile(self._name, self._known)

    async def refresh(self) -> Auth:
        raise UnknownProfile(self._name, self._known)


class RefusingStore:
    """An OBS client of an unknown profile: `ObjectStore` and `ObjectCopier`, every call refused."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"<RefusingStore {self._name}>"

    def _refusal(self) -> Permanent:
        message = (
            f"OBS not called: credential profile {self._name!r} is not defined in this daemon's settings"
        )
        return Permanent(message, code=UNKNOWN_CODE, status=403)

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        raise self._refusal()

    async def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        raise self._refusal()

    async def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        raise self._refusal()

    async def copy_within(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> ObjectInfo:
        raise self._refusal()

    async def read_parts(self, bucket: str, key: str, part_size: int) -> AsyncIterator[bytes]:
        raise self._refusal()
        yield b""  # pragma: no cover - makes this an async generator, like the real one

    async def write_parts(
        self, bucket: str, key: str, parts: AsyncIterator[bytes], content_type: str
    ) -> ObjectInfo:
        raise self._refusal()
