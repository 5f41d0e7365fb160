"""``edgekit pipeline compile --kfp out.yaml``: the same pipeline as Kubeflow Pipelines IR.

Each step present in the file becomes a lightweight Python component (:mod:`pipelines.kfp_components`) whose body
calls edgekit's own step through the runner; its input ``after`` is the cache key its main upstream step returned,
and its other upstream steps are ordered with ``.after()``, so the IR's DAG is the pipeline's. The only pipeline
parameter is ``pipeline_file`` (the TOML as the components see it, on a volume shared with the workdir). KFP's
own caching is turned off: edgekit's cache keys decide what runs. (No ``from __future__ import annotations``:
KFP reads the pipeline function's annotations as types.)
"""

from pathlib import Path
from typing import Any

from .spec import PipelineSpec, load


def build(spec: PipelineSpec, image: str):
    """The ``@dsl.pipeline`` function of ``spec`` (needs the ``kfp`` extra)."""
    from kfp import dsl

    from .kfp_components import FUNCTIONS

    ops = {name: dsl.component(FUNCTIONS[name], base_image=image, install_kfp_package=False)
           for name in spec.order}
    default_file = str(spec.path) if spec.path else "pipeline.toml"

    @dsl.pipeline(name=f"edgekit-{spec.name}".lower().replace("_", "-"),
                  description=f"edgekit pipeline {spec.name}: {' -> '.join(spec.order)}")
    def kfp_pipeline(pipeline_file: str = default_file):
        tasks: dict[str, Any] = {}
        for name in spec.order:
            sources = spec.steps[name].sources
            main = sources.get(_main(name) or "") or next(iter(sources.values()), None)
            task = ops[name](pipeline_file=pipeline_file, after=tasks[main].output if main else "")
            for other in set(sources.values()) - {main}:
                task.after(tasks[other])
            task.set_caching_options(False)
            task.set_display_name(name)
            tasks[name] = task

    return kfp_pipeline


def _main(name: str) -> str | None:
    from .steps import STEPS

    return STEPS[name].main_input


def compile_kfp(file: str | Path, out: str | Path, *, image: str = "edgekit:latest") -> dict[str, Any]:
    from edgekit.extras import require

    require("kfp", "kfp")
    from kfp import compiler

    spec = load(file)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build(spec, image), str(out))
    return {"output": str(out), "pipeline": spec.name, "components": [f"edgekit-{n}" for n in spec.order],
            "image": image}
