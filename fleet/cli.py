"""``edgekit fleet``: thin click commands over the fleet library (one call + rendering each).

The group is assembled here from its command modules; they get the loaded context from :mod:`fleet.cli_context`.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import cli_setup, cli_simulate, cli_views
from .cli_context import FleetCliState, load_context
from .dashboard import cli as dashboard_cli
from .paths import ENV_DATA_DIR, default_data_dir
from .rollout.cli import rollout

__all__ = ["fleet", "load_context"]


@click.group()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"fleet data directory (default: ${ENV_DATA_DIR} or ~/.edgekit/fleet)")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="database url, overrides fleet.toml (sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB)")
@click.pass_context
def fleet(ctx: click.Context, data_dir: Path | None, db_url: str | None) -> None:
    """Fleet manager: broker, provisioning, registry, telemetry, rollouts."""
    ctx.obj = FleetCliState(data_dir or default_data_dir(), db_url)


cli_setup.register(fleet)
cli_views.register(fleet)
cli_simulate.register(fleet)
dashboard_cli.register(fleet)
fleet.add_command(rollout)
