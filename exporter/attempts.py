"""Running the first attempt of a retry loop outside it.

Most calls succeed at once, and setting a tenacity loop up costs more CPU than a cheap attempt itself
(an in-process HEAD, a signed request). So the first attempt runs alone, and only a failure (or a
result that asks for another try) starts the loop, with `ReplayFirst` giving that first outcome back as
the loop's own first attempt: waits, attempt counts and deadlines stay exactly as if the loop had run it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["ReplayFirst"]

T = TypeVar("T")


class ReplayFirst(Generic[T]):
    """An attempt function for tenacity whose first call gives back an outcome that already happened (an
    exception is raised again, a value returned); every later call runs `attempt`."""

    __slots__ = ("_attempt", "_first")

    def __init__(self, attempt: Callable[..., Awaitable[T]], first: T | BaseException) -> None:
        self._attempt = attempt
        self._first: list[T | BaseException] = [first]

    async def __call__(self, *args: Any) -> T:
        if self._first:
            first = self._first.pop()
            if isinstance(first, BaseException):
                raise first
            return first
        return await self._attempt(*args)
