"""What every command shares: its settings, running its coroutine, and the exit codes of DESIGN.md.

Exit codes: 2 for bad input, bad settings or a batch ID reused with other content, 3 when the queue or
ledger cannot be reached.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import click

from exporter.errors import ConfigError, Conflict, InvalidInput, StoreUnavailable
from exporter.logs import configure_logging
from exporter.models import BatchInfo
from exporter.ports import Ledger
from exporter.settings import ENV_PREFIX, Settings, load_settings, mask_url_password

__all__ = ["EXIT_INVALID", "EXIT_UNAVAILABLE", "command_settings", "fail", "require_batch", "run_command"]

T = TypeVar("T")
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    """Print `error: MESSAGE` on stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_command(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning expected errors into a clear message and an exit code."""
    try:
        return asyncio.run(coroutine)
    except (ConfigError, InvalidInput, Conflict) as error:
        fail(str(error))
    except StoreUnavailable as error:
        fail(f"queue/ledger unreachable: {error}", EXIT_UNAVAILABLE)


def command_settings(ctx: click.Context, *, daemon: bool = False, **overrides: Any) -> Settings:
    """Settings for this invocation, with global flags and the command's flags applied.

    One-shot commands (submit, status, report, ...) log only warnings unless a level was asked for, so
    their output is the answer, not the adapters' chatter; the daemon logs at EXPORTER_LOG_LEVEL.
    """
    base: dict[str, Any] = dict(ctx.obj or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = load_settings(**base)
    except ConfigError as error:
        fail(str(error))
    level_chosen = base.get("log_level") is not None or f"{ENV_PREFIX}LOG_LEVEL" in os.environ
    configure_logging(
        settings.log_format,
        settings.log_level if daemon or level_chosen else "warning",
        secrets=(
            settings.ak,
            settings.sk,
            settings.security_token,
            settings.auth_token,
            settings.redis_password,
            settings.obs_ak,
            settings.obs_sk,
            *(
                getattr(profile, name)
                for profile in settings.credential_profiles.values()
                for name in ("ak", "sk", "security_token", "auth_token", "obs_ak", "obs_sk")
            ),
        ),
    )
    return settings


async def require_batch(ledger: Ledger, batch_id: str, settings: Settings) -> BatchInfo:
    """The ledger's record of `batch_id`; InvalidInput naming the (masked) queue URL when there is none."""
    info = await ledger.get_batch(batch_id)
    if info is None:
        raise InvalidInput(f"no batch {batch_id!r} in {mask_url_password(settings.queue_url)}")
    return info
