"""Device packages (``agent.toml`` + ``ca.pem`` + ``password``/``client.pem``): the credentials a device gets."""

from __future__ import annotations

import functools
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UsageError


@dataclass(frozen=True)
class DevicePackage:
    device_id: str
    fleet: str
    host: str
    port: int
    ca_file: Path
    username: str | None = None
    password: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600

    def tls_context(self) -> ssl.SSLContext:
        """One context per (CA content, client certificate): every package carries its own copy of the same CA,
        and building a context for each of 10,000 devices costs a CPU-second per thousand."""
        return _tls_context(self.ca_file.read_text(), str(self.cert_file) if self.cert_file else None,
                            str(self.key_file) if self.key_file else None)


@functools.lru_cache(maxsize=64)
def _tls_context(ca_pem: str, cert: str | None, key: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def load_package(path: str | Path) -> DevicePackage:
    """Read one device package directory; a missing or broken one is a one-line UsageError."""
    root = Path(path)
    try:
        cfg = tomllib.loads((root / "agent.toml").read_text())
    except FileNotFoundError:
        raise UsageError(f"{root} is not a device package (no agent.toml)",
                         hint="provision devices with 'edgekit fleet provision' or pass --provision") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{root / 'agent.toml'} is not valid TOML: {exc}") from None
    m = cfg.get("mqtt", {})

    def rel(key: str) -> Path | None:
        v = m.get(key)
        return (root / v) if v else None

    password = None
    if m.get("password_file"):
        password = (root / m["password_file"]).read_text().strip()
    try:
        return DevicePackage(device_id=cfg["device_id"], fleet=cfg["fleet"], host=m.get("host", "127.0.0.1"),
                             port=int(m["port"]), ca_file=rel("ca_file") or root / "ca.pem",
                             username=m.get("username"), password=password or m.get("password"),
                             cert_file=rel("cert_file"), key_file=rel("key_file"),
                             keepalive=int(m.get("keepalive", 30)))
    except KeyError as exc:
        raise UsageError(f"{root / 'agent.toml'} lacks {exc.args[0]}", hint="re-provision the device") from None
