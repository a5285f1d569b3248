"""Keys given as values or as files, the files re-read when they change (`env` and `files` sources).

A Kubernetes Secret mounted as a volume is updated by an atomic rename: the kubelet writes the new keys
into a fresh directory and swaps the `..data` symlink the key files point through. So a file is "changed"
when what its path resolves to changed: another inode or device, mtime or size (`os.stat` follows the
links). The files are looked at (one `stat` each, on the event loop: they live on a tmpfs) at most once
per poll interval, when a request asks for the current keys, and at once after a 401.

All the files are read together and read again if one changed while they were read, so an AK is never
paired with the SK of the next generation; should that still happen (the swap fell between two polls
of a file each), the server's 401 makes the client re-read and retry. A file that cannot be read or is
empty leaves the keys as they were (a warning names the file, never its content), and is tried again
at the next poll; at start-up it is a ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import SecretStr

from exporter.credentials.source import Auth, SecretHistory, auth_kind
from exporter.dli.signer import Credentials
from exporter.errors import ConfigError
from exporter.ports import Clock

__all__ = ["KeySource", "KeySpec", "SecretFile", "Value", "read_secret_file"]

log = structlog.get_logger("exporter.credentials")

_Signature = tuple[int, int, int, int] | None


def _signature(path: Path) -> _Signature:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def read_secret_file(path: Path) -> str:
    """The file's text without surrounding whitespace (a trailing newline is what editors add);
    ValueError when it is empty, OSError when it cannot be read. The message never holds the content."""
    try:
        text = path.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not text:
        raise ValueError(f"{path} is empty")
    return text


class SecretFile:
    """One secret in a file, and what the file looked like when it was last read."""

    __slots__ = ("_seen", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: _Signature = None

    def __repr__(self) -> str:
        return f"SecretFile({str(self.path)!r})"

    def changed(self) -> bool:
        return _signature(self.path) != self._seen

    def read(self) -> str:
        seen = _signature(self.path)
        value = read_secret_file(self.path)
        self._seen = seen
        return value


Value = SecretStr | SecretFile  # given once, or read from a file (and again when it changes)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Where each secret comes from; an IAM token (`auth_token`) wins over AK/SK."""

    ak: Value | None = None
    sk: Value | None = None
    security_token: Value | None = None
    auth_token: Value | None = None

    def files(self) -> list[SecretFile]:
        return [value for value in self._values() if isinstance(value, SecretFile)]

    def _values(self) -> tuple[Value | None, ...]:
        return (self.ak, self.sk, self.security_token, self.auth_token)


def _value(value: Value | None) -> str | None:
    if value is None:
        return None
    return value.read() if isinstance(value, SecretFile) else value.get_secret_value() or None


def _build(spec: KeySpec, project_id: str | None) -> Auth:
    token = _value(spec.auth_token)
    if token:
        return token
    ak, sk = _value(spec.ak), _value(spec.sk)
    if not ak or not sk:
        raise ValueError("an AK and an SK are both needed")
    return Credentials(ak=ak, sk=sk, project_id=project_id, security_token=_value(spec.security_token))


class KeySource:
    """A `CredentialSource` over values and files; the files re-read when they change."""

    __slots__ = ("_auth", "_clock", "_files", "_history", "_name", "_next_look", "_poll", "_project", "_spec")

    def __init__(
        self,
        spec: KeySpec,
        *,
        clock: Clock,
        name: str = "default",
        project_id: str | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._spec, self._name, self._clock, self._project = spec, name, clock, project_id
        self._files = spec.files()
        self._poll = poll_interval
        self._history = SecretHistory()
        try:
            self._auth = self._read_all()
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"credential profile {name}: cannot read its keys: {_describe(error)}"
            ) from None
        self._history.add(self._auth)
        self._next_look = clock.monotonic() + poll_interval

    def __repr__(self) -> str:
        return f"<KeySource {self._name} {auth_kind(self._auth)} files={len(self._files)}>"

    @property
    def watches_files(self) -> bool:
        return bool(self._files)

    async def current(self) -> Auth:
        if self._files and self._clock.monotonic() >= self._next_look:
            self._next_look = self._clock.monotonic() + self._poll
            if any(file.changed() for file in self._files):
                self._reload("changed")
        return self._auth

    async def refresh(self) -> Auth:
        if self._files:
            self._next_look = self._clock.monotonic() + self._poll
            self._reload("refused")
        return self._auth

    def _read_all(self) -> Auth:
        """Every value, read again when a file changed during the reading (a swap in between)."""
        auth = _build(self._spec, self._project)
        if any(file.changed() for file in self._files):
            auth = _build(self._spec, self._project)
        return auth

    def _reload(self, reason: str) -> None:
        try:
            auth = self._read_all()
        except (OSError, ValueError) as error:
            log.warning("credentials.reread_failed", source=self._name, reason=reason, error=_describe(error))
            return
        if auth != self._auth:
            self._history.add(auth)
            self._auth = auth
            log.info("credentials.reloaded", source=self._name, reason=reason, kind=auth_kind(auth))


def _describe(error: OSError | ValueError) -> str:
    """An OSError names its file and the reason; a ValueError of ours names the file only."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)
