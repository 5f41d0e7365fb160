"""The conversion report card: a JSON document with a stable schema (``schema_version``), and a rich rendering.

Schema (version 2) — see docs/report-card.md for field meanings:
``schema_version, created_at, source{path,format,flavor,sha256,file_size,parameters,float_parameter_bytes,inputs},
conversion{mode,io,target,versions,timings}, model{size,sha256,size_ratio,parameter_bytes,op_count,ops,inputs,
outputs}, calibration, evaluation, accuracy, fallback, placement{cpu,edgetpu}, compiler, latency, warnings, outputs``.

``model.size_ratio`` is the converted size over the source's float32 parameter bytes (4 per float parameter), the
figure users compare a quantized model with; the source file's size (which for ``.keras``/``.h5`` also holds the
optimizer's state) is ``source.file_size``.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from edgekit.hashing import sha256_hex
from edgekit.render import human_bytes, table
from edgekit.tflite_model import inspect_tflite

from . import calibration as cal

SCHEMA_VERSION = 2  # 2: source.size became source.file_size; size_ratio is against float parameter bytes
FLOAT_BYTES = 4  # a float32 parameter
TOP_LEVEL_KEYS = ("schema_version", "created_at", "source", "conversion", "model", "calibration", "evaluation",
                  "accuracy", "fallback", "placement", "compiler", "latency", "warnings", "outputs")


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return x


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return _finite(obj)


def build(*, opts, plan, model, blob, calib, eval_ds, held_out, accuracy, fallback, precheck, compiler, latency,
          warnings, timings, versions) -> dict[str, Any]:
    info = inspect_tflite(blob)
    pre = precheck.to_dict()
    params = model.float_parameters()
    float_bytes = FLOAT_BYTES * params
    card = {
        "schema_version": SCHEMA_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "source": {"path": str(model.path), "format": model.format.kind, "flavor": model.format.flavor,
                   "sha256": model.sha256, "file_size": model.size, "parameters": params,
                   "float_parameter_bytes": float_bytes, "inputs": [s.to_dict() for s in model.inputs]},
        "conversion": {"mode": plan.mode, "io": plan.io, "target": plan.target, "versions": versions,
                       "timings": {k: round(v, 3) for k, v in timings.items()}},
        "model": {"size": len(blob), "sha256": sha256_hex(blob),
                  "size_ratio": round(len(blob) / float_bytes, 4) if float_bytes else None,
                  "parameter_bytes": info.parameter_bytes, "op_count": sum(len(s.ops) for s in info.subgraphs),
                  "ops": info.op_histogram(), "inputs": [t.to_dict() for t in info.inputs],
                  "outputs": [t.to_dict() for t in info.outputs]},
        "calibration": cal.describe(calib) if calib is not None else None,
        "evaluation": None if eval_ds is None else {**cal.describe(eval_ds), "held_out": held_out},
        "accuracy": accuracy,
        "fallback": fallback,
        "placement": {
            "cpu": {"all_ops": True, "ops": sum(len(s.ops) for s in info.subgraphs)},
            "edgetpu": {k: v for k, v in pre.items()},
        },
        "compiler": compiler,
        "latency": latency,
        "warnings": warnings,
        "outputs": {},
    }
    return _clean(card)


def summary(card: dict[str, Any]) -> dict[str, Any]:
    """The small part of the card that goes into a bundle's provenance."""
    acc = card.get("accuracy") or {}
    et = card["placement"]["edgetpu"]
    return {
        "schema_version": card["schema_version"],
        "size": card["model"]["size"], "size_ratio": card["model"]["size_ratio"],
        "float_parameter_bytes": card["source"]["float_parameter_bytes"],
        "accuracy": {k: acc.get(k) for k in ("top1_float", "top1_converted", "top1_drop_pp", "agreement",
                                            "mean_abs_error", "snr_db") if k in acc},
        "edgetpu": {"all_mapped": et["all_mapped"], "cpu_ops": et["cpu_ops"]},
        "latency_ms": (card.get("latency") or {}).get("median_ms"),
        "float_layers": len(((card.get("fallback") or {}).get("best") or {}).get("float_layers", [])),
        "warnings": len(card.get("warnings") or []),
    }


def _fmt(v, pct=False):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.4g}"
    return str(v)


def render(card: dict[str, Any], con) -> None:
    m, c = card["model"], card["conversion"]
    con.print(f"[bold]{card['source']['path']}[/bold] → {c['mode']} (io {c['io']}, target {c['target']})")
    src = card["source"]
    con.print(f"size {human_bytes(m['size'])} = {m['size_ratio']} × the float32 weights "
              f"({src['parameters']:,} parameters, {human_bytes(src['float_parameter_bytes'])}); source file "
              f"{human_bytes(src['file_size'])}")
    acc = card.get("accuracy")
    if acc:
        rows = [("samples", acc["samples"], acc.get("data"))]
        if "top1_float" in acc:
            rows += [("top-1 float", _fmt(acc["top1_float"], True), ""),
                     ("top-1 converted", _fmt(acc["top1_converted"], True), ""),
                     ("top-1 drop (pp)", _fmt(acc["top1_drop_pp"]), "")]
        rows += [("agreement", _fmt(acc["agreement"], True), "same argmax as float"),
                 ("mean |error|", _fmt(acc["mean_abs_error"]), ""), ("max |error|", _fmt(acc["max_abs_error"]), ""),
                 ("SNR (dB)", _fmt(acc["snr_db"]), "")]
        con.print(table("accuracy vs float", ["metric", "value", "note"], rows))
    lat = card.get("latency")
    if lat:
        con.print(f"latency (LiteRT, {lat['threads']} thread(s), {lat['runs']} runs): median "
                  f"{lat['median_ms']:.3f} ms, p95 {lat['p95_ms']:.3f} ms")
    et = card["placement"]["edgetpu"]
    rows = [(op, n, et["histogram"].get(op, {}).get("edgetpu", 0), et["histogram"].get(op, {}).get("cpu", 0))
            for op, n in m["ops"].items()]
    con.print(table("ops and placement", ["op", "count", "edgetpu", "cpu (if edgetpu)"], rows))
    cut = et.get("first_cut")
    if cut:
        con.print(f"[yellow]Edge TPU: first cut at op {cut['index']} ({cut['op']}): {'; '.join(cut['reasons'])}; "
                  f"{et['cpu_ops']} op(s) would run on the CPU[/yellow]")
    fb = card.get("fallback")
    if fb and fb.get("best", {}).get("float_layers"):
        con.print(f"float fallback: {len(fb['best']['float_layers'])} layer(s) kept in float, drop "
                  f"{_fmt(fb['best']['drop_pp'])} pp (budget {fb['budget_pp']} pp)")
    for w in card.get("warnings") or []:
        con.print(f"[bold yellow]warning:[/bold yellow] {w}")
    for k, v in (card.get("outputs") or {}).items():
        con.print(f"wrote {k}: {v}")


def render_precheck(pre: dict[str, Any], con, verbose: bool = False) -> None:
    rows = []
    for v in pre["ops"]:
        if verbose or v["placement"] == "cpu":
            rows.append((v["index"], v["op"], v["placement"], "; ".join(v["reasons"])))
    status = "every op maps to the Edge TPU" if pre["all_mapped"] else (
        f"{pre['cpu_ops']} op(s) on the CPU")
    con.print(f"Edge TPU precheck: {pre['edgetpu_ops']} op(s) on the Edge TPU, {status}")
    if pre.get("first_cut"):
        cut = pre["first_cut"]
        con.print(f"first cut at op {cut['index']} ({cut['op']}): {'; '.join(cut['reasons'])}")
    con.print(f"parameters on the Edge TPU: {human_bytes(pre['parameter_bytes'])} of ~"
              f"{human_bytes(pre['on_chip_bytes'])} on-chip cache")
    if rows:
        con.print(table(None, ["#", "op", "placement", "reason"], rows))
    for w in pre.get("warnings", []):
        con.print(f"[yellow]warning:[/yellow] {w}")
