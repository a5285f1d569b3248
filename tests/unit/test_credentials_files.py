"""Keys from values and files: a Secret volume's atomic swap is seen within a poll interval, a 401's
refresh re-reads at once, a half-written or vanished file never replaces good keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import ManualClock
from pydantic import SecretStr
from secret_volume import SecretVolume
from structlog.testing import capture_logs

from exporter.credentials.files import KeySource, KeySpec, SecretFile
from exporter.dli.signer import Credentials
from exporter.errors import ConfigError
from exporter.logs import REDACTED, redact_text

OLD_AK, OLD_SK = "AKOLDEXAMPLE00000001", "skOld-Secret-Value-000000000000000001"
NEW_AK, NEW_SK = "AKNEWEXAMPLE00000002", "skNew-Secret-Value-000000000000000002"
PROJECT = "0123456789abcdef0123456789abcdef"


def key_source(volume: SecretVolume, clock: ManualClock, poll: float = 1.0) -> KeySource:
    spec = KeySpec(ak=SecretFile(volume.path("ak")), sk=SecretFile(volume.path("sk")))
    return KeySource(spec, clock=clock, name="test", project_id=PROJECT, poll_interval=poll)


async def test_fixed_values_make_credentials_and_never_change() -> None:
    """AK/SK given as values: the credentials, with the project, and no files to look at."""
    source = KeySource(
        KeySpec(ak=SecretStr(OLD_AK), sk=SecretStr(OLD_SK)), clock=ManualClock(), project_id=PROJECT
    )
    assert await source.current() == Credentials(OLD_AK, OLD_SK, PROJECT)
    assert await source.refresh() == Credentials(OLD_AK, OLD_SK, PROJECT)
    assert not source.watches_files
    assert OLD_SK not in repr(source) and OLD_AK not in repr(source)


async def test_a_swapped_secret_volume_is_seen_after_the_poll_interval(tmp_path: Path) -> None:
    """Within the interval nothing is looked at; after it the swapped files give the new pair."""
    clock = ManualClock()
    volume = SecretVolume(tmp_path / "secret", {"ak": OLD_AK, "sk": OLD_SK})
    source = key_source(volume, clock)
    volume.update({"ak": NEW_AK, "sk": NEW_SK})
    assert (await source.current()).ak == OLD_AK  # type: ignore[union-attr]
    clock.now += 1.0
    with capture_logs() as logs:
        current = await source.current()
    assert current == Credentials(NEW_AK, NEW_SK, PROJECT)
    assert [entry["event"] for entry in logs] == ["credentials.reloaded"]
    assert NEW_SK not in repr(logs) and OLD_SK not in repr(logs)


async def test_refresh_rereads_at_once(tmp_path: Path) -> None:
    """After a 401 the client does not wait for the poll interval: refresh() reads the files now."""
    clock = ManualClock()
    volume = SecretVolume(tmp_path / "secret", {"ak": OLD_AK, "sk": OLD_SK})
    source = key_source(volume, clock, poll=3600)
    volume.update({"ak": NEW_AK, "sk": NEW_SK})
    assert (await source.current()).ak == OLD_AK  # type: ignore[union-attr]
    assert (await source.refresh()).ak == NEW_AK  # type: ignore[union-attr]


@pytest.mark.parametrize("breakage", ["missing", "empty", "not-utf8"])
async def test_an_unreadable_file_keeps_the_keys_in_use(tmp_path: Path, breakage: str) -> None:
    """A vanished, empty or garbled file leaves the old keys signing, warns (naming no secret), and the
    next poll after it is fixed picks up the new keys."""
    clock = ManualClock()
    volume = SecretVolume(tmp_path / "secret", {"ak": OLD_AK, "sk": OLD_SK})
    source = key_source(volume, clock)
    target = volume.path("sk").resolve()
    if breakage == "missing":
        target.unlink()
    else:
        target.write_bytes(b"" if breakage == "empty" else b"\xff\xfe")
    clock.now += 1.0
    with capture_logs() as logs:
        assert (await source.current()).sk == OLD_SK  # type: ignore[union-attr]
    (warning,) = logs
    assert warning["event"] == "credentials.reread_failed" and "sk" in warning["error"]
    volume.update({"ak": NEW_AK, "sk": NEW_SK})
    clock.now += 1.0
    assert (await source.current()).sk == NEW_SK  # type: ignore[union-attr]


async def test_an_iam_token_file_wins_over_keys(tmp_path: Path) -> None:
    """`auth_token` (from its file) is what signs, as EXPORTER_AUTH_TOKEN does."""
    volume = SecretVolume(tmp_path / "secret", {"token": "iam-token-value-0001"})
    source = KeySource(KeySpec(auth_token=SecretFile(volume.path("token"))), clock=ManualClock())
    assert await source.current() == "iam-token-value-0001"


def test_a_file_unreadable_at_start_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """At start-up there are no old keys to keep: ConfigError with the file's path, not its content."""
    spec = KeySpec(ak=SecretFile(tmp_path / "nope-ak"), sk=SecretStr(OLD_SK))
    with pytest.raises(ConfigError, match="nope-ak"):
        KeySource(spec, clock=ManualClock(), name="target")


async def test_rotated_values_are_masked_in_log_text_and_the_oldest_forgotten(tmp_path: Path) -> None:
    """Each generation's values are masked wherever they appear in text; after two more rotations the
    first generation is no longer searched for (the redactor's list stays short over months)."""
    clock = ManualClock()
    volume = SecretVolume(tmp_path / "secret", {"ak": OLD_AK, "sk": OLD_SK})
    source = key_source(volume, clock)
    assert redact_text(f"oops {OLD_SK}") == f"oops {REDACTED}"
    for generation in range(2):
        volume.update(
            {"ak": f"AKGEN{generation}EXAMPLE000000", "sk": f"skGeneration-{generation}-0000000000"}
        )
        clock.now += 1.0
        await source.current()
        assert redact_text(f"oops skGeneration-{generation}-0000000000") == f"oops {REDACTED}"
    assert redact_text(f"oops {OLD_SK} again") == f"oops {OLD_SK} again"
