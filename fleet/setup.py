"""``edgekit fleet init``: create a fleet's data dir — config, signing keys, CA, broker and service certificates,
broker files and the migrated store. Nothing is overwritten: an existing fleet is refused."""

from __future__ import annotations

import os
import secrets
from dataclasses import replace

from edgekit.errors import FileExistsRefusal
from edgekit.fsutil import atomic_write
from edgekit.keys import generate_keypair

from . import broker, ca
from .broker_conf import hash_password
from .config import ArtifactsConfig, BrokerConfig, FleetConfig, FleetContext, FleetSection, StoreConfig, save_config
from .db import upgrade
from .paths import FleetPaths, SERVICE_USER


def init_fleet(data_dir: str | os.PathLike, *, fleet_id: str = "default", broker_host: str = "127.0.0.1",
               tls_port: int = 8883, password_port: int = 0, artifacts_port: int = 8080,
               public_url: str = "", db_url: str = "", extra_hosts: list[str] | None = None) -> FleetContext:
    paths = FleetPaths.at(data_dir)
    if paths.config.exists():
        raise FileExistsRefusal(f"a fleet already exists at {paths.root}",
                                hint="use another --data-dir, or remove that directory to start over")
    art_host = broker_host if broker_host != "0.0.0.0" else "127.0.0.1"
    cfg = FleetConfig(fleet=FleetSection(id=fleet_id),
                      broker=replace(BrokerConfig(), host=broker_host, tls_port=tls_port, password_port=password_port),
                      store=StoreConfig(url=db_url),
                      artifacts=replace(ArtifactsConfig(), host=art_host, port=artifacts_port,
                                        public_url=public_url))
    cfg.validate()
    paths.root.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.root, 0o700)
    for d in (paths.keys_dir, paths.ca_dir, paths.broker_dir, paths.artifacts, paths.devices, paths.run_dir):
        d.mkdir(exist_ok=True)
    generate_keypair(paths.signing_key)
    ca.create_ca(paths, fleet_id)
    ca.issue_cert(paths, "edgekit-broker", paths.server_cert, paths.server_key, server=True,
                  hosts=[broker_host, *(extra_hosts or [])])
    ca.issue_cert(paths, SERVICE_USER, paths.service_cert, paths.service_key)
    service_pw = secrets.token_urlsafe(24)
    atomic_write(paths.service_password, service_pw.encode(), mode=0o600)
    ctx = FleetContext(paths, cfg)
    upgrade(ctx.db_url)
    # config last: its presence marks a complete fleet
    save_config(paths.config, cfg)
    broker.write_config(ctx)
    broker.set_password(ctx, SERVICE_USER, hash_password(service_pw))
    return ctx
