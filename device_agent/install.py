"""``edgekit agent install`` / ``uninstall``: config, credentials, data directories and a hardened systemd unit.

Everything is placed under ``root`` (default ``/``) and every path written into the config and the unit is the real
path under that root, so an install into a directory is complete and runnable as it stands. The config is validated
before anything is written; files are written atomically; an existing config is kept unless ``force``.

A device package (``--from``, made by the fleet's provisioning) is a directory or tar holding ``agent.toml``,
``fleet.pub`` and credential files (CA, client certificate and key, password file) referenced by relative paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import keys as keys_mod
from edgekit.errors import EdgekitError
from edgekit.fsutil import atomic_write

from .config import from_dict, load_config, parse_toml, to_toml
from .errors import AgentConfigError, InstallError

SERVICE = "edgekit-agent.service"
DEFAULT_USER = "edgekit-agent"
CONFIG_REL = Path("etc/edgekit/agent.toml")
PUBKEY_REL = Path("etc/edgekit/fleet.pub")
CREDS_REL = Path("etc/edgekit/credentials")
DATA_REL = Path("var/lib/edgekit-agent")
UNIT_REL = Path("etc/systemd/system") / SERVICE
CREDENTIAL_KEYS = ("ca_file", "cert_file", "key_file", "password_file")


@dataclass
class Layout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_REL

    @property
    def pubkey(self) -> Path:
        return self.root / PUBKEY_REL

    @property
    def credentials(self) -> Path:
        return self.root / CREDS_REL

    @property
    def data(self) -> Path:
        return self.root / DATA_REL

    @property
    def unit(self) -> Path:
        return self.root / UNIT_REL


def edgekit_executable() -> str:
    """The real path of the ``edgekit`` script of this installation (used as ExecStart)."""
    candidates = [Path(sys.executable).parent / "edgekit", Path(sys.argv[0]) if sys.argv else None,
                  Path(shutil.which("edgekit") or "/nonexistent")]
    for c in candidates:
        if c is not None and c.name == "edgekit" and c.is_file() and os.access(c, os.X_OK):
            return os.path.realpath(c)
    raise InstallError("cannot find the edgekit executable for the service's ExecStart",
                       hint="install edgekit with pip into the Python that runs this command")


def render_unit(*, exec_start: str, config: Path, data_dir: Path, user: str) -> str:
    """A hardened unit: dedicated user, restart on failure, read-only system except the data directory."""
    return f"""[Unit]
Description=edgekit device agent (local inference, telemetry, model updates)
Documentation=https://github.com/edgekit/edgekit/blob/main/docs/agent.md
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=600
StartLimitBurst=20

[Service]
Type=simple
User={user}
Group={user}
ExecStart={exec_start} agent run --config {config}
Restart=on-failure
RestartSec=5
TimeoutStopSec=20
Environment=PYTHONUNBUFFERED=1
UMask=0027
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=no
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=
ReadWritePaths={data_dir}
RuntimeDirectory=edgekit-agent
RuntimeDirectoryMode=0750

[Install]
WantedBy=multi-user.target
"""


@dataclass
class Package:
    """A device package: config dict plus files to copy (source path by config key)."""

    config: dict[str, Any]
    pubkey: Path | None
    credentials: dict[str, Path] = field(default_factory=dict)
    tmp: tempfile.TemporaryDirectory | None = None


def read_package(path: str | os.PathLike) -> Package:
    src = Path(path)
    tmp = None
    if src.is_file():
        tmp = tempfile.TemporaryDirectory(prefix="edgekit-pkg-")
        try:
            with tarfile.open(src) as tar:
                tar.extractall(tmp.name, filter="data")
        except (tarfile.TarError, OSError) as exc:
            tmp.cleanup()
            raise InstallError(f"device package {src} is not a readable tar ({exc})",
                               hint="pass the directory or .tar written by 'edgekit fleet provision'") from exc
        entries = [p for p in Path(tmp.name).iterdir()]
        src = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp.name)
    elif not src.is_dir():
        raise InstallError(f"device package {src} does not exist")
    cfg_path = src / "agent.toml"
    if not cfg_path.is_file():
        raise InstallError(f"device package {path} has no agent.toml",
                           hint="pass the directory or .tar written by 'edgekit fleet provision'")
    data = parse_toml(cfg_path.read_text(encoding="utf-8"), str(cfg_path))
    pub = data.get("fleet_public_key") or "fleet.pub"
    pub_path = (src / pub) if not os.path.isabs(pub) else Path(pub)
    creds: dict[str, Path] = {}
    for key in CREDENTIAL_KEYS:
        value = data.get("mqtt", {}).get(key)
        if value:
            p = (src / value) if not os.path.isabs(value) else Path(value)
            if not p.is_file():
                raise InstallError(f"device package {path}: mqtt.{key} names {value}, which is missing")
            creds[key] = p
    return Package(data, pub_path if pub_path.is_file() else None, creds, tmp)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


@dataclass
class InstallResult:
    root: Path
    config: Path
    unit: Path
    data_dir: Path
    user: str
    exec_start: str
    created_user: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def install(root: str | os.PathLike = "/", *, settings: dict[str, Any] | None = None,
            package: str | os.PathLike | None = None, fleet_key: str | os.PathLike | None = None,
            user: str = DEFAULT_USER, force: bool = False, create_user: bool | None = None) -> InstallResult:
    """Validate, then write config, credentials, data dirs and the unit under ``root``."""
    layout = Layout(Path(root).resolve())
    if layout.config.exists() and not force:
        raise InstallError(f"{layout.config} already exists", hint="pass --force to replace it")
    pkg = read_package(package) if package else None
    try:
        data = dict(pkg.config) if pkg else {}
        data = _merge(data, settings or {})
        pub_src = Path(fleet_key) if fleet_key else (pkg.pubkey if pkg else None)
        if pub_src is None:
            raise AgentConfigError("config key fleet_public_key is required", key="fleet_public_key",
                                   hint="pass --fleet-key FILE.pub or a device package with fleet.pub")
        try:
            keys_mod.load_public_key(pub_src)
        except EdgekitError as exc:
            raise AgentConfigError(f"config key fleet_public_key: {exc.message}", key="fleet_public_key",
                                   hint=exc.hint) from exc
        data["fleet_public_key"] = str(layout.pubkey)
        data.setdefault("data_dir", str(layout.data))
        if not os.path.isabs(data["data_dir"]):
            raise AgentConfigError("config key data_dir must be an absolute path", key="data_dir")
        if Path(root).resolve() != Path("/") and not str(Path(data["data_dir"])).startswith(str(layout.root)):
            data["data_dir"] = str(layout.root / Path(data["data_dir"]).relative_to("/"))
        mqtt = dict(data.get("mqtt", {}))
        for key, src in (pkg.credentials.items() if pkg else []):
            mqtt[key] = str(layout.credentials / src.name)
        if mqtt:
            data["mqtt"] = mqtt
        # validate everything except the files we are about to copy
        cfg = from_dict(data, base=layout.config.parent, environ={}, require=False)
        if not cfg.device_id:
            raise AgentConfigError("config key device_id is required", key="device_id",
                                   hint="pass --device-id or a device package")
        exec_start = edgekit_executable()
        data_dir = Path(cfg.data_dir)
        # write: credentials, key, data dirs, config, unit
        for key, src in (pkg.credentials.items() if pkg else []):
            # owner root, group the agent's user (set by _ensure_user): readable by the service, nobody else
            atomic_write(layout.credentials / src.name, src.read_bytes(), mode=0o640)
        atomic_write(layout.pubkey, Path(pub_src).read_bytes(), mode=0o644)
        for d in (data_dir, cfg.paths.store):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o750)
        atomic_write(layout.config, to_toml(cfg).encode(), mode=0o640)
        load_config(layout.config, environ={})  # what `agent run` will read must load
        atomic_write(layout.unit, render_unit(exec_start=exec_start, config=layout.config, data_dir=data_dir,
                                              user=user).encode(), mode=0o644)
    finally:
        if pkg and pkg.tmp:
            pkg.tmp.cleanup()
    created = False
    if create_user is None:
        create_user = layout.root == Path("/") and os.geteuid() == 0
    if create_user:
        created = _ensure_user(user, data_dir, layout)
    return InstallResult(layout.root, layout.config, layout.unit, data_dir, user, exec_start, created)


def _ensure_user(user: str, data_dir: Path, layout: Layout) -> bool:
    import pwd

    created = False
    try:
        pwd.getpwnam(user)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise InstallError(f"user {user} does not exist and useradd is missing",
                               hint=f"create the system user {user} yourself") from None
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                       check=True, capture_output=True)
        created = True
    for p in [data_dir, *data_dir.rglob("*")]:
        shutil.chown(p, user, user)
    for p in [layout.config, layout.credentials, *layout.credentials.glob("*")]:
        if p.exists():
            shutil.chown(p, "root", user)
    if layout.credentials.exists():
        os.chmod(layout.credentials, 0o750)
    return created


def uninstall(root: str | os.PathLike = "/", *, purge: bool = False) -> list[str]:
    """Remove the unit and the config (and the data directory with ``purge``); return what was removed."""
    layout = Layout(Path(root).resolve())
    removed = []
    data_dir = layout.data
    if layout.config.exists():
        try:
            data_dir = Path(load_config(layout.config, environ={}, require=False).data_dir)
        except EdgekitError:
            pass
    if layout.root == Path("/") and shutil.which("systemctl") and layout.unit.exists():
        subprocess.run(["systemctl", "disable", "--now", SERVICE], capture_output=True, check=False)
    for p in (layout.unit, layout.config, layout.pubkey):
        if p.exists():
            p.unlink()
            removed.append(str(p))
    if layout.credentials.exists():
        shutil.rmtree(layout.credentials)
        removed.append(str(layout.credentials))
    if purge and data_dir.exists():
        shutil.rmtree(data_dir)
        removed.append(str(data_dir))
    if not removed:
        raise InstallError(f"no agent installation found under {layout.root}")
    return removed
