"""``edgekit fleet dashboard``, ``edgekit fleet user …`` and ``edgekit fleet token …``."""

from __future__ import annotations

import signal
import sys
import threading
import time

import click

from edgekit.render import console, emit_json, table


def _ctx():
    from fleet.cli_context import load_context

    return load_context()


def _users():
    from fleet.rollout.service import open_store

    from .users import UserStore

    return UserStore(open_store(_ctx()).engine)  # open_store migrates the database first


def serve_options(f):
    """The dashboard's listening options, shared by ``fleet dashboard`` and ``fleet serve``."""
    for opt in reversed([
        click.option("--host", "dash_host", default="127.0.0.1", show_default=True,
                     help="address to bind; beyond loopback TLS is on (certificate from the fleet's CA)"),
        click.option("--tls/--no-tls", "dash_tls", default=None,
                     help="serve HTTPS (default: on beyond loopback, off on loopback)"),
        click.option("--insecure", "dash_insecure", is_flag=True,
                     help="allow plain HTTP beyond loopback (prints a warning)"),
    ]):
        f = opt(f)
    return f


def start_dashboard(ctx, host: str, port: int, tls: bool | None, insecure: bool):
    """Start a :class:`~fleet.dashboard.server.DashboardServer`; its warning (plain HTTP beyond loopback) goes to
    stderr in red, first."""
    from .server import DashboardServer

    server = DashboardServer(ctx, host=host, port=port, tls=tls, insecure=insecure)
    if server.warning:
        click.secho(server.warning, err=True, fg="red", bold=True)
    return server.start()


@click.command("dashboard")
@click.option("--port", type=int, default=8081, show_default=True, help="port to listen on (0: any free port)")
@serve_options
@click.option("--duration", type=float, default=0.0, help="stop after this many seconds (0: until signalled)")
def dashboard_cmd(port, dash_host, dash_tls, dash_insecure, duration):
    """Serve the web dashboard (and its JSON API under /api/v1) until SIGTERM/SIGINT."""
    ctx = _ctx()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server = start_dashboard(ctx, dash_host, port, dash_tls, dash_insecure)
    click.echo(f"dashboard of fleet {ctx.fleet_id!r} at {server.url}", err=True)
    if server.plan.tls:
        click.echo(f"  its certificate is signed by the fleet CA: {ctx.paths.ca_cert}", err=True)
    try:
        done.wait(duration or None)
    finally:
        server.stop()


# --- users -----------------------------------------------------------------------------------------------------------


@click.group("user")
def user_group():
    """Dashboard accounts (viewer: read only; operator: may pause, resume, abort, approve and create rollouts)."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator"]), required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input (for scripts)")
@click.option("--force", is_flag=True, help="replace the password and role of an existing user")
@click.option("--json", "as_json", is_flag=True)
def user_add(name, role, password_stdin, force, as_json):
    """Create dashboard user NAME with ROLE; asks for the password (twice) unless --password-stdin."""
    from .users import check_name, check_role

    check_name(name)
    check_role(role)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    out = _users().add(name, role, password, replace=force)
    emit_json(out) if as_json else click.echo(f"user {name} ({role}) {'updated' if force else 'created'}")


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def user_list(as_json):
    """Dashboard users and their roles."""
    users = _users().list()
    if as_json:
        return emit_json(users)
    console().print(table("dashboard users", ["name", "role", "created"],
                          [(u["name"], u["role"], time.strftime("%Y-%m-%d %H:%M", time.localtime(u["created_at"])))
                           for u in users]))


@user_group.command("remove")
@click.argument("name")
def user_remove(name):
    """Delete user NAME with their sessions and API tokens."""
    _users().remove(name)
    click.echo(f"user {name} removed")


# --- API tokens ------------------------------------------------------------------------------------------------------


@click.group("token")
def token_group():
    """API tokens for scripts: 'Authorization: Bearer <token>' on /api/v1 (a token acts with its user's role)."""


@token_group.command("create")
@click.argument("user")
@click.option("--name", default="script", show_default=True, help="what the token is for")
@click.option("--json", "as_json", is_flag=True)
def token_create(user, name, as_json):
    """A new API token for USER, printed once (only its hash is stored)."""
    tok = _users().create_token(user, name)
    emit_json({"user": user, "name": name, "token": tok}) if as_json else click.echo(tok)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json):
    toks = _users().list_tokens()
    if as_json:
        return emit_json(toks)
    console().print(table("API tokens", ["prefix", "user", "name", "last used"],
                          [(t["prefix"], t["user"], t["name"], t["last_used"] or "never") for t in toks]))


@token_group.command("revoke")
@click.argument("prefix")
def token_revoke(prefix):
    """Revoke the token(s) starting with PREFIX (as 'token list' shows it)."""
    from fleet.errors import FleetError

    if not _users().revoke_token(prefix):
        raise FleetError(f"no token with prefix {prefix!r}", hint="see 'edgekit fleet token list'")
    click.echo(f"token {prefix}… revoked")


def register(group: click.Group) -> None:
    for cmd in (dashboard_cmd, user_group, token_group):
        group.add_command(cmd)
