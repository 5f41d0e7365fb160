"""``edgekit agent rollback`` and ``edgekit agent history`` (thin: parse, call :mod:`.local`, render)."""

from __future__ import annotations

import datetime as _dt

import click

from edgekit.render import console, emit_json, table

from ..cli_options import CONFIG_OPTION
from . import local


def _config(path: str):
    from ..config import load_config

    return load_config(path, require=False)


@click.command()
@CONFIG_OPTION
@click.option("--timeout", type=float, default=local.ROLLBACK_TIMEOUT_S, show_default=True,
              help="seconds to wait for a running agent to finish the rollback")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def rollback(config_path, timeout, as_json) -> None:
    """Return to the previous model (through the running agent, or directly when it is stopped)."""
    result = local.rollback(_config(config_path), timeout=timeout)
    if as_json:
        emit_json(result)
        return
    restored = result.get("restored") or {}
    gone = result.get("from") or {}
    click.echo(f"rolled back ({result['mode']}): now serving {restored.get('name')} {restored.get('version')} "
               f"({str(restored.get('sha256', ''))[:12]}), was {gone.get('name')} {gone.get('version')}")


def _when(ts) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError):
        return ""


@click.command()
@CONFIG_OPTION
@click.option("--limit", "-n", type=click.IntRange(min=1), default=local.HISTORY_LIMIT, show_default=True,
              help="last N transitions")
@click.option("--json", "as_json", is_flag=True, help="print the transitions as JSON lines in a list")
def history(config_path, limit, as_json) -> None:
    """The update transitions this device went through (oldest first)."""
    items = local.history(_config(config_path), limit=limit)
    if as_json:
        emit_json(items)
        return
    if not items:
        click.echo("no updates yet")
        return
    rows = []
    for it in items:
        target = it.get("target") or {}
        rows.append((_when(it.get("ts")), it.get("update_id") or "", f"{it.get('src')} → {it.get('dst')}",
                     it.get("name"), it.get("reason") or "",
                     f"{target.get('name', '')} {target.get('version', '')}".strip()))
    console().print(table(None, ["time (UTC)", "update", "transition", "event", "reason", "model"], rows))


def register(agent_group: click.Group) -> None:
    agent_group.add_command(rollback)
    agent_group.add_command(history)
