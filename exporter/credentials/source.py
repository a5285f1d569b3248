"""The seam between "what signs a request" and "where the keys come from": `CredentialSource`.

A client asks `current()` before each attempt: it must be cheap (a cached value; a file source looks at
its files at most once a poll interval, a renewing source starts its renewal in the background when it
is due). After the server refused what `current()` gave (a 401), the client calls `refresh()` once: look
again now (re-read the files, fetch new keys), then the request is signed anew and retried once. Requests
already signed keep the keys they were signed with; nothing is revoked under them.

Every value a source hands out is a secret: sources register it with the log redactor (`SecretHistory`)
so that it is masked wherever it might appear, and forget it again two generations later, so months of
rotation do not make the redactor's list (checked on every log line) grow without end.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from exporter.dli.signer import Credentials
from exporter.logs import forget_secret, register_secret

__all__ = ["Auth", "CredentialSource", "SecretHistory", "StaticSource", "auth_kind"]

Auth = Credentials | str  # AK/SK (with the security token of temporary keys), or an IAM token


class CredentialSource(Protocol):
    """Hands out the credentials to sign with now, and looks again when the server refused them."""

    async def current(self) -> Auth:
        """The credentials to sign the next request with (cheap; may start a renewal in the background)."""
        ...

    async def refresh(self) -> Auth:
        """The server refused what `current()` gave: re-read or fetch now, and return the result."""
        ...


def auth_kind(auth: Auth) -> str:
    """`token`, `temporary` (AK/SK with a security token) or `aksk`: what a log line may say about it."""
    if isinstance(auth, str):
        return "token"
    return "temporary" if auth.security_token else "aksk"


_SHORTEST = 12  # shorter values than any real key are not looked for in text: they would mask words


def _secret_values(auth: Auth) -> tuple[str, ...]:
    values = (auth,) if isinstance(auth, str) else (auth.ak, auth.sk, auth.security_token)
    return tuple(value for value in values if value and len(value) >= _SHORTEST)


class SecretHistory:
    """The last `keep` generations of a source's values, registered with the log redactor."""

    __slots__ = ("_generations",)

    def __init__(self, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep at least one generation")
        self._generations: deque[tuple[str, ...]] = deque(maxlen=keep)

    def __repr__(self) -> str:
        return f"<SecretHistory generations={len(self._generations)}>"

    def add(self, auth: Auth) -> None:
        values = _secret_values(auth)
        if self._generations and self._generations[-1] == values:
            return
        if len(self._generations) == self._generations.maxlen:
            kept = {value for generation in list(self._generations)[1:] for value in generation}
            for value in self._generations[0]:
                if value not in kept and value not in values:
                    forget_secret(value)
        for value in values:
            register_secret(value)
        self._generations.append(values)


class StaticSource:
    """Credentials given once (EXPORTER_AK / EXPORTER_SK, or a token): nothing to look at again (the
    command line registers settings' secrets with the redactor when it configures logging)."""

    __slots__ = ("_auth",)

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    def __repr__(self) -> str:
        return f"<StaticSource {self.kind}>"

    @property
    def kind(self) -> str:
        return auth_kind(self._auth)

    async def current(self) -> Auth:
        return self._auth

    async def refresh(self) -> Auth:
        return self._auth
