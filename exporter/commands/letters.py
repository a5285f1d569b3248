"""`dead-letters` and `requeue`: what was parked because it could never be processed, and putting it back."""

from __future__ import annotations

import json
from typing import Any

import click

from exporter.app import open_stores
from exporter.commands.common import command_settings, fail, run_command
from exporter.ports import DeadLetter

__all__ = ["dead_letters", "requeue"]

_BODY_SHOWN = 2000  # characters of a parked body in --json: enough to recognise it, not a million IDs


def _as_json(parked: DeadLetter) -> dict[str, Any]:
    return {
        "id": parked.dead_letter_id,
        "reason": parked.reason,
        "deliveries": parked.deliveries,
        "created_at": parked.created_at,
        "body": parked.body[:_BODY_SHOWN],
    }


@click.command("dead-letters")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dead_letters(ctx: click.Context, as_json: bool) -> None:
    """List messages parked because they could never be processed, with the reason."""
    settings = command_settings(ctx)

    async def go() -> list[DeadLetter]:
        async with open_stores(settings) as stores:
            return await stores.queue.dead_letters()

    parked = run_command(go())
    if as_json:
        click.echo(json.dumps([_as_json(p) for p in parked]))
        return
    if not parked:
        click.echo("no dead letters")
    for p in parked:
        click.echo(f"{p.dead_letter_id}\t{p.reason}\t(deliveries: {p.deliveries})")


@click.command()
@click.argument("dead_letter_id")
@click.pass_context
def requeue(ctx: click.Context, dead_letter_id: str) -> None:
    """Put a dead-lettered message back on the queue (after fixing what was wrong)."""
    settings = command_settings(ctx)

    async def go() -> bool:
        async with open_stores(settings) as stores:
            return await stores.queue.requeue(dead_letter_id)

    if not run_command(go()):
        fail(f"no dead letter {dead_letter_id!r}")
    click.echo(f"requeued {dead_letter_id}")
