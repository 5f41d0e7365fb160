"""``publish``: verify the bundle against the fleet's key and copy it into the fleet's content-addressed artifact
store (``fleet.artifacts.publish_bundle``), where devices download it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Bundle, Published
from ..env import StepEnv

NAME = "publish"
PRODUCES = "published"
CONSUMES = {"bundle": "bundle"}
OPTIONAL: dict[str, str] = {}


@dataclass
class Config:
    def validate(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class Inputs:
    bundle: Bundle


def preflight(cfg: Config, env: StepEnv) -> None:
    env.fleet()


def external(cfg: Config, env: StepEnv) -> dict:
    ctx = env.fleet()
    return {"fleet": ctx.fleet_id, "artifacts": str(ctx.paths.artifacts)}


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> Published:
    from edgekit.bundle import read_bundle
    from edgekit.hashing import file_sha256

    ctx = env.fleet()
    url = ctx.publish_bundle(inp.bundle.bundle)
    b = read_bundle(inp.bundle.bundle, pubkey=ctx.signing_pub_path)
    doc = {"url": url, "sha256": file_sha256(inp.bundle.bundle), "name": b.name, "version": b.version,
           "bundle": str(inp.bundle.bundle), "fleet": ctx.fleet_id}
    (out / "published.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return Published(out / "published.json")
