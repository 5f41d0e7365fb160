"""The functions the Kubeflow Pipelines components run, one per step (KFP lightweight Python components: KFP ships
each function's source to the container, so each imports edgekit inside its body). Each runs its step through
:func:`pipelines.runner.run_pipeline` with ``until`` set: the steps it depends on come from the cache in the
pipeline's workdir, which every component must see (a shared volume). Returns the step's cache key; the next
component takes it as ``after``, which is what orders the tasks in the IR. (No ``from __future__ import
annotations`` here: KFP reads the annotations as types.)"""


def edgekit_data(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("data", pipeline_file)


def edgekit_train(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("train", pipeline_file)


def edgekit_optimize(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("optimize", pipeline_file)


def edgekit_convert(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("convert", pipeline_file)


def edgekit_evaluate(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("evaluate", pipeline_file)


def edgekit_gate(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("gate", pipeline_file)


def edgekit_sign(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("sign", pipeline_file)


def edgekit_publish(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("publish", pipeline_file)


def edgekit_rollout(pipeline_file: str, after: str = "") -> str:
    from pipelines.runner import run_step
    return run_step("rollout", pipeline_file)


FUNCTIONS = {f.__name__.removeprefix("edgekit_"): f for f in (
    edgekit_data, edgekit_train, edgekit_optimize, edgekit_convert, edgekit_evaluate, edgekit_gate, edgekit_sign,
    edgekit_publish, edgekit_rollout)}
