"""``edgekit fleet``: thin click commands over the fleet library (one call + rendering each).

Other fleet command groups get the loaded context with :func:`load_context`::

    from fleet.cli import load_context
    fctx = load_context()            # FleetContext for --data-dir / EDGEKIT_FLEET_DIR (and --db)
"""

from __future__ import annotations

from pathlib import Path

import click

from .paths import ENV_DATA_DIR, default_data_dir


class FleetCliState:
    def __init__(self, data_dir: Path, db_url: str | None):
        self.data_dir = data_dir
        self.db_url = db_url
        self._ctx = None

    def context(self):
        if self._ctx is None:
            from .config import FleetContext

            self._ctx = FleetContext.load(self.data_dir, self.db_url)
        return self._ctx


def load_context(ctx: click.Context | None = None):
    """The FleetContext of the current ``edgekit fleet`` invocation."""
    ctx = ctx or click.get_current_context()
    state = ctx.find_object(FleetCliState)
    if state is None:
        return FleetCliState(default_data_dir(), None).context()
    return state.context()


@click.group()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"fleet data directory (default: ${ENV_DATA_DIR} or ~/.edgekit/fleet)")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="database url, overrides fleet.toml (sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB)")
@click.pass_context
def fleet(ctx: click.Context, data_dir: Path | None, db_url: str | None) -> None:
    """Fleet manager: broker, provisioning, registry, telemetry, rollouts."""
    ctx.obj = FleetCliState(data_dir or default_data_dir(), db_url)


from . import cli_setup, cli_views  # noqa: E402  (register commands on the group)

cli_setup.register(fleet)
cli_views.register(fleet)

try:
    from fleet.dashboard import cli as dashboard_cli

    dashboard_cli.register(fleet)
except ImportError:
    pass

try:
    from fleet.rollout.cli import rollout

    fleet.add_command(rollout)
except ImportError:
    pass
