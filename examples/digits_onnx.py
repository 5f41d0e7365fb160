"""Write the trained digits CNN (examples/train_digits.py) as an ONNX model in PyTorch's layout.

    python examples/digits_onnx.py out/digits.keras --out out/digits_nchw.onnx

The graph is what ``torch.onnx.export`` writes for the same network: NCHW input ``[N, 1, 8, 8]`` with a dynamic
batch, ``Conv``/``Relu``/``MaxPool`` in NCHW, a ``Transpose`` + ``Flatten`` before the first ``Gemm`` (the Keras
weights flatten H, W, C), ``Softmax`` last. It is built with ``onnx.helper`` from the Keras weights, so no PyTorch
is needed. Also writes ``<out stem>_calib.npz`` and ``<out stem>_eval.npz`` with the images in NCHW.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def keras_to_onnx(model, opset: int = 17):
    """An onnx.ModelProto for a Sequential of Conv2D(same, relu)/MaxPooling2D/Flatten/Dense layers (NCHW input)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w, c = (int(d) for d in model.inputs[0].shape[1:])
    nodes, inits = [], []
    cur = "input"

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    for i, layer in enumerate(model.layers):
        kind = type(layer).__name__
        out = f"{kind.lower()}_{i}"
        if kind == "Conv2D":
            k, b = layer.get_weights()  # HWIO
            kh, kw = k.shape[:2]
            nodes.append(helper.make_node("Conv", [cur, const(f"w{i}", k.transpose(3, 2, 0, 1)), const(f"b{i}", b)],
                                          [out], name=f"/conv{i}/Conv", kernel_shape=[kh, kw],
                                          pads=[kh // 2, kw // 2, kh // 2, kw // 2]))
        elif kind == "MaxPooling2D":
            ph, pw = layer.pool_size
            nodes.append(helper.make_node("MaxPool", [cur], [out], name=f"/pool{i}/MaxPool",
                                          kernel_shape=[ph, pw], strides=[ph, pw]))
        elif kind == "Flatten":
            nodes.append(helper.make_node("Transpose", [cur], [out + "_t"], name=f"/flatten{i}/Transpose",
                                          perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Flatten", [out + "_t"], [out], name=f"/flatten{i}/Flatten", axis=1))
        elif kind == "Dense":
            k, b = layer.get_weights()
            nodes.append(helper.make_node("Gemm", [cur, const(f"w{i}", k), const(f"b{i}", b)], [out],
                                          name=f"/fc{i}/Gemm"))
        else:
            raise ValueError(f"layer {layer.name} ({kind}) has no ONNX mapping here")
        cur = out
        act = getattr(getattr(layer, "activation", None), "__name__", "linear")
        if act in ("relu", "softmax"):
            nxt = f"{act}_{i}"
            node = helper.make_node("Relu" if act == "relu" else "Softmax", [cur], [nxt], name=f"/{act}{i}/{act}")
            nodes.append(node)
            cur = nxt
    nodes[-1].output[0] = "probs"
    classes = int(model.outputs[0].shape[-1])
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgekit-example")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def export(keras_path: Path, out: Path) -> dict:
    import keras
    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    model = keras.models.load_model(keras_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(keras_to_onnx(model), out)
    (xtr, _), (xte, yte) = train_digits.load_digits_split()
    stem = out.with_suffix("")
    np.savez(f"{stem}_calib.npz", input=xtr[:200].transpose(0, 3, 1, 2))
    np.savez(f"{stem}_eval.npz", input=xte.transpose(0, 3, 1, 2), y=yte)
    return {"model": str(out), "calibration": f"{stem}_calib.npz", "eval": f"{stem}_eval.npz"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("keras_model", type=Path)
    p.add_argument("--out", type=Path, default=Path("out/digits_nchw.onnx"))
    a = p.parse_args(argv)
    print(f"saved {export(a.keras_model, a.out)['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
