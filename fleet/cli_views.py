"""Commands that show the fleet: devices, device, telemetry, watch."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    pass
