"""``edgekit agent …``: install, uninstall, run, status, infer (thin: parse, call one function, render)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from edgekit.cli import BoundaryGroup
from edgekit.errors import ExitCode, UsageError
from edgekit.render import emit_json

from .cli_options import CONFIG_OPTION
from .update.cli import register as register_update_commands


@click.group(cls=BoundaryGroup)
def agent() -> None:
    """Run, install and query the device agent."""


@agent.command()
@click.option("--root", type=click.Path(file_okay=False), default="/", show_default=True,
              help="install under this prefix (every written path is under it)")
@click.option("--from", "package", type=click.Path(exists=True), help="device package (dir or tar) from the fleet")
@click.option("--device-id", help="this device's id")
@click.option("--fleet", help="fleet id")
@click.option("--fleet-key", type=click.Path(exists=True, dir_okay=False), help="the fleet's public key (.pub)")
@click.option("--mqtt-host", help="broker host")
@click.option("--mqtt-port", type=int, help="broker port")
@click.option("--api-port", type=int, help="local API port on 127.0.0.1")
@click.option("--bundle", type=click.Path(exists=True, dir_okay=False),
              help="bundle to serve until the fleet sends one")
@click.option("--user", default="edgekit-agent", show_default=True, help="system user of the service")
@click.option("--force", is_flag=True, help="replace an existing config")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def install(root, package, device_id, fleet, fleet_key, mqtt_host, mqtt_port, api_port, bundle, user, force,
            as_json) -> None:
    """Write the config, data directories and a hardened systemd unit (validated first)."""
    from . import install as inst

    settings: dict[str, Any] = {}
    if device_id:
        settings["device_id"] = device_id
    if fleet:
        settings["fleet"] = fleet
    mqtt = {k: v for k, v in (("host", mqtt_host), ("port", mqtt_port)) if v is not None}
    if mqtt:
        settings["mqtt"] = mqtt
    if api_port is not None:
        settings["api"] = {"port": api_port}
    if bundle:
        settings["model"] = {"bundle": str(Path(bundle).resolve())}
    result = inst.install(root, settings=settings, package=package, fleet_key=fleet_key, user=user, force=force)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"config   {result.config}")
    click.echo(f"unit     {result.unit}")
    click.echo(f"data     {result.data_dir}")
    if result.root == Path("/"):
        click.echo("next: systemctl daemon-reload && systemctl enable --now edgekit-agent")


@agent.command()
@click.option("--root", type=click.Path(file_okay=False), default="/", show_default=True)
@click.option("--purge", is_flag=True, help="also delete the data directory (model store, spool)")
@click.option("--json", "as_json", is_flag=True, help="print the removed paths as JSON")
def uninstall(root, purge, as_json) -> None:
    """Remove the unit and the config (the data too with --purge)."""
    from . import install as inst

    removed = inst.uninstall(root, purge=purge)
    if as_json:
        emit_json({"removed": removed})
        return
    for path in removed:
        click.echo(f"removed {path}")


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@agent.command()
@CONFIG_OPTION
def run(config_path) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT."""
    from .agent import Agent
    from .config import load_config

    cfg = load_config(config_path)
    _logging(cfg.log_level)
    Agent(cfg).run_forever()


def _api_url(config_path: str, url: str | None) -> str:
    if url:
        return url
    from .config import load_config

    cfg = load_config(config_path)
    port = cfg.api.port
    port_file = cfg.paths.api_port
    if port == 0 and port_file.is_file():
        port = int(port_file.read_text().strip())
    return f"http://{cfg.api.host}:{port}"


@agent.command()
@CONFIG_OPTION
@click.option("--url", help="local API URL (default: from the config)")
@click.option("--json", "as_json", is_flag=True)
def status(config_path, url, as_json) -> None:
    """Show whether the agent runs, which model it serves, and its spool and link state."""
    from .client import AgentClient
    from .errors import ApiError

    try:
        health = AgentClient(_api_url(config_path, url), timeout=5).health()
    except ApiError as exc:
        if url:
            raise
        offline = offline_status(config_path)
        offline["error"] = exc.message
        if as_json:
            emit_json(offline)
        else:
            model = offline.get("model") or {}
            click.echo(f"agent not running ({exc.message})")
            click.echo(f"model    {model.get('name', '-')} {model.get('version', '')} {model.get('sha256', '')[:12]}")
            click.echo(f"spool    {offline['spool'].get('items', 0)} queued")
        raise SystemExit(ExitCode.NOT_RUNNING)
    if as_json:
        emit_json(health)
        return
    from edgekit.render import console, table

    model = health.get("model") or {}
    rows = [("status", health["status"]), ("device", health.get("device_id", "")),
            ("model", f"{model.get('name', '-')} {model.get('version', '')} {model.get('sha256', '')[:12]}"),
            ("backend", health.get("backend", "")), ("mqtt", "connected" if health.get("mqtt_connected") else "down"),
            ("spool", f"{health['spool']['items']} queued, {health['spool']['dropped_total']} dropped"),
            ("uptime", f"{health.get('uptime_s', 0):.0f} s")]
    console().print(table(None, ["field", "value"], rows))


def offline_status(config_path: str) -> dict[str, Any]:
    """What the data directory says when the agent does not answer: current model and queued items."""
    import sqlite3

    from .config import load_config
    from .store import ModelStore

    cfg = load_config(config_path)
    doc: dict[str, Any] = {"status": "not_running", "device_id": cfg.device_id, "model": None, "spool": {}}
    store_dir = cfg.paths.store
    if store_dir.is_dir():
        entry = ModelStore(store_dir).current()
        doc["model"] = entry.model_ref() if entry else None
    spool = cfg.paths.spool
    if spool.is_file():
        try:
            with sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=2) as db:
                doc["spool"] = {"items": db.execute("SELECT COUNT(*) FROM items").fetchone()[0]}
        except sqlite3.Error as exc:
            doc["spool"] = {"error": str(exc)}
    return doc


@agent.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@CONFIG_OPTION
@click.option("--url", help="local API URL (default: from the config)")
@click.option("--out", type=click.Path(dir_okay=False), help="write the outputs to this .npz")
@click.option("--json", "as_json", is_flag=True)
def infer(file, config_path, url, out, as_json) -> None:
    """Run FILE (.npy, or .npz with one array per input) through the serving model."""
    import numpy as np

    from .client import AgentClient

    from edgekit.arrays import load_arrays
    from edgekit.errors import ArrayFileError

    try:
        arrays = list(load_arrays(file, what=str(file))[0].values())
    except ArrayFileError as exc:
        raise UsageError(f"cannot read {file} as .npy/.npz ({exc.original})",
                         hint="save inputs with numpy.save") from exc
    client = AgentClient(_api_url(config_path, url))
    outputs = client.infer(arrays)
    if out:
        np.savez(out, *outputs)
    if as_json:
        click.echo(json.dumps({"outputs": [{"dtype": o.dtype.name, "shape": list(o.shape), "data": o.tolist()}
                                           for o in outputs]}))
        return
    for j, o in enumerate(outputs):
        flat = o.reshape(-1)
        top = int(flat.argmax()) if flat.size else -1
        click.echo(f"output {j}: {o.dtype.name} {list(o.shape)} argmax={top} {np.array2string(flat[:10])}")


register_update_commands(agent)  # rollback, history
