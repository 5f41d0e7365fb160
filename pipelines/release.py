"""The release of a model the fleet runs now, read from the fleet's store (the registry's devices and the artifact
store's bundles): the gate's baseline. I/O only; the judging is :mod:`pipelines.gate`."""

from __future__ import annotations

import collections
from typing import Any

from .gate import Baseline, release_figures


def current_release(ctx: Any, name: str) -> Baseline | None:
    """The bundle of ``name`` most devices of the fleet run (None when none runs it), with its figures."""
    from edgekit.bundle import read_bundle
    from edgekit.errors import BundleError
    from fleet.registry import Registry

    running = collections.Counter(
        (d.model_version, d.model_sha256) for d in Registry(ctx.engine(), ctx.fleet_id).list()
        if d.model_name == name and d.model_sha256)
    if not running:
        return None
    (version, sha), count = max(running.items(), key=lambda kv: (kv[1], kv[0][0] or ""))
    path = ctx.paths.artifacts / f"{sha}.ekb"
    try:
        manifest = read_bundle(path, pubkey=ctx.signing_pub_path).manifest
    except (FileNotFoundError, BundleError):
        return Baseline(name, version or "?", sha, count, None, None, f"bundle {sha[:12]} not in the artifact store")
    acc, size, source = release_figures(manifest)
    return Baseline(name, version or "?", sha, count, acc, size, source)
