"""Commands that show the fleet: devices, device, telemetry, watch."""

from __future__ import annotations

import time

import click

from edgekit.render import console, emit_json, table

COLUMNS = ("id", "online", "model", "version", "last seen", "p95 ms", "cpu %", "temp °C")


def _ctx():
    from .cli_context import load_context

    return load_context()


def _engine(ctx):
    from .db import upgrade

    engine = ctx.engine()
    upgrade(engine)
    return engine


def _fmt(v, spec: str = ".1f") -> str:
    return "" if v is None else format(v, spec)


def devices_table(rows, now: float, title: str | None = None):
    from .views import ago

    return table(title, COLUMNS, [
        (r["id"], "yes" if r["online"] else "no", r["model"] or "", r["version"] or "", ago(r["last_seen"], now),
         _fmt(r["p95_ms"], ".2f"), _fmt(r["cpu"]), _fmt(r["temp"])) for r in rows])


@click.command("devices")
@click.option("--target", default=None, help="only devices matching tag:k=v, group:g or devices:a,b")
@click.option("--json", "as_json", is_flag=True)
def devices_cmd(target, as_json):
    """Table of provisioned devices: online, model, version, last seen, p95 latency, CPU, temperature."""
    from .targets import parse_target
    from .views import device_rows

    ctx = _ctx()
    now = time.time()
    rows = device_rows(_engine(ctx), ctx.fleet_id, now)
    if target:
        t = parse_target(target)
        rows = [r for r in rows if t.matches(_Dev(r))]
    if as_json:
        emit_json(rows)
    else:
        online = sum(r["online"] for r in rows)
        console().print(devices_table(rows, now, f"fleet {ctx.fleet_id}: {len(rows)} devices, {online} online"))


class _Dev:
    def __init__(self, row):
        self.id, self.tags, self.groups = row["id"], row["tags"], row["groups"]


@click.command("device")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True)
def device_cmd(device_id, as_json):
    """Everything the registry and the store know about DEVICE_ID."""
    from .views import ago, device_detail

    ctx = _ctx()
    now = time.time()
    d = device_detail(_engine(ctx), ctx.fleet_id, device_id, now)
    if as_json:
        return emit_json(d)
    con = console()
    con.print(f"[bold]{d['id']}[/bold]  {'online' if d['online'] else 'offline'}  last seen {ago(d['last_seen'], now)}")
    sha = (d["model_sha256"] or "-")[:16]
    con.print(f"model      {d['model_name'] or '-'} {d['model_version'] or ''}  sha256 {sha}")
    con.print(f"agent      {d['agent_version'] or '-'}   update state {d['update_state'] or '-'}")
    con.print(f"tags       {d['tags']}   groups {d['groups']}   auth {d['auth']}")
    con.print(f"runtime    {d['capabilities'].get('runtime', {})}")
    con.print(f"hardware   {d['capabilities'].get('hardware', {})}")
    if d["latest"]:
        last = d["latest"]
        con.print(f"system     cpu {_fmt(last['cpu'])}%  mem {_fmt(last['mem'])}%  temp {_fmt(last['temp'])}°C  "
                  f"disk {_fmt(last['disk'])}%  ({ago(last['ts'], now)})")
    for ver, s in sorted(d["inference_5m"].items()):
        con.print(f"inference  {ver}: {s['count']} runs, {s['errors']} errors, "
                  f"p95 {_fmt(s['p95_ms'], '.2f')} ms (5 min)")
    for e in d["recent_events"]:
        con.print(f"event      {ago(e['ts'], now):>8}  {e['event']}  {e['reason'] or ''}")


@click.command("telemetry")
@click.argument("device_id")
@click.option("--since", default="1h", show_default=True, help="window, e.g. 15m, 1h, 2d")
@click.option("--metric", "metrics", multiple=True,
              help="cpu, mem, temp, disk, load1, count, errors, p50_ms, p95_ms, p99_ms (default: cpu, temp, p95_ms)")
@click.option("--plot", is_flag=True, help="draw a terminal chart per metric instead of sparklines")
@click.option("--json", "as_json", is_flag=True)
def telemetry_cmd(device_id, since, metrics, plot, as_json):
    """DEVICE_ID's telemetry over a window, as sparklines, a plot, or JSON."""
    from .store import check_metric
    from edgekit.durations import parse_duration

    from .views import sparkline, telemetry_view

    ctx = _ctx()
    metrics = list(metrics) or ["cpu", "temp", "p95_ms"]
    for m in metrics:
        check_metric(m)
    view = telemetry_view(_engine(ctx), ctx.fleet_id, device_id, parse_duration(since, "--since"), metrics)
    if as_json:
        return emit_json(view)
    con = console()
    con.print(f"[bold]{device_id}[/bold] telemetry, last {since}")
    if plot:
        from .views import text_plot

        for m, s in view["metrics"].items():
            con.print(f"[bold]{m}[/bold]  ({s['n']} samples)")
            click.echo(text_plot([p["value"] for p in s["points"]]) or "  no data")
        return
    for m, s in view["metrics"].items():
        if not s["n"]:
            con.print(f"{m:>7}  no data")
            continue
        con.print(f"{m:>7}  {sparkline([p['value'] for p in s['points']])}  "
                  f"min {_fmt(s['min'], '.2f')}  max {_fmt(s['max'], '.2f')}  last {_fmt(s['last'], '.2f')}  "
                  f"({s['n']} samples)")


@click.command("watch")
@click.option("--interval", type=float, default=2.0, show_default=True)
@click.option("--count", type=int, default=0, help="stop after this many refreshes (0: until Ctrl-C)")
def watch_cmd(interval, count):
    """A live-updating devices table."""
    from rich.live import Live

    from .views import device_rows

    ctx = _ctx()
    engine = _engine(ctx)
    n = 0

    def render():
        now = time.time()
        rows = device_rows(engine, ctx.fleet_id, now)
        online = sum(r["online"] for r in rows)
        return devices_table(rows, now, f"fleet {ctx.fleet_id}: {len(rows)} devices, {online} online "
                                        f"— {time.strftime('%H:%M:%S')}")

    try:
        with Live(render(), console=console(), refresh_per_second=4, transient=False) as live:
            while True:
                n += 1
                if count and n >= count:
                    break
                time.sleep(interval)
                live.update(render())
    except KeyboardInterrupt:
        pass


def register(group: click.Group) -> None:
    for cmd in (devices_cmd, device_cmd, telemetry_cmd, watch_cmd):
        group.add_command(cmd)
