"""Per-device credentials and the device package that ``edgekit agent install --from PACKAGE`` consumes.

A package directory holds ``agent.toml`` (keys of ``device_agent.config``; relative paths resolve against the
package), ``ca.pem`` (to verify the broker), ``fleet.pub`` (verifies bundles), and either ``client.pem`` +
``client.key`` (mTLS, the default) or ``password`` (username/password on the password listener).
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import tomli_w

from edgekit.fsutil import atomic_write
from edgekit.protocol import check_id
from edgekit.errors import ProtocolError

from . import broker, ca
from .broker_conf import hash_password
from .config import FleetContext
from .errors import DeviceExistsError, FleetError, UnknownDeviceError
from .registry import Registry


@dataclass
class AuthMode:
    name: str
    listener: str  # which broker port the device uses


AUTH_MODES = {"cert": AuthMode("cert", "tls_port"), "password": AuthMode("password", "password_port")}


@dataclass
class ProvisionResult:
    device_id: str
    auth: str
    package: Path
    broker_reloaded: bool

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "auth": self.auth, "package": str(self.package),
                "broker_reloaded": self.broker_reloaded}


def agent_toml(ctx: FleetContext, device_id: str, auth: str) -> dict[str, Any]:
    b = ctx.config.broker
    mqtt: dict[str, Any] = {"host": b.host if b.host != "0.0.0.0" else "127.0.0.1", "tls": True, "ca_file": "ca.pem"}
    if auth == "cert":
        mqtt.update(port=b.tls_port, cert_file="client.pem", key_file="client.key")
    else:
        mqtt.update(port=b.password_port, username=device_id, password_file="password")
    return {"device_id": device_id, "fleet": ctx.fleet_id, "fleet_public_key": "fleet.pub", "mqtt": mqtt}


def _check_request(ctx: FleetContext, device_ids: Iterable[str], auth: str) -> None:
    """Valid ids, a known auth mode, and a password listener for password devices: FleetError otherwise."""
    for d in device_ids:
        try:
            check_id(d, "device id")
        except ProtocolError as exc:
            raise FleetError(exc.message, hint=exc.hint) from None
    if auth not in AUTH_MODES:
        raise FleetError(f"unknown auth {auth!r}", hint=f"use one of {', '.join(AUTH_MODES)}")
    if auth == "password" and not ctx.password_port:
        raise FleetError("this fleet has no password listener",
                         hint="set broker.password_port in fleet.toml (or 'fleet init --password-port'), "
                              "restart the broker, or provision with --auth cert")


def provision(ctx: FleetContext, device_id: str, *, tags: dict[str, str] | None = None, groups: Iterable[str] = (),
              auth: str = "cert", out: Path | None = None, force: bool = False) -> ProvisionResult:
    _check_request(ctx, [device_id], auth)
    reg = Registry(ctx.engine(), ctx.fleet_id)
    if reg.provisioned(device_id) and not force:
        raise DeviceExistsError(device_id)
    pkg = Path(out) if out else ctx.paths.device_package(device_id)
    if pkg.exists() and any(pkg.iterdir()) and not force:
        raise DeviceExistsError(device_id, f"device package {pkg} already exists")
    hashed = _write_package(ctx, device_id, auth, pkg, force)
    reg.add(device_id, tags=tags, groups=groups, auth=auth, replace=force)
    broker.set_password(ctx, device_id, hashed)  # removes a stale password when switching to a cert
    broker.write_acl(ctx)
    reloaded = broker.reload(ctx)
    return ProvisionResult(device_id, auth, pkg, reloaded)


def _write_package(ctx: FleetContext, device_id: str, auth: str, pkg: Path, force: bool) -> str | None:
    """Build the package in a temp dir beside ``pkg``, then rename (never half-written); returns the password
    hash for the broker (None for a certificate)."""
    tmp = pkg.with_name(f".{pkg.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True, mode=0o700)
    try:
        shutil.copyfile(ctx.paths.ca_cert, tmp / "ca.pem")
        shutil.copyfile(ctx.signing_pub_path, tmp / "fleet.pub")
        hashed = None
        if auth == "cert":
            ca.revoke_all(ctx.paths, device_id) if force else None
            ca.issue_cert(ctx.paths, device_id, tmp / "client.pem", tmp / "client.key")
        else:
            password = secrets.token_urlsafe(24)
            atomic_write(tmp / "password", password.encode(), mode=0o600)
            hashed = hash_password(password)
        atomic_write(tmp / "agent.toml", tomli_w.dumps(agent_toml(ctx, device_id, auth)).encode(), mode=0o600)
        if pkg.exists():
            shutil.rmtree(pkg)
        tmp.rename(pkg)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return hashed


def provision_many(ctx: FleetContext, device_ids: list[str], *, tags: dict[str, str] | None = None,
                   groups: Iterable[str] = (), auth: str = "password") -> list[ProvisionResult]:
    """Provision many new devices at once: packages first, then one registry transaction, one password file and
    ACL write and one broker reload (``provision`` per device rewrites the ACL each time: quadratic at scale).
    Devices already provisioned are refused before anything is written."""
    _check_request(ctx, device_ids, auth)
    reg = Registry(ctx.engine(), ctx.fleet_id)
    taken = sorted(set(device_ids) & reg.provisioned_ids())
    if taken:
        raise DeviceExistsError(taken[0], f"{len(taken)} of these devices are already provisioned "
                                          f"({', '.join(taken[:3])}{'…' if len(taken) > 3 else ''})")
    hashes: dict[str, str | None] = {}
    for d in device_ids:
        hashes[d] = _write_package(ctx, d, auth, ctx.paths.device_package(d), force=True)
    reg.add_many(device_ids, tags=tags, groups=groups, auth=auth)
    broker.set_passwords(ctx, hashes)
    broker.write_acl(ctx)
    reloaded = broker.reload(ctx)
    return [ProvisionResult(d, auth, ctx.paths.device_package(d), reloaded) for d in device_ids]


def revoke(ctx: FleetContext, device_id: str) -> dict[str, Any]:
    """Remove a device's access at the broker: ACL block, password, certificate (CRL); then reload the broker."""
    reg = Registry(ctx.engine(), ctx.fleet_id)
    if not reg.provisioned(device_id):
        raise UnknownDeviceError(device_id)
    reg.revoke(device_id)
    serials = ca.revoke_all(ctx.paths, device_id)
    broker.set_password(ctx, device_id, None)
    broker.write_acl(ctx)
    reloaded = broker.reload(ctx)
    return {"device_id": device_id, "revoked_serials": [str(s) for s in serials], "broker_reloaded": reloaded}
