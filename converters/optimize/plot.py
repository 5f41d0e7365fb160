"""The Pareto-front plot of a budget search (``pareto.png``): matplotlib with the Agg backend, no display needed.

Up to three panels share the accuracy-drop axis: bytes, gzip bytes (what travels to a device) and p95 latency (when
measured). Trials on the four-objective Pareto front are blue and named, dominated ones grey; the step line is each
panel's own two-objective front; the chosen model is ringed and the budget's limits are dashed red lines."""

from __future__ import annotations

import io
from typing import Any


def plot_front(ok: list[dict[str, Any]], budget, chosen: str | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    from .pareto import front as pareto_front

    panels = [("bytes", "size (KB)", 1e-3, budget.size), ("gzip_bytes", "gzip bytes (KB)", 1e-3, budget.gzip)]
    if any(e["metrics"].get("latency_p95_ms") is not None for e in ok):
        panels.append(("latency_p95_ms", "p95 latency (ms)", 1.0, budget.latency_p95))
    fig = Figure(figsize=(4.6 * len(panels), 4.2), dpi=100)
    for i, (key, label, scale, limit) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        pts = [(e["metrics"][key] * scale, e["metrics"]["drop_pp"], e) for e in ok
               if e["metrics"].get(key) is not None and e["metrics"].get("drop_pp") is not None]
        dominated = [p for p in pts if not p[2].get("pareto")]
        front = [p for p in pts if p[2].get("pareto")]
        steps = sorted((p[:2] for p, on in zip(pts, pareto_front([p[:2] for p in pts])) if on))
        ax.scatter([p[0] for p in dominated], [p[1] for p in dominated], c="0.7", s=22, label="dominated")
        ax.scatter([p[0] for p in front], [p[1] for p in front], c="tab:blue", s=26, label="Pareto front")
        if steps:
            ax.step([p[0] for p in steps], [p[1] for p in steps], where="post", c="tab:blue", lw=0.8, alpha=0.6)
        for x, y, e in front:
            ax.annotate(e["label"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for x, y, e in pts:
            if e["key"] == chosen:
                ax.scatter([x], [y], s=140, facecolors="none", edgecolors="tab:green", linewidths=2, label="chosen")
        if limit is not None:
            ax.axvline(limit * scale, ls="--", c="tab:red", lw=1, label="budget")
        if budget.accuracy_drop is not None:
            ax.axhline(budget.accuracy_drop, ls="--", c="tab:red", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy drop (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"budget search: {budget.text}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
