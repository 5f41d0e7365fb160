"""Options of ``edgekit fleet serve`` (kept light: the CLI reads its defaults from here without loading the service)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceOptions:
    replica: str = "main"
    batch_size: int = 2000
    flush_interval: float = 0.1
    session_expiry: int = 24 * 3600
    http: bool = True
    http_port: int | None = None  # None: fleet.toml artifacts.port
    retention_interval: float = 3600.0
    stats_interval: float = 2.0
    receive_maximum: int = 1000
    rollouts: bool | None = None   # run the rollout engine (fleet.rollout) here; None: only in replica "main"
    rollout_interval: float = 1.0  # seconds between rollout engine ticks
    metrics: bool = True           # Prometheus /metrics on the HTTP port
    metrics_per_device: bool = False  # per-device series (small fleets only: one series set per device)
