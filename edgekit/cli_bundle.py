"""``edgekit bundle``: create, inspect and verify model bundles."""

from __future__ import annotations

from pathlib import Path

import click

from . import bundle as bundle_mod
from . import keys as keys_mod
from .render import console, emit_json, human_bytes, table


@click.group()
def bundle() -> None:
    """Create, inspect and verify model bundles (*.ekb)."""


@bundle.command("create")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name (letters, digits, '_', '.', '-').")
@click.option("--version", "version", required=True, help="Semantic version, e.g. 1.0.0.")
@click.option("--key", "key", required=True, type=click.Path(path_type=Path), help="Ed25519 private key.")
@click.option("--labels", type=click.Path(path_type=Path), help="Text file with one label per line.")
@click.option("--golden", type=click.Path(path_type=Path),
              help="Golden inputs (.npz named after the input tensors, or .npy); computed outputs are pinned.")
@click.option("--target", type=click.Choice(["cpu", "edgetpu", "gpu"]), default="cpu", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("."),
              help="Output .ekb file or directory.", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing bundle.")
@click.option("--json", "as_json", is_flag=True)
def create(model, name, version, key, labels, golden, target, output, force, as_json) -> None:
    """Bundle MODEL (.tflite; .onnx for --target gpu) with its manifest, golden vectors and signature."""
    out = bundle_mod.create_bundle(model, output, name=name, version=version, key=key, labels=labels,
                                   golden_inputs=golden, target=target, force=force)
    # reload what was written and verify it with the signer's own public key before reporting success
    b = bundle_mod.read_bundle(out, keys_mod.load_private_key(key).public_key())
    if as_json:
        emit_json({"bundle": str(out), "sha256": b.sha256, "size": b.size})
    else:
        click.echo(f"wrote {out} ({human_bytes(b.size)}, sha256 {b.sha256[:16]}…)")


@bundle.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--pubkey", type=click.Path(path_type=Path), help="Also verify the signature with this public key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(path: Path, pubkey: Path | None, as_json: bool) -> None:
    """Show tensors, op histogram, sizes, hashes and signature status of a bundle."""
    b = bundle_mod.read_bundle(path, pubkey)
    d = bundle_mod.describe(b)
    if as_json:
        emit_json(d)
        return
    con = console()
    con.print(f"[bold]{d['name']} {d['version']}[/bold]  target={d['target']}  created {d['created_at']}")
    con.print(f"bundle {human_bytes(d['bundle']['size'])}  sha256 {d['bundle']['sha256']}")
    con.print(f"signature: key {d['signature']['key_id']}  {d['signature']['status']}")
    rows = []
    for kind in ("inputs", "outputs"):
        for t in d[kind]:
            q = t["quantization"]
            qs = f"scale={q['scale'][0]:.6g} zp={q['zero_point'][0]}" if q["scale"] else "-"
            rows.append((kind[:-1], t["name"], t["dtype"], t["shape"], qs))
    con.print(table("Tensors", ["", "name", "dtype", "shape", "quantization"], rows))
    con.print(table("Ops", ["op", "count"], d["ops"].items()))
    con.print(table("Files", ["file", "size", "sha256"],
                    [(n, human_bytes(e["size"]), e["sha256"][:16] + "…") for n, e in d["files"].items()]))


@bundle.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--pubkey", required=True, type=click.Path(path_type=Path), help="The signer's public key.")
@click.option("--json", "as_json", is_flag=True)
def verify(path: Path, pubkey: Path, as_json: bool) -> None:
    """Verify signature, hashes and structure; exit non-zero on any failure."""
    b = bundle_mod.verify_bundle(path, pubkey)
    if as_json:
        emit_json({"ok": True, "name": b.name, "version": b.version, "sha256": b.sha256,
                   "key_id": b.signature["key_id"]})
    else:
        click.echo(f"OK: {b.name} {b.version} signed by {b.signature['key_id']}, every payload hash matches")
