"""Running the dashboard: uvicorn in a background thread (inside ``fleet serve`` or ``fleet dashboard``), with TLS
from a server certificate the fleet's CA issues for the bound host."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.extras import require

from ..config import FleetContext
from ..errors import FleetError
from .auth import TlsPlan, plan_tls

CERT_NAME = "dashboard"


def dashboard_cert(ctx: FleetContext, host: str) -> tuple[Path, Path]:
    """``ca/dashboard.pem`` + key, issued by the fleet CA with ``host`` in its names (re-issued if it lacks it)."""
    from cryptography import x509

    from ..ca import issue_cert

    cert, key = ctx.paths.ca_dir / f"{CERT_NAME}.pem", ctx.paths.ca_dir / f"{CERT_NAME}.key"
    names: set[str] = set()
    if cert.exists() and key.exists():
        try:
            san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value
            names = {str(n) for n in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(
                x509.DNSName))
        except (ValueError, x509.ExtensionNotFound):
            names = set()
    wanted = host
    try:
        wanted = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if wanted not in names and host not in ("0.0.0.0", "::"):
        issue_cert(ctx.paths, "edgekit-dashboard", cert, key, server=True, hosts=[host])
    elif not names:
        issue_cert(ctx.paths, "edgekit-dashboard", cert, key, server=True, hosts=[])
    return cert, key


@dataclass
class DashboardServer:
    ctx: FleetContext
    host: str = "127.0.0.1"
    port: int = 8081
    tls: bool | None = None
    insecure: bool = False
    stream_interval: float = 1.0

    def __post_init__(self) -> None:
        self.plan: TlsPlan = plan_tls(self.host, tls=self.tls, insecure=self.insecure)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def warning(self) -> str | None:
        return self.plan.warning

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.plan.tls else 'http'}://{host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "DashboardServer":
        require("uvicorn", "fleet")
        import uvicorn

        from .api import Fleet
        from .app import build_app

        app = build_app(Fleet(self.ctx), secure_cookies=self.plan.tls, stream_interval=self.stream_interval)
        self.app = app
        ssl = {}
        if self.plan.tls:
            cert, key = dashboard_cert(self.ctx, self.host)
            ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", lifespan="off",
                                access_log=False, timeout_graceful_shutdown=2, server_header=False, **ssl)
        self._server = uvicorn.Server(config)
        self._errors: list[BaseException] = []

        def run() -> None:
            try:
                self._server.run()
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                self._errors.append(exc)

        self._thread = threading.Thread(target=run, name="dashboard-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                why = f": {self._errors[0]}" if self._errors else " (is the port free?)"
                raise FleetError(f"the dashboard cannot listen on {self.host}:{self.port}{why}",
                                 hint="pick another --port, or a host address of this machine")
            time.sleep(0.02)
        if self.port == 0:
            self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.app.state.dashboard.stopping = True
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
