"""The loaded fleet context of the current ``edgekit fleet`` invocation, for every fleet command module.

Command modules (``fleet.cli_setup``, ``fleet.cli_views``, ``fleet.rollout.cli``) import this, never ``fleet.cli``,
so the CLI modules import each other in one direction only::

    from fleet.cli_context import load_context
    fctx = load_context()            # FleetContext for --data-dir / EDGEKIT_FLEET_DIR (and --db)
"""

from __future__ import annotations

from pathlib import Path

import click

from .paths import default_data_dir


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
