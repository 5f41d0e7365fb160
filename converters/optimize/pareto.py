"""The Pareto front of a search's trials: smaller is better on every objective. Pure logic."""

from __future__ import annotations

import math
from typing import Sequence

# what the front trades off, all minimized: bytes, gzip bytes, p95 latency, accuracy drop
OBJECTIVES = ("bytes", "gzip_bytes", "latency_p95_ms", "drop_pp")


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front(points: Sequence[Sequence[float]]) -> list[bool]:
    """For each point, whether no other point dominates it (equal points are all on the front)."""
    return [not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)]


def objective_vectors(metrics: Sequence[dict], objectives: Sequence[str] = OBJECTIVES) -> tuple[list[list[float]],
                                                                                               list[str]]:
    """The vectors to compare, over the objectives every trial measured (e.g. no latency with ``--runs 0``)."""
    used = [k for k in objectives if all(m.get(k) is not None for m in metrics)] if metrics else list(objectives)
    vectors = [[float(m[k]) if m.get(k) is not None else math.inf for k in used] for m in metrics]
    return vectors, used
