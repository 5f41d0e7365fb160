"""Commands that set a fleet up: init, broker, provision, revoke, serve."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    pass
