"""``edgekit keys``: Ed25519 key pairs for signing bundles."""

from __future__ import annotations

from pathlib import Path

import click

from . import keys as keys_mod
from .render import emit_json


@click.group()
def keys() -> None:
    """Generate and show Ed25519 signing keys."""


@keys.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="edgekit-signing.key")
@click.option("--force", is_flag=True, help="Overwrite an existing key pair.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def generate(path: Path, force: bool, as_json: bool) -> None:
    """Write a private key to PATH (mode 0600) and its public key to PATH.pub."""
    priv, pub = keys_mod.generate_keypair(path, force=force)
    kid = keys_mod.key_id(keys_mod.load_public_key(pub))
    if as_json:
        emit_json({"private_key": str(priv), "public_key": str(pub), "key_id": kid})
    else:
        click.echo(f"private key: {priv} (mode 0600)\npublic key:  {pub}\nkey id:      {kid}")


@keys.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def show(path: Path) -> None:
    """Print the key id of a public or private key."""
    data = path.read_bytes() if path.exists() else b""
    key = keys_mod.load_private_key(path) if b"PRIVATE" in data else keys_mod.load_public_key(path)
    click.echo(keys_mod.key_id(key))
