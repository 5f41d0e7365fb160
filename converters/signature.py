"""Give a converted model its source's input and output names: a ``serving_default`` SignatureDef, and output
tensors named like the model's outputs (Keras ``cls``, ``reg`` instead of ``Identity``, ``Identity_1``).

A frozen concrete function loses both: TFLite names its outputs after the graph's ``Identity`` nodes and writes no
SignatureDef (that only comes from the slower SavedModel path). The order of the outputs is left as the converter
made it, which is the traced function's output order (the Keras model's ``outputs``; a dict of outputs, as TF
flattens it, by sorted key), so evaluation, golden vectors and the device runtime, which all go by index, are
unchanged, while a device app can ask for an output by name (signature runner, manifest io spec, runtime names).
"""

from __future__ import annotations

SIGNATURE_KEY = "serving_default"


def _input_order(tensor_names: list[str], arg_names: list[str]) -> list[int] | None:
    """For each TFLite input (named ``<arg>`` or ``serving_default_<arg>:0``), the index of its source input."""
    order = []
    for tname in tensor_names:
        base = tname.split(":")[0]
        hits = [i for i, a in enumerate(arg_names) if base == a or base.endswith("_" + a)]
        if len(hits) != 1:
            return None
        order.append(hits[0])
    return order if sorted(order) == list(range(len(arg_names))) else None


def name_io(blob: bytes, inputs: list[tuple[str, str]], outputs: list[str]) -> bytes:
    """``blob`` with a SignatureDef naming its inputs and outputs, and its output tensors renamed.

    ``inputs`` are (source name, argument name the converter saw) in the source model's order; ``outputs`` the
    source's output names in the order of the converted model's outputs. A model whose input or output count does
    not match is returned unchanged (nothing can be named truthfully).
    """
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    sg = model.subgraphs[0]
    if len(sg.inputs) != len(inputs) or len(sg.outputs) != len(outputs) or len(set(outputs)) != len(outputs):
        return blob
    tensor_names = [_text(sg.tensors[i].name) for i in sg.inputs]
    order = list(range(len(inputs))) if len(inputs) == 1 else _input_order(tensor_names, [a for _, a in inputs])
    if order is None:
        return blob
    for index, name in zip(sg.outputs, outputs):
        sg.tensors[index].name = name.encode()
    sig = fb.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [_tensor_map(inputs[k][0], index) for k, index in zip(order, sg.inputs)]
    sig.outputs = [_tensor_map(name, index) for name, index in zip(outputs, sg.outputs)]
    model.signatureDefs = [sig]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _tensor_map(name: str, index: int):
    from tensorflow.lite.python import schema_py_generated as fb

    m = fb.TensorMapT()
    m.name = name
    m.tensorIndex = int(index)
    return m


def _text(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value or "")
