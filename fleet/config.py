"""fleet.toml: the fleet's configuration, and :class:`FleetContext`, the one object every command works from.

```toml
[fleet]
id = "default"

[broker]
host = "127.0.0.1"          # address the broker binds to and devices/service connect to
tls_port = 8883             # mTLS listener (client certificates signed by the fleet CA)
password_port = 0           # TLS listener with username/password; 0 disables it
max_queued_messages = 100000
max_queued_bytes = 268435456
autosave_interval = 1

[store]
url = ""                    # empty: sqlite in the data dir; or postgresql+psycopg://user@host:port/db

[artifacts]
host = "127.0.0.1"
port = 8080
public_url = ""             # empty: http://<host>:<port>
max_downloads = 64          # bundle bodies sent at once; more get 503 + Retry-After

[retention]
raw_days = 7                # keep raw telemetry this long
bucket_seconds = 300        # then keep averages over buckets of this size
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import config as core
from edgekit.config import opt
from edgekit.fsutil import atomic_write
from edgekit.protocol import check_id
from edgekit.errors import ProtocolError

from .errors import FleetConfigError, FleetNotInitialized
from .paths import FleetPaths, SERVICE_USER


def _fleet_id(v: str) -> None:
    try:
        check_id(v, "fleet id")
    except ProtocolError as exc:
        raise ValueError(exc.hint or exc.message) from None


def _tls_port(v: int) -> None:
    core.port(v)
    if v == 0:
        raise ValueError("must not be 0 (the mTLS listener is always on)")


def _store_url(v: str) -> None:
    if v and not v.startswith(("sqlite", "postgresql")):
        raise ValueError("must be a sqlite or postgresql URL: sqlite:///PATH or "
                         "postgresql+psycopg://USER@HOST:PORT/DB")


@dataclass(frozen=True)
class BrokerConfig:
    host: str = opt("127.0.0.1")
    tls_port: int = opt(8883, _tls_port)
    password_port: int = opt(0, core.port)
    max_queued_messages: int = opt(100000, core.non_negative)
    max_queued_bytes: int = opt(256 * 1024 * 1024, core.non_negative)
    autosave_interval: int = opt(1, core.non_negative)


@dataclass(frozen=True)
class StoreConfig:
    url: str = opt("", _store_url)


@dataclass(frozen=True)
class ArtifactsConfig:
    host: str = opt("127.0.0.1")
    port: int = opt(8080, core.port)
    public_url: str = opt("")
    max_downloads: int = opt(64, core.positive, doc="bundle bodies sent at once; more get 503 + Retry-After")


@dataclass(frozen=True)
class RetentionConfig:
    raw_days: float = opt(7.0, core.positive)
    bucket_seconds: int = opt(300, core.positive)


@dataclass(frozen=True)
class FleetSection:
    id: str = opt("default", _fleet_id)


@dataclass(frozen=True)
class FleetConfig:
    fleet: FleetSection = field(default_factory=FleetSection)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    artifacts: ArtifactsConfig = field(default_factory=ArtifactsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    # --- (de)serialisation: edgekit.config's loader, like the agent config ------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return core.to_dict(self)

    def to_toml(self) -> bytes:
        return core.to_toml(self).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FleetConfig":
        return core.build(cls, [core.Layer(data, source="fleet.toml")], error=FleetConfigError)

    def validate(self) -> None:
        """Every key's check, for a config built in code (``fleet init``) before it is saved."""
        core.check(self, error=FleetConfigError)


def load_config(path: Path) -> FleetConfig:
    try:
        data = core.read_toml(path, error=FleetConfigError, hint="fix the file or re-run 'edgekit fleet init'")
    except FileNotFoundError:
        raise FleetNotInitialized(f"no fleet at {path.parent} ({path.name} is missing)") from None
    return FleetConfig.from_dict(data)


def save_config(path: Path, cfg: FleetConfig) -> None:
    cfg.validate()
    atomic_write(path, cfg.to_toml())


@dataclass(frozen=True)
class FleetContext:
    """Everything a fleet command needs, derived from the data dir (and an optional --db override)."""

    paths: FleetPaths
    config: FleetConfig
    db_override: str | None = None

    @classmethod
    def load(cls, data_dir: str | os.PathLike, db_url: str | None = None) -> "FleetContext":
        paths = FleetPaths.at(data_dir)
        return cls(paths, load_config(paths.config), db_url or None)

    @property
    def data_dir(self) -> Path:
        return self.paths.root

    @property
    def fleet_id(self) -> str:
        return self.config.fleet.id

    @property
    def db_url(self) -> str:
        if self.db_override:
            return self.db_override
        if self.config.store.url:
            return self.config.store.url
        return f"sqlite:///{self.paths.db}"

    @property
    def broker_host(self) -> str:
        return self.config.broker.host

    @property
    def broker_port(self) -> int:
        """The mTLS port the fleet service connects to."""
        return self.config.broker.tls_port

    @property
    def password_port(self) -> int:
        return self.config.broker.password_port

    @property
    def service_user(self) -> str:
        return SERVICE_USER

    @property
    def signing_key_path(self) -> Path:
        return self.paths.signing_key

    @property
    def signing_pub_path(self) -> Path:
        return self.paths.signing_pub

    @property
    def artifact_url(self) -> str:
        a = self.config.artifacts
        return (a.public_url or f"http://{a.host}:{a.port}").rstrip("/")

    def engine(self):
        """The process-wide engine of this fleet's store (one connection pool per url)."""
        from .db import shared_engine

        return shared_engine(self.db_url)

    def publish_bundle(self, path: str | os.PathLike) -> str:
        """Copy a bundle (verified against the fleet key) into the artifact store; returns its download URL."""
        from .artifacts import publish_bundle

        return publish_bundle(path, self.paths.artifacts, self.artifact_url, pubkey=self.signing_pub_path)
