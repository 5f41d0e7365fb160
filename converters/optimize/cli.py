"""``edgekit optimize``: a thin click command over :func:`converters.optimize.runner.optimize` (``--recipe``) and
:func:`converters.optimize.search.search` (``--budget``).

Nothing here imports TensorFlow at module level, so ``edgekit optimize --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.errors import UsageError
from edgekit.render import console, emit_json

from ..cli import IO_NAMES, MODE_NAMES, bundle_options

RECIPE_HELP = ("Comma-separated recipes, applied in the order separable, distill, prune, cluster, qat, (convert), "
               "int4: prune:S | prune:M:N | prune:...:xnnpack | cluster:N | qat | distill[:t=T][:alpha=A] | "
               "separable[:min_in=C][:max_cost=R][:head] | "
               "int4[:fc|conv|fc+conv][:block=B][:layers=RE][:act=dynamic|int8][:others=int8|float].")


@click.command("optimize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--recipe", help=RECIPE_HELP + " Either --recipe or --budget.")
@click.option("--budget", help="Search recipes and modes for a model within this budget: comma-separated "
              "size<=N, gzip<=N (B, KB, MB, KiB, MiB), latency_p95<=T (us, ms, s; LiteRT on this host with "
              "--threads), accuracy_drop<=P (top-1 points); any subset. Exits 4 when nothing meets it.")
@click.option("--max-trials", type=click.IntRange(1), help="--budget: run (or reuse) at most this many trials.")
@click.option("--time-limit", help="--budget: start no trial after this long, e.g. 10m (a running trial finishes).")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="--budget: where finished trials are kept "
              "(default $EDGEKIT_CACHE_DIR/search or ~/.cache/edgekit/search).")
@click.option("--train", help="Training data: .npz/.npy (x, y), an image directory (labels from subfolders), or "
              "module:function yielding (x, y).")
@click.option("--val", help="Validation data (same forms), reported per epoch.")
@click.option("--eval", "eval_data", required=True, help="Evaluation data (same forms) for top-1 of float, optimized "
              "and plain int8.")
@click.option("--teacher", type=click.Path(path_type=Path), help="Teacher for distill (default: MODEL).")
@click.option("--student", type=click.Path(path_type=Path), help="Student for distill (MODEL is then the teacher).")
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True, help="Fine-tuning epochs per recipe.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="Learning rate (default: each recipe's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for shuffling, init and TF kernels.")
@click.option("--mode", type=click.Choice(MODE_NAMES), help="Conversion mode (default int8; qat forces int8, int4 "
              "starts from fp32).")
@click.option("--io", "io", type=click.Choice(IO_NAMES), help="Input/output type for int8 (int8|uint8|float).")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Multiply every input by this.")
@click.option("--offset", type=float, default=0.0, show_default=True)
@click.option("--calibration-samples", type=click.IntRange(1), default=200, show_default=True,
              help="Training samples used to calibrate int8 (optimized and baseline).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="LiteRT threads for latency.")
@click.option("--runs", type=click.IntRange(0), default=50, show_default=True, help="Latency runs (0: skip).")
@click.option("--workers", help="host:port,... of every worker: MultiWorkerMirroredStrategy via TF_CONFIG.")
@click.option("--worker-index", type=click.IntRange(0), help="This machine's position in --workers (0 writes).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output directory (.tflite, report.json, .ekb).")
@bundle_options
def optimize(model, recipe, budget, max_trials, time_limit, cache_dir, train, val, eval_data, teacher, student,
             epochs, batch_size, lr, seed, mode, io, scale, offset, calibration_samples, threads, runs, workers,
             worker_index, output, key, name, version, labels, force, as_json, quiet) -> None:
    """Optimize MODEL (.keras or .h5) with RECIPEs, convert it, measure it against plain int8 PTQ, and bundle it;
    or, with --budget, search the recipes and modes for the model that meets a budget."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .. import pipeline

    if (recipe is None) == (budget is None):
        raise UsageError("pass either --recipe (one chain) or --budget (a search)",
                         hint="see 'edgekit optimize --help'")
    if budget is not None:
        given = [flag for flag, value in (("--teacher", teacher), ("--student", student), ("--mode", mode),
                                          ("--io", io), ("--workers", workers), ("--worker-index", worker_index))
                 if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} cannot be combined with --budget (the search picks recipes and "
                             f"modes itself)", hint="drop them, or run one chain with --recipe")
        _search(model, budget, max_trials, time_limit, cache_dir, train, val, eval_data, epochs, batch_size, lr,
                seed, scale, offset, calibration_samples, threads, runs, output, key, name, version, labels, force,
                as_json, quiet)
        return
    if max_trials is not None or time_limit is not None or cache_dir is not None:
        raise UsageError("--max-trials, --time-limit and --cache-dir apply to --budget", hint="add --budget")
    from . import render
    from .recipes import parse_chain
    from .runner import OptimizeOptions, optimize as run

    parse_chain(recipe)  # a bad recipe is a one-line error before TensorFlow loads
    opts = OptimizeOptions(
        model=model, recipe=recipe, train=train, val=val, eval=eval_data, teacher=teacher, student=student,
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, mode=mode, io=io, scale=scale, offset=offset,
        calibration_samples=calibration_samples, threads=threads, runs=runs, workers=workers,
        worker_index=worker_index, output=output, key=key, name=name, version=version, labels=labels, force=force)
    with pipeline.progress_bars(not quiet and not as_json) as progress:
        result = run(opts, progress)
    if as_json:
        emit_json(result.report)
    else:
        render.render(result.report, console())


def _search(model, budget, max_trials, time_limit, cache_dir, train, val, eval_data, epochs, batch_size, lr, seed,
            scale, offset, calibration_samples, threads, runs, output, key, name, version, labels, force, as_json,
            quiet) -> None:
    from .. import pipeline
    from . import search_render
    from .budget import parse_budget
    from .errors import SearchBudgetError
    from .search import SearchOptions, search

    opts = SearchOptions(
        model=model, budget=parse_budget(budget), train=train, val=val, eval=eval_data, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, scale=scale, offset=offset, calibration_samples=calibration_samples,
        threads=threads, runs=runs, max_trials=max_trials, time_limit=time_limit, cache_dir=cache_dir,
        output=output, key=key, name=name, version=version, labels=labels, force=force)
    try:
        with pipeline.progress_bars(not quiet and not as_json) as progress:
            result = search(opts, progress)
    except SearchBudgetError as exc:
        if not as_json and exc.result is not None:
            search_render.render(exc.result.search, console())
            search_render.render_nearest(exc.result.search, console())
        raise
    if as_json:
        emit_json(result.search)
    else:
        search_render.render(result.search, console())
