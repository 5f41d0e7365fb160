"""``edgekit fleet simulate``: provision N virtual devices (optionally) and run them against this fleet.

The fleet side only hands out credentials (batch provisioning); the devices themselves are the ``simulator``
package, which knows nothing of the fleet but its device packages and the protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.errors import UsageError


def _fraction(value: str, what: str) -> float:
    from fleet.rollout.policy import parse_fraction

    return parse_fraction(value, what)


@click.command("simulate")
@click.option("--devices", "count", type=int, required=True, help="number of virtual devices")
@click.option("--prefix", default="sim", show_default=True, help="device ids are PREFIX00000, PREFIX00001, …")
@click.option("--provision", is_flag=True, help="provision the devices that are missing (password auth)")
@click.option("--faulty", default="0%", show_default=True,
              help="share whose self-test fails on new models (all, or --faulty-version)")
@click.option("--faulty-version", "faulty_versions", multiple=True, metavar="VERSION",
              help="the faulty share fails only these model versions (default: every new model)")
@click.option("--slow", default="0%", show_default=True, help="share on which new models report a worse p95")
@click.option("--slow-factor", type=float, default=3.0, show_default=True, help="p95 multiplier of the slow share")
@click.option("--offline", default="0%", show_default=True, help="share that announces itself once, then stays away")
@click.option("--churn", type=float, default=0.0, show_default=True,
              help="connection drops per second across the fleet (the Last Will fires; devices reconnect)")
@click.option("--duration", default="0", show_default=True, help="run this long after every device started "
              "(e.g. 90s, 5m; 0: until --until-idle or Ctrl-C)")
@click.option("--until-idle", is_flag=True, help="stop once every device is idle on its desired model")
@click.option("--bundle", "bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="model every device serves at start (a .ekb; default: none)")
@click.option("--telemetry-interval", default="10s", show_default=True, help="seconds between telemetry samples")
@click.option("--inference-rate", type=float, default=5.0, show_default=True, help="simulated inferences/s")
@click.option("--self-test", "self_test", default="500ms", show_default=True, help="simulated self-test time")
@click.option("--probation", default="2s", show_default=True, help="probation before a device commits")
@click.option("--connect-concurrency", type=int, default=100, show_default=True,
              help="TLS handshakes in flight at once")
@click.option("--processes", type=int, default=1, show_default=True,
              help="split the devices over this many processes, one event loop each")
@click.option("--seed", type=int, default=0, show_default=True, help="picks which devices are faulty/slow/offline")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the JSON report here")
@click.option("--summary-interval", type=float, default=2.0, show_default=True, help="seconds between live summaries")
@click.option("--quiet", is_flag=True, help="no live summary")
def simulate_cmd(count, prefix, provision, faulty, faulty_versions, slow, slow_factor, offline, churn, duration,
                 until_idle, bundle, telemetry_interval, inference_rate, self_test, probation, connect_concurrency,
                 processes, seed, json_path, summary_interval, quiet):
    """Run N virtual devices that speak the real protocol against this fleet's broker and artifact server."""
    from fleet.registry import Registry
    from fleet.rollout.policy import parse_duration
    from simulator.behaviour import Latency, Shares
    from simulator.device import DeviceOptions
    from simulator.package import load_package
    from simulator.run import SimOptions, format_summary, simulate

    from .cli_context import load_context

    if count <= 0:
        raise UsageError(f"--devices must be positive, got {count}", hint="e.g. --devices 100")
    if processes <= 0:
        raise UsageError(f"--processes must be positive, got {processes}", hint="e.g. --processes 4")
    if churn < 0:
        raise UsageError(f"--churn must not be negative, got {churn}")
    shares = Shares(_fraction(faulty, "--faulty"), _fraction(slow, "--slow"), _fraction(offline, "--offline"), seed)
    opts = SimOptions(
        shares=shares, duration=parse_duration(duration, "--duration"), until_idle=until_idle, churn=churn,
        connect_concurrency=connect_concurrency, seed=seed, summary_interval=max(summary_interval, 0.1),
        device=DeviceOptions(telemetry_interval=max(parse_duration(telemetry_interval, "--telemetry-interval"), 0.1),
                             inference_rate=inference_rate, self_test_s=parse_duration(self_test, "--self-test"),
                             probation_s=parse_duration(probation, "--probation"),
                             faulty_versions=tuple(faulty_versions),
                             latency=Latency(slow_factor=slow_factor)))
    if not opts.duration and not until_idle:
        click.echo("running until Ctrl-C (pass --duration or --until-idle to stop by itself)", err=True)
    ctx = load_context()
    ids = [f"{prefix}{i:05d}" for i in range(count)]
    known = Registry(ctx.engine(), ctx.fleet_id).provisioned_ids()
    missing = [d for d in ids if d not in known or not (ctx.paths.device_package(d) / "agent.toml").exists()]
    if missing and not provision:
        raise UsageError(f"{len(missing)} of the {count} devices are not provisioned ({missing[0]}, …)",
                         hint="pass --provision to provision them (password auth)")
    if missing:
        from .provision import provision_many

        fresh = [d for d in missing if d not in known]
        if len(fresh) != len(missing):
            raise UsageError(f"{missing[0]} is provisioned but its package is gone",
                             hint=f"re-provision it with 'edgekit fleet provision {missing[0]} --force'")
        click.echo(f"provisioning {len(fresh)} devices…", err=True)
        provision_many(ctx, fresh, auth="password", tags={"simulated": "true"})
    if bundle is not None:
        from edgekit.bundle import read_bundle

        b = read_bundle(bundle)
        opts.model = {"name": b.name, "version": b.version, "sha256": b.sha256}
    packages = [load_package(ctx.paths.device_package(d)) for d in ids]
    report = simulate(packages, opts, report_path=json_path, processes=processes,
                      on_summary=None if quiet else lambda s: click.echo(format_summary(s), err=True))
    s = report["summary"]
    click.echo(json.dumps({k: s[k] for k in ("devices", "online", "samples", "events", "downloads", "download_bytes",
                                             "committed", "self_test_failed", "update_states", "models")},
                          sort_keys=True))


def register(group: click.Group) -> None:
    group.add_command(simulate_cmd)
