"""The Redis password from a file (`EXPORTER_REDIS_PASSWORD_FILE`), read at every (re)connect.

redis-py authenticates each new connection with what its `credential_provider` answers, so a password
rotated in a mounted Secret is used by the next connection; connections already authenticated stay so
(Redis does not log them out when the password changes, unless told to with `CLIENT KILL`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError

from exporter.credentials.files import read_secret_file
from exporter.errors import ConfigError

__all__ = ["PasswordFileProvider", "RedisAuth", "redis_auth_of", "without_userinfo"]


class PasswordFileProvider(CredentialProvider):
    """(username, password) or (password,) for redis-py, the password read from the file each time."""

    def __init__(self, path: Path, username: str | None = None) -> None:
        self._path = path
        self._username = username or None

    def __repr__(self) -> str:
        return f"PasswordFileProvider({str(self._path)!r}, username={self._username!r})"

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            password = read_secret_file(self._path)
        except (OSError, ValueError) as error:  # a failed connection to redis-py: retried with backoff
            message = f"cannot read the Redis password file {self._path}: {type(error).__name__}"
            raise RedisConnectionError(message) from None
        return (self._username, password) if self._username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def without_userinfo(url: str) -> tuple[str, str | None]:
    """The URL without `user[:password]@`, and the user name: with a provider, redis-py refuses both.

    A password in the URL as well as a password file is a ConfigError: which one would be meant?
    """
    parts = urlsplit(url)
    if parts.password:
        raise ConfigError(
            "EXPORTER_REDIS_PASSWORD_FILE is set and EXPORTER_QUEUE_URL carries a password: keep one"
        )
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), parts.username or None


@dataclass(frozen=True, slots=True, repr=False)
class RedisAuth:
    """How to reach Redis: the URL, and a fixed password or a provider (never both)."""

    url: str
    password: str | None = None
    provider: CredentialProvider | None = None

    def __repr__(self) -> str:
        return f"RedisAuth(password={'<hidden>' if self.password else None}, provider={self.provider!r})"


def redis_auth_of(url: str, password: SecretStr | None, password_file: Path | None) -> RedisAuth:
    """A fixed password, or the file's provider (ConfigError when both are given)."""
    if password_file is None:
        return RedisAuth(url, password.get_secret_value() if password else None)
    if password is not None:
        raise ConfigError("set EXPORTER_REDIS_PASSWORD or EXPORTER_REDIS_PASSWORD_FILE, not both")
    bare, user = without_userinfo(url)
    return RedisAuth(bare, provider=PasswordFileProvider(password_file, user))
