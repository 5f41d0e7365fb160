"""Options shared by the ``edgekit agent`` command modules (kept apart so that none of them imports another)."""

from __future__ import annotations

import click

from .config import DEFAULT_CONFIG

CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=str(DEFAULT_CONFIG),
                             show_default=True, help="agent config (TOML)")
