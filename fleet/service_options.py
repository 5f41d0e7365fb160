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
    receive_maximum: int = 20000
    rollouts: bool = True          # take part in the rollout engine's lease (fleet.lease): the holder runs it
    lease_seconds: float = 10.0    # lease time; the holder renews every third of it
    share_telemetry: bool = False  # telemetry through $share (replicas split it) instead of a persistent own copy
    rollout_interval: float = 1.0  # seconds between rollout engine ticks
    metrics: bool = True           # Prometheus /metrics on the HTTP port
    metrics_per_device: bool = False  # per-device series (small fleets only: one series set per device)
