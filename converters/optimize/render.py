"""Rich rendering of an optimize report card: the converter's card, then the optimization section."""

from __future__ import annotations

from typing import Any

from edgekit.render import human_bytes, table

from .. import report


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _num(v, fmt="{:.4g}") -> str:
    return "-" if v is None else fmt.format(v)


def render(card: dict[str, Any], con) -> None:
    opt = card["optimization"]
    res, base, vs = opt["result"], opt["baseline_int8"], opt["vs_int8"]
    con.print(f"[bold]optimize {opt['recipe']}[/bold] (order {' → '.join(opt['order'])}, mode {opt['mode']}"
              + (f", {opt['qat_scheme']}" if opt.get("qat_scheme") else "")
              + (", per-tensor weight scales" if opt.get("weight_quantization") == "per-tensor" else "") + ")")
    rows = [
        ("top-1", _pct(res["top1_float"]), _pct(res["top1"]), _pct(base["top1"])),
        ("agreement with float", "100.00%", _pct(res["agreement"]), _pct(base["agreement"])),
        ("bytes", "", human_bytes(res["bytes"]), human_bytes(base["bytes"])),
        ("gzip bytes", "", human_bytes(res["gzip_bytes"]), human_bytes(base["gzip_bytes"])),
        ("latency (ms)", "", _num(res["latency_ms"], "{:.3f}"), _num(base["latency_ms"], "{:.3f}")),
        ("params", "", _num(res.get("params"), "{}"), _num(base.get("params"), "{}")),
        ("MACs", "", _num(res.get("macs"), "{}"), _num(base.get("macs"), "{}")),
    ]
    con.print(table("optimized vs float and plain int8 PTQ (same run)", ["", "float", "optimized", "plain int8"],
                    rows))
    con.print(f"vs plain int8: gzip ×{_num(vs['gzip_ratio'])}, bytes ×{_num(vs['bytes_ratio'])}, latency "
              f"×{_num(vs['latency_ratio'])}, top-1 {_num(vs['top1_pp'], '{:+.2f}')} pp")
    con.print(table("weights in the written model", ["op", "tensor", "type", "params", "sparsity", "unique",
                                                      "max unique/channel", "encoding"],
                    [(r["op"], r["tensor"][:40], r["type"], r["params"], _pct(r["sparsity"]), r["unique"],
                      _num(r["max_unique_per_channel"], "{}"), r["encoding"]) for r in res["layers"]]))
    con.print(table("recipes", ["recipe", "wall (s)", "last epoch"],
                    [(s["spec"], _num(s["wall_s"], "{:.1f}"), _last(s)) for s in opt["stages"]]))
    report.render(card, con)


def _last(stage: dict[str, Any]) -> str:
    hist = stage.get("history") or (stage.get("distill") or {}).get("history") or []
    if not hist:
        return ""
    return " ".join(f"{k} {v:.4f}" for k, v in hist[-1].items() if k not in ("epoch", "seconds")
                    and isinstance(v, float))
