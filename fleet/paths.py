"""Layout of a fleet's data directory. Every path the fleet manager uses is named here, nowhere else.

```
<data_dir>/
  fleet.toml                 config (fleet id, broker, db, artifacts, retention)
  keys/fleet.key(.pub)       Ed25519 bundle-signing key pair (edgekit.keys)
  ca/ca.pem ca.key           device CA (X.509, EC P-256)
  ca/issued.json             serials issued per common name; ca/revoked.json and ca/crl.pem the revoked ones
  ca/server.pem server.key   broker TLS certificate (SAN 127.0.0.1, localhost, configured host)
  ca/service.pem service.key client certificate of the fleet service itself (full access in the ACL)
  ca/dashboard.pem .key      TLS certificate of the web dashboard (issued on first use)
  broker/                    generated mosquitto.conf, acl, passwd, pid, log, stderr, persistence (data/)
  fleet.db                   SQLite store (default)
  artifacts/                 content-addressed bundles <sha256>.ekb served over HTTP
  devices/<id>/              device packages written by 'fleet provision'
  run/serve-<replica>.pid    pid file of each fleet service replica
  run/serve-<replica>.json   its counters (also served at /stats)
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_DATA_DIR = "EDGEKIT_FLEET_DIR"
SERVICE_USER = "_edgekit-fleet"  # broker identity of the fleet service; cannot clash with a device id


def default_data_dir() -> Path:
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env)
    return Path.home() / ".edgekit" / "fleet"


@dataclass(frozen=True)
class FleetPaths:
    root: Path

    @classmethod
    def at(cls, data_dir: str | os.PathLike) -> "FleetPaths":
        return cls(Path(data_dir).expanduser().absolute())

    # config and keys
    @property
    def config(self) -> Path:
        return self.root / "fleet.toml"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def signing_key(self) -> Path:
        return self.keys_dir / "fleet.key"

    @property
    def signing_pub(self) -> Path:
        return self.keys_dir / "fleet.key.pub"

    # certificate authority
    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def crl(self) -> Path:
        return self.ca_dir / "crl.pem"

    @property
    def ca_issued(self) -> Path:
        return self.ca_dir / "issued.json"

    @property
    def revoked(self) -> Path:
        return self.ca_dir / "revoked.json"

    @property
    def server_cert(self) -> Path:
        return self.ca_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.ca_dir / "server.key"

    @property
    def service_cert(self) -> Path:
        return self.ca_dir / "service.pem"

    @property
    def service_key(self) -> Path:
        return self.ca_dir / "service.key"

    @property
    def dashboard_cert(self) -> Path:
        return self.ca_dir / "dashboard.pem"

    @property
    def dashboard_key(self) -> Path:
        return self.ca_dir / "dashboard.key"

    @property
    def service_password(self) -> Path:
        return self.ca_dir / "service.password"

    # broker
    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    @property
    def broker_conf(self) -> Path:
        return self.broker_dir / "mosquitto.conf"

    @property
    def emqx_dir(self) -> Path:
        """Where ``fleet broker config --kind emqx`` writes a clustered broker's files by default."""
        return self.broker_dir / "emqx"

    @property
    def broker_acl(self) -> Path:
        return self.broker_dir / "acl"

    @property
    def broker_passwd(self) -> Path:
        return self.broker_dir / "passwd"

    @property
    def broker_pid(self) -> Path:
        return self.broker_dir / "mosquitto.pid"

    @property
    def broker_log(self) -> Path:
        return self.broker_dir / "mosquitto.log"

    @property
    def broker_stderr(self) -> Path:
        return self.broker_dir / "mosquitto.stderr"

    @property
    def broker_data(self) -> Path:
        return self.broker_dir / "data"

    # store, artifacts, devices
    @property
    def db(self) -> Path:
        return self.root / "fleet.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def devices(self) -> Path:
        return self.root / "devices"

    def device_package(self, device_id: str) -> Path:
        return self.devices / device_id

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def serve_pid(self, replica: str) -> Path:
        return self.run_dir / f"serve-{replica}.pid"

    def serve_stats(self, replica: str) -> Path:
        return self.run_dir / f"serve-{replica}.json"
