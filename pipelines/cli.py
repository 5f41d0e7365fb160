"""``edgekit pipeline``: thin click commands over :mod:`pipelines.runner`, :mod:`pipelines.lineage` and
:mod:`pipelines.kfp_export`. Nothing here imports TensorFlow at module level."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from edgekit.render import console, emit_json, human_bytes, table

from .steps import ORDER


@click.group("pipeline")
def pipeline() -> None:
    """Run a declared pipeline (data → train → optimize → convert → evaluate → gate → sign → publish → rollout)
    with cached steps, list its runs and their lineage, or export it to Kubeflow Pipelines."""


def _runs_dir(file: Path) -> Path:
    """The runs of a pipeline file: only its [pipeline] workdir is read, so history stays readable after the
    file has changed (even into one that no longer validates)."""
    from .lineage import runs_dir
    from .spec import workdir_of

    return runs_dir(workdir_of(file))


@pipeline.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--from", "from_step", type=click.Choice(ORDER), help="Run STEP and every step after it again, "
              "whatever the cache holds.")
@click.option("--force", multiple=True, type=click.Choice(ORDER), help="Run STEP again even if cached (repeatable); "
              "the steps after it rerun only if its output changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's manifest as JSON.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def run_cmd(file: Path, from_step: str | None, force: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Run the pipeline in FILE; unchanged steps come from the cache."""
    from .runner import run_pipeline

    err = console(stderr=True)
    started: dict[str, float] = {}

    def progress(step: str, msg: str) -> None:
        if quiet:
            return
        if msg == "running":
            started[step] = time.monotonic()
            err.print(f"[bold]{step}[/bold]: running")
        elif msg == "ran":
            err.print(f"[bold]{step}[/bold]: done in {time.monotonic() - started.get(step, time.monotonic()):.1f}s")
        else:
            err.print(f"[bold]{step}[/bold]: {msg}")

    try:
        result = run_pipeline(file, from_step=from_step, force=list(force), progress=progress)
    except Exception as exc:
        manifest = getattr(exc, "run_manifest", None)
        if manifest is not None and not as_json:
            render_run(manifest)  # how far it got; the one-line error follows on stderr
        raise
    if as_json:
        emit_json(result.manifest)
        return
    render_run(result.manifest)


FILE_OPTION = click.option("--file", "-f", "file", type=click.Path(path_type=Path), default="pipeline.toml",
                           show_default=True, help="The pipeline file whose runs to read.")


@pipeline.command("runs")
@FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def runs_cmd(file: Path, as_json: bool) -> None:
    """List the runs of a pipeline, oldest first."""
    from .lineage import list_runs

    runs = list_runs(_runs_dir(file))
    if as_json:
        emit_json([{k: r.get(k) for k in ("run", "pipeline", "status", "exit_code", "started", "finished", "error")}
                   | {"ran": _with(r, "ran"), "cached": _with(r, "cached")} for r in runs])
        return
    rows = [(r["run"], r["status"], _when(r.get("started")), _took(r), ", ".join(_with(r, "ran")) or "-",
             ", ".join(_with(r, "cached")) or "-", r.get("error") or "") for r in runs]
    console().print(table(f"runs of {file}", ["run", "status", "started", "took", "ran", "cached", "error"], rows))


@pipeline.command("show")
@click.argument("run_id", metavar="RUN")
@FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the run's manifest as JSON.")
def show_cmd(run_id: str, file: Path, as_json: bool) -> None:
    """Show one run (an id, a unique prefix, or 'last'): its steps, checks and every artifact with its lineage."""
    from .lineage import load_run

    doc = load_run(_runs_dir(file), run_id)
    if as_json:
        emit_json(doc)
        return
    render_run(doc)


@pipeline.command("compile")
@click.argument("file", type=click.Path(path_type=Path), default="pipeline.toml")
@click.option("--kfp", "kfp_out", type=click.Path(path_type=Path), required=True,
              help="Write Kubeflow Pipelines IR YAML here.")
@click.option("--image", default="edgekit:latest", show_default=True,
              help="Container image with edgekit installed, for every component.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def compile_cmd(file: Path, kfp_out: Path, image: str, as_json: bool) -> None:
    """Export the pipeline in FILE as Kubeflow Pipelines IR: one component per step, each calling
    'edgekit pipeline step'."""
    from .kfp_export import compile_kfp

    info = compile_kfp(file, kfp_out, image=image)
    if as_json:
        emit_json(info)
        return
    console().print(f"wrote {info['output']}: {len(info['components'])} components "
                    f"({', '.join(info['components'])}), image {image}")


@pipeline.command("step")
@click.argument("name", type=click.Choice(ORDER))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--key-out", type=click.Path(path_type=Path), help="Write the step's cache key here (KFP output).")
@click.option("--workers", help="host:port,... of every worker (train only): MultiWorkerMirroredStrategy via "
              "TF_CONFIG.")
@click.option("--worker-index", type=click.IntRange(0), help="This machine's position in --workers (0, the chief, "
              "writes the cache entry).")
def step_cmd(name: str, file: Path, key_out: Path | None, workers: str | None, worker_index: int | None) -> None:
    """Run one step NAME of FILE (the steps it depends on from the cache, or run first): for orchestrators that
    run each step as its own task. With --workers, every worker runs this command for the train step."""
    from converters.optimize.strategy import parse_workers
    from edgekit.errors import UsageError

    from .runner import run_pipeline

    cluster = parse_workers(workers, worker_index)  # a one-line usage error before anything loads
    if cluster is not None and name != "train":
        raise UsageError(f"--workers applies to the train step, not {name}",
                         hint="run 'edgekit pipeline step train FILE --workers ... --worker-index I'")
    result = run_pipeline(file, until=name, cluster=cluster)
    if key_out is not None:
        key_out.parent.mkdir(parents=True, exist_ok=True)
        key_out.write_text(result.manifest["steps"][name]["key"])
    if cluster is not None and not cluster.chief:
        click.echo(f"{name}: {result.manifest['steps'][name]['status']} on worker {cluster.index} of "
                   f"{len(cluster.workers)} (the chief keeps the model)")
        return
    click.echo(f"{name}: {result.manifest['steps'][name]['status']} ({result.run_id})")


# --- rendering -------------------------------------------------------------------------------------------------------


def _with(run: dict[str, Any], status: str) -> list[str]:
    return [s for s, v in (run.get("steps") or {}).items() if v.get("status") == status]


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def _took(run: dict[str, Any]) -> str:
    if run.get("started") and run.get("finished"):
        return f"{run['finished'] - run['started']:.1f}s"
    return "-"


def render_run(doc: dict[str, Any]) -> None:
    con = console()
    steps = doc.get("steps") or {}
    data = steps.get("data") or {}
    if data.get("checks"):
        con.print(table("data checks", ["check", "split", "value", "expected", "status"],
                        [(c["check"], c["split"], c["value"], c["expected"], c["status"]) for c in data["checks"]]))
    gate = (steps.get("gate") or {}).get("blessing")
    if gate:
        base = gate.get("baseline")
        title = "gate" + (f" (vs release {base['version']} on {base['devices']} device(s))" if base else "")
        con.print(table(title, ["check", "value", "threshold", "status", "detail"],
                        [(c["check"], _fmt(c["value"]), _fmt(c["threshold"]), c["status"], c.get("detail", ""))
                         for c in gate["checks"]]))
    rows = []
    for name, s in sorted(steps.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)):
        outs = s.get("outputs") or {}
        rows.append((name, s.get("status", ""), f"{s['seconds']:.1f}s" if "seconds" in s else "-",
                     (s.get("key") or "")[:12],
                     ", ".join(f"{Path(o['path']).name} ({human_bytes(o['size'])}, {o['sha256'][:12]})"
                               for o in outs.values()) or s.get("error", "")))
    con.print(table(f"run {doc['run']} of {doc['pipeline']}: {doc['status']}", ["step", "status", "time", "key",
                                                                                  "artifacts"], rows))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
