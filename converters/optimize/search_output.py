"""Writing a budget search's results: the chosen model, its report card and signed bundle, ``search.json`` and
``pareto.png``, staged and moved into ``-o DIR`` together (:mod:`converters.output`), so a failure or Ctrl-C leaves
the directory as it was. Needs no TensorFlow: the model and its card come from the trial, the bundle's golden
outputs from LiteRT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bundle import create_bundle
from edgekit.keys import load_private_key

from .. import report
from ..output import Staging


def write_outputs(o, names: dict[str, str], result, analysis: dict[str, Any], ok: list[dict[str, Any]],
                  budget) -> dict[str, Path]:
    from .plot import plot_front

    card = result.report
    files = {"search": names["search"], "plot": names["plot"]}
    if result.met:
        files |= {"model": names["model"], "report": names["report"]}
        if "bundle" in names:
            files["bundle"] = names["bundle"]
    staging = Staging(o.output, list(files.values()), o.force)
    with staging:
        staging.write(names["plot"], plot_front(ok, budget, chosen=(result.chosen or {}).get("key")))
        if result.met:
            staging.write(names["model"], result.model_bytes)
            if "bundle" in files:
                _bundle(o, staging.path(names["bundle"]), names, result, analysis)
            else:
                card.setdefault("warnings", []).append(
                    "no bundle written: pass --key (make one with 'edgekit keys generate fleet.key')")
            card["outputs"] = {k: str(staging.out_dir / v) for k, v in files.items()}
            staging.write(names["report"], (json.dumps(card, indent=2, sort_keys=True, default=str) + "\n").encode())
        result.search["outputs"] = {k: str(staging.out_dir / v) for k, v in files.items()}
        staging.write(names["search"], (json.dumps(result.search, indent=2, sort_keys=True, default=str)
                                        + "\n").encode())
        placed = staging.commit()
    return {k: placed[v] for k, v in files.items() if v in placed}


def _bundle(o, path: Path, names, result, analysis) -> None:
    from edgekit import __version__ as edgekit_version

    from ..pipeline import _golden_inputs

    card = result.report
    chosen = result.chosen
    conv = card.get("conversion") or {}
    arrays = [np.asarray(a, dtype=d) for a, d in zip(analysis["golden"], analysis["golden_dtypes"])]
    golden = _golden_inputs(result.model_bytes, arrays, [i["name"] for i in analysis["inputs"]])
    src = analysis["source"]
    provenance = {
        "source": {"path": src["path"], "sha256": src["sha256"], "format": src["format"], "flavor": src["flavor"]},
        "converter": {"edgekit": edgekit_version, **(conv.get("versions") or {})},
        "mode": conv.get("mode"), "io": conv.get("io"), "target": conv.get("target", "cpu"),
        "report": report.summary(card),
        "search": {"budget": result.search["budget"]["text"], "chosen": chosen["label"], "trial": chosen["key"],
                   "candidate": chosen["candidate"]},
    }
    opt = card.get("optimization")
    if opt:
        provenance["optimization"] = {"recipe": opt["recipe"], "order": opt["order"],
                                      "baseline_int8": {k: opt["baseline_int8"][k]
                                                        for k in ("bytes", "gzip_bytes", "top1")}}
    create_bundle(result.model_bytes, path, name=Path(names["model"]).stem, version=o.version,
                  key=load_private_key(o.key), labels=o.labels, golden_inputs=golden, target="cpu",
                  provenance=provenance)
