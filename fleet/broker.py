"""Running the fleet's Mosquitto: write the generated files, start it, stop it by PID, reload it with SIGHUP."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

from edgekit import servers
from edgekit.fsutil import atomic_write
from edgekit.procs import stop_pid

from .broker_conf import BrokerFiles, parse_passwd, render_acl, render_config, render_passwd
from .config import FleetContext
from .errors import BrokerError, BrokerNotInstalled


def find_mosquitto() -> str:
    """The Mosquitto executable (:func:`edgekit.servers.find_mosquitto`), or BrokerNotInstalled."""
    exe = servers.find_mosquitto()
    if exe is None:
        raise BrokerNotInstalled("mosquitto is not installed on this machine")
    return exe


def broker_files(ctx: FleetContext) -> BrokerFiles:
    p, b = ctx.paths, ctx.config.broker
    return BrokerFiles(host=b.host, tls_port=b.tls_port, password_port=b.password_port, ca_cert=str(p.ca_cert),
                       server_cert=str(p.server_cert), server_key=str(p.server_key), crl=str(p.crl),
                       acl=str(p.broker_acl), passwd=str(p.broker_passwd), data_dir=str(p.broker_data),
                       log=str(p.broker_log), max_queued_messages=b.max_queued_messages,
                       max_queued_bytes=b.max_queued_bytes, autosave_interval=b.autosave_interval,
                       run_as=getpass.getuser() if os.geteuid() == 0 else None)


def write_config(ctx: FleetContext) -> None:
    p = ctx.paths
    p.broker_data.mkdir(parents=True, exist_ok=True)
    atomic_write(p.broker_conf, render_config(broker_files(ctx)).encode(), mode=0o600)
    if not p.broker_passwd.exists():
        atomic_write(p.broker_passwd, b"", mode=0o600)
    write_acl(ctx)


def write_emqx_config(ctx: FleetContext, out=None, nodes: list[str] | None = None,
                      cookie: str | None = None) -> list:
    """Write an EMQX 5 cluster's files (``<node>/emqx.conf`` per node, ``acl.conf``, ``users.csv``) into ``out``
    (default ``<data-dir>/broker/emqx``); returns the paths written."""
    import secrets
    from pathlib import Path

    from edgekit.errors import UsageError

    from .broker_emqx import ClusterSpec, render_emqx_acl, render_emqx_conf, render_emqx_users
    from .registry import Registry

    nodes = list(dict.fromkeys(nodes or ["emqx@127.0.0.1"]))
    for n in nodes:
        name, at, host = n.partition("@")
        if not at or not name or not host or any(ch in n for ch in " /\\\"'"):
            raise UsageError(f"--node {n!r} is not an Erlang node name", hint="use NAME@HOST, e.g. emqx@10.0.0.1")
    out = Path(out) if out else ctx.paths.emqx_dir
    out.mkdir(parents=True, exist_ok=True)
    spec = ClusterSpec(nodes=tuple(nodes), cookie=cookie or secrets.token_urlsafe(24),
                       acl_path=str(out / "acl.conf"), users_path=str(out / "users.csv"))
    files = broker_files(ctx)
    devices = Registry(ctx.engine(), ctx.fleet_id).provisioned_ids()
    passwd = ctx.paths.broker_passwd.read_text() if ctx.paths.broker_passwd.exists() else ""
    written = [out / "acl.conf", out / "users.csv"]
    atomic_write(written[0], render_emqx_acl(ctx.fleet_id, ctx.service_user, devices).encode(), mode=0o600)
    atomic_write(written[1], render_emqx_users(passwd).encode(), mode=0o600)
    for n in nodes:
        (out / n).mkdir(exist_ok=True)
        atomic_write(out / n / "emqx.conf", render_emqx_conf(files, spec, n).encode(), mode=0o600)
        written.append(out / n / "emqx.conf")
    return written


def write_acl(ctx: FleetContext) -> None:
    from .registry import Registry

    devices = Registry(ctx.engine(), ctx.fleet_id).provisioned_ids()
    atomic_write(ctx.paths.broker_acl, render_acl(ctx.fleet_id, ctx.service_user, devices).encode(), mode=0o600)


def set_password(ctx: FleetContext, user: str, hashed: str | None) -> None:
    """Add/replace (``hashed``) or remove (None) one user in the password file."""
    set_passwords(ctx, {user: hashed})


def set_passwords(ctx: FleetContext, changes: dict[str, str | None]) -> None:
    """Add/replace or (None) remove users in the password file, in one write."""
    path = ctx.paths.broker_passwd
    entries = parse_passwd(path.read_text()) if path.exists() else {}
    for user, hashed in changes.items():
        if hashed is None:
            entries.pop(user, None)
        else:
            entries[user] = hashed
    atomic_write(path, render_passwd(entries).encode(), mode=0o600)


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    tls_port: int
    password_port: int
    config: str

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _pid_alive(ctx: FleetContext) -> int | None:
    try:
        pid = int(ctx.paths.broker_pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return None
    if str(ctx.paths.broker_conf).encode() not in cmdline:
        return None  # a recycled PID, not our broker
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except OSError:
        return None
    return pid


def status(ctx: FleetContext) -> BrokerStatus:
    pid = _pid_alive(ctx)
    b = ctx.config.broker
    return BrokerStatus(pid is not None, pid, b.tls_port, b.password_port, str(ctx.paths.broker_conf))


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def start(ctx: FleetContext, timeout: float = 15.0) -> BrokerStatus:
    exe = find_mosquitto()
    if _pid_alive(ctx):
        raise BrokerError("the fleet broker is already running", hint="stop it with 'edgekit fleet broker stop'")
    b = ctx.config.broker
    for port in (b.tls_port, b.password_port):
        if port and _port_open(b.host, port):
            raise BrokerError(f"port {b.host}:{port} is already in use",
                              hint="stop whatever listens there or change the port in fleet.toml")
    write_config(ctx)
    log = open(ctx.paths.broker_stderr, "ab")
    proc = subprocess.Popen([exe, "-c", str(ctx.paths.broker_conf)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    atomic_write(ctx.paths.broker_pid, f"{proc.pid}\n".encode())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _tail(ctx)
            raise BrokerError(f"mosquitto exited with code {proc.returncode} at start: {tail}",
                              hint=f"see {ctx.paths.broker_log} and {ctx.paths.broker_conf}")
        if all(_port_open(b.host, p) for p in (b.tls_port, b.password_port) if p):
            return status(ctx)
        time.sleep(0.05)
    stop(ctx)
    raise BrokerError(f"mosquitto did not listen on {b.host}:{b.tls_port} within {timeout:.0f}s",
                      hint=f"see {ctx.paths.broker_log}")


def _tail(ctx: FleetContext) -> str:
    for p in (ctx.paths.broker_stderr, ctx.paths.broker_log):
        try:
            lines = [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        except FileNotFoundError:
            continue
        if lines:
            return lines[-1][:300]
    return "no log output"


def stop(ctx: FleetContext, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Stop the broker by its PID; False if it was not running."""
    pid = _pid_alive(ctx)
    if pid is None:
        ctx.paths.broker_pid.unlink(missing_ok=True)
        return False
    stop_pid(pid, timeout=timeout, sig=sig)
    ctx.paths.broker_pid.unlink(missing_ok=True)
    return True


def reload(ctx: FleetContext) -> bool:
    """Make a running broker re-read the password file, ACL and CRL (SIGHUP); False if it is not running."""
    pid = _pid_alive(ctx)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    return True
