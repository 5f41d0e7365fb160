"""Commands that set a fleet up and run it: init, broker, provision, revoke, serve, retention."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import click

from edgekit.errors import ExitCode
from edgekit.render import emit_json

from .config import ArtifactsConfig, BrokerConfig, FleetSection
from .service_options import ServiceOptions

# the defaults shown and used by the commands are the dataclasses' own
_BROKER, _ARTIFACTS, _SERVE = BrokerConfig(), ArtifactsConfig(), ServiceOptions()


def _ctx():
    from .cli_context import load_context

    return load_context()


def _state():
    from .cli_context import FleetCliState

    return click.get_current_context().find_object(FleetCliState)


def _parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    from edgekit.errors import UsageError

    tags = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise UsageError(f"--tag {v!r} is not KEY=VALUE", hint="pass e.g. --tag site=lab")
        tags[k] = val
    return tags


@click.command("init")
@click.option("--fleet-id", default=FleetSection().id, show_default=True, help="fleet id used in MQTT topics")
@click.option("--broker-host", default=_BROKER.host, show_default=True)
@click.option("--tls-port", type=int, default=_BROKER.tls_port, show_default=True, help="mTLS listener port")
@click.option("--password-port", type=int, default=_BROKER.password_port, show_default=True,
              help="username/password listener port (0: none)")
@click.option("--artifacts-port", type=int, default=_ARTIFACTS.port, show_default=True)
@click.option("--public-url", default="", help="artifact URL devices use (default http://HOST:PORT)")
@click.option("--host", "extra_hosts", multiple=True, help="extra broker host name/IP for its certificate")
@click.option("--json", "as_json", is_flag=True)
def init_cmd(fleet_id, broker_host, tls_port, password_port, artifacts_port, public_url, extra_hosts, as_json):
    """Create a fleet: data dir, signing keys, device CA, broker files, store."""
    from .setup import init_fleet

    st = _state()
    ctx = init_fleet(st.data_dir, fleet_id=fleet_id, broker_host=broker_host, tls_port=tls_port,
                     password_port=password_port, artifacts_port=artifacts_port, public_url=public_url,
                     db_url=st.db_url or "", extra_hosts=list(extra_hosts))
    info = {"data_dir": str(ctx.data_dir), "fleet": ctx.fleet_id, "db": ctx.db_url, "tls_port": tls_port,
            "password_port": password_port, "artifacts": ctx.artifact_url, "signing_key": str(ctx.signing_key_path)}
    if as_json:
        emit_json(info)
    else:
        click.echo(f"fleet {fleet_id!r} created in {ctx.data_dir}\nnext: edgekit fleet broker start")


@click.group("broker")
def broker_group():
    """Run the fleet's Mosquitto with the generated config."""


@broker_group.command("start")
@click.option("--json", "as_json", is_flag=True)
def broker_start(as_json):
    """Generate the config and start mosquitto in the background."""
    from . import broker

    st = broker.start(_ctx())
    emit_json(st.to_dict()) if as_json else click.echo(f"broker running (pid {st.pid}) on port {st.tls_port}"
                                                        + (f" and {st.password_port}" if st.password_port else ""))


@broker_group.command("stop")
def broker_stop():
    """Stop the broker (by its PID)."""
    from . import broker

    click.echo("broker stopped" if broker.stop(_ctx()) else "broker was not running")


@broker_group.command("status")
@click.option("--json", "as_json", is_flag=True)
def broker_status(as_json):
    from . import broker

    st = broker.status(_ctx())
    if as_json:
        emit_json(st.to_dict())
    else:
        click.echo(f"running (pid {st.pid})" if st.running else "not running")
    if not st.running:
        raise SystemExit(ExitCode.NOT_RUNNING)


@broker_group.command("config")
@click.option("--kind", type=click.Choice(["mosquitto", "emqx"]), default="mosquitto", show_default=True,
              help="mosquitto: the fleet's own broker; emqx: an EMQX 5 cluster (files for each node)")
@click.option("--node", "nodes", multiple=True, metavar="NAME@HOST",
              help="EMQX cluster node (repeat for each; default emqx@127.0.0.1)")
@click.option("--cookie", default=None, help="EMQX cluster cookie (default: a random one)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="directory for the EMQX files (default: <data-dir>/broker/emqx)")
def broker_config(kind, nodes, cookie, out):
    """Write the broker's config/ACL files and print the config (without starting it)."""
    from . import broker

    ctx = _ctx()
    if kind == "mosquitto":
        if nodes or cookie or out:
            from edgekit.errors import UsageError

            raise UsageError("--node, --cookie and --out apply to --kind emqx only")
        broker.write_config(ctx)
        click.echo(ctx.paths.broker_conf.read_text(), nl=False)
        return
    written = broker.write_emqx_config(ctx, out, nodes=list(nodes), cookie=cookie)
    for path in written:
        click.echo(str(path))


@click.command("provision")
@click.argument("device_id")
@click.option("--tag", "tags", multiple=True, metavar="K=V")
@click.option("--group", "groups", multiple=True)
@click.option("--auth", type=click.Choice(["cert", "password"]), default="cert", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="package directory (default: <data-dir>/devices/<id>)")
@click.option("--force", is_flag=True, help="re-issue credentials of a provisioned device")
@click.option("--json", "as_json", is_flag=True)
def provision_cmd(device_id, tags, groups, auth, out, force, as_json):
    """Issue credentials for DEVICE_ID and write its device package."""
    from .provision import provision

    res = provision(_ctx(), device_id, tags=_parse_tags(tags), groups=groups, auth=auth, out=out, force=force)
    if as_json:
        emit_json(res.to_dict())
    else:
        click.echo(f"provisioned {device_id} ({auth}); package: {res.package}\n"
                   f"on the device: edgekit agent install --from {res.package}")


@click.command("revoke")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True)
def revoke_cmd(device_id, as_json):
    """Remove DEVICE_ID's access at the broker (ACL, password, certificate via the CRL)."""
    from .provision import revoke

    res = revoke(_ctx(), device_id)
    emit_json(res) if as_json else click.echo(f"revoked {device_id}"
                                              + ("" if res["broker_reloaded"] else " (broker not running)"))


@click.command("serve")
@click.option("--replica", default=_SERVE.replica, show_default=True,
              help="replica name; each replica of one fleet needs its own")
@click.option("--http-port", type=int, default=None, help="artifact/stats HTTP port (default: fleet.toml)")
@click.option("--no-http", is_flag=True, help="do not serve artifacts")
@click.option("--batch-size", type=int, default=_SERVE.batch_size, show_default=True)
@click.option("--flush-interval", type=float, default=_SERVE.flush_interval, show_default=True)
@click.option("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until signalled)")
@click.option("--rollouts/--no-rollouts", default=_SERVE.rollouts, show_default=True,
              help="take part in the election of the replica that runs the rollout engine (a lease in the store)")
@click.option("--lease-seconds", type=float, default=_SERVE.lease_seconds, show_default=True,
              help="engine lease time: another replica takes over this long after the holder stops renewing")
@click.option("--share-telemetry", is_flag=True,
              help="split telemetry with the other replicas (MQTT shared subscription) instead of every replica "
                   "storing all of it; see docs/fleet.md for what a broker restart costs then")
@click.option("--metrics-per-device", is_flag=True,
              help="also export per-device series on /metrics (small fleets: one series set per device)")
@click.option("--dashboard-port", type=int, default=None,
              help="also serve the web dashboard on this port (default: no dashboard; see 'fleet dashboard')")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="dashboard address; beyond loopback it is served over TLS from the fleet's CA")
@click.option("--dashboard-insecure", is_flag=True, help="allow a plain-HTTP dashboard beyond loopback")
@click.option("-v", "--verbose", is_flag=True)
def serve_cmd(replica, http_port, no_http, batch_size, flush_interval, duration, rollouts, lease_seconds,
              share_telemetry, metrics_per_device, dashboard_port, dashboard_host, dashboard_insecure, verbose):
    """Run telemetry ingest, the artifact server (with /metrics) and optionally the dashboard until
    SIGTERM/SIGINT."""
    from .service import FleetService

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx = _ctx()
    svc = FleetService(ctx, ServiceOptions(replica=replica, http=not no_http, http_port=http_port,
                                           batch_size=batch_size, flush_interval=flush_interval,
                                           rollouts=rollouts, lease_seconds=lease_seconds,
                                           share_telemetry=share_telemetry, metrics_per_device=metrics_per_device))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    svc.start()
    click.echo(f"fleet {ctx.fleet_id!r} replica {replica!r} serving"
               + (f"; artifacts and /metrics at {svc.http.url}" if svc.http else ""), err=True)
    dash = None
    try:
        if dashboard_port is not None:
            from .dashboard.cli import start_dashboard

            dash = start_dashboard(ctx, dashboard_host, dashboard_port, None, dashboard_insecure)
            click.echo(f"dashboard at {dash.url}", err=True)
        done.wait(duration or None)
    finally:
        if dash is not None:
            dash.stop()
        svc.stop()
    click.echo(f"stopped: {svc.ingest.stats.to_dict()}", err=True)


@click.command("retention")
@click.option("--raw-days", type=float, default=None, help="override retention.raw_days")
@click.option("--json", "as_json", is_flag=True)
def retention_cmd(raw_days, as_json):
    """Fold expired raw telemetry into downsampled buckets now."""
    from .db import upgrade
    from .retention import apply_retention

    ctx = _ctx()
    upgrade(ctx.db_url)
    r = ctx.config.retention
    res = apply_retention(ctx.engine(), time.time(), raw_days if raw_days is not None else r.raw_days,
                          r.bucket_seconds)
    emit_json(res) if as_json else click.echo(f"folded {res['telemetry']} system and {res['inference']} "
                                              "inference samples into buckets")


def register(group: click.Group) -> None:
    for cmd in (init_cmd, broker_group, provision_cmd, revoke_cmd, serve_cmd, retention_cmd):
        group.add_command(cmd)
