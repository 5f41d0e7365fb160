"""``edgekit optimize``: training-time and weight-level optimizations, each measured against plain int8 PTQ.

The library call is :func:`optimize` (``OptimizeOptions`` in, a :class:`~converters.pipeline.Result` out); the recipe
registry lives in :mod:`converters.optimize.recipes`. The budget search is :func:`converters.optimize.search.search`
(``SearchOptions`` in, a ``SearchResult`` out). Nothing here imports TensorFlow at module level.
"""

from __future__ import annotations

from .recipes import ORDER, RECIPES, Chain, Recipe, parse_chain, register_recipe


def optimize(opts, progress=None):
    """Run one optimization (see :class:`converters.optimize.runner.OptimizeOptions`)."""
    from .runner import optimize as _run

    return _run(opts, progress)


def __getattr__(name):
    if name == "OptimizeOptions":
        from .runner import OptimizeOptions

        return OptimizeOptions
    if name in ("SearchOptions", "SearchResult"):
        import importlib

        return getattr(importlib.import_module(".search", __name__), name)
    raise AttributeError(name)


__all__ = ["ORDER", "RECIPES", "Chain", "Recipe", "OptimizeOptions", "SearchOptions", "SearchResult", "optimize",
           "parse_chain", "register_recipe"]
