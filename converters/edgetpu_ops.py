"""The Edge TPU operation table, as data.

Transcribed from Coral's "TensorFlow models on the Edge TPU" page (coral.ai/docs/edgetpu/models-intro, section
"Supported operations", Edge TPU Compiler v16). Keys are TFLite builtin operator names; ``limits`` is the documented
limitation in words; ``checks`` names the op-specific rule functions in :mod:`converters.edgetpu_check` that
enforce it. Ops not in this table are not supported and fall back to the CPU, together with every op after them.

General requirements (apply to every op, from the same page): tensors are quantized to 8 bits (int8/uint8; int32
only for biases and constant parameters); tensor sizes are constant at compile time (no dynamic shapes);
parameters such as biases are constant; tensors have at most 3 dimensions, and when a tensor has more, only the 3
innermost may have a size greater than 1 (so the batch is 1).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_URL = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
COMPILER_VERSION = "16.0"
# On-chip SRAM used to cache parameters (the compiler reports ~6.9-8 MiB depending on the model)
ON_CHIP_PARAMETER_BYTES = 8 * 1024 * 1024

ALLOWED_FUSED_ACTIVATIONS = frozenset({"NONE", "RELU", "RELU6", "RELU_N1_TO_1"})
ACTIVATION_DTYPES = frozenset({"int8", "uint8"})
CONSTANT_DTYPES = frozenset({"int8", "uint8", "int32"})


@dataclass(frozen=True)
class OpRule:
    limits: str = ""
    checks: tuple[str, ...] = ()


OPS: dict[str, OpRule] = {
    "ADD": OpRule(),
    "AVERAGE_POOL_2D": OpRule("No fused activation function.", ("no_fused_activation",)),
    "CONCATENATION": OpRule("No fused activation function. If any input is a compile-time constant tensor, there "
                            "must be only 2 inputs, and this constant tensor must be all zeroes.",
                            ("no_fused_activation", "concat_constant")),
    "CONV_2D": OpRule("Must use the same dilation in x and y dimensions.", ("same_dilation",)),
    "DEPTHWISE_CONV_2D": OpRule("Dilated conv kernels must use the same dilation in x and y dimensions.",
                                ("same_dilation",)),
    "DEQUANTIZE": OpRule(),
    "EXPAND_DIMS": OpRule(),
    "FULLY_CONNECTED": OpRule("Only the default format is supported for fully-connected weights. Output tensor is "
                              "one-dimensional.", ("fc_default_format", "output_one_dimensional")),
    "L2_NORMALIZATION": OpRule(),
    "LOGISTIC": OpRule(),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": OpRule("Unidirectional LSTM only."),
    "MAXIMUM": OpRule(),
    "MAX_POOL_2D": OpRule("No fused activation function.", ("no_fused_activation",)),
    "MEAN": OpRule("No reduction in batch dimension. Supports reduction along x- and/or y-dimensions only.",
                   ("reduce_xy_only",)),
    "MINIMUM": OpRule(),
    "MUL": OpRule(),
    "PACK": OpRule("No packing in batch dimension.", ("pack_not_batch",)),
    "PAD": OpRule("No padding in batch dimension. Supports padding along x- and/or y-dimensions only.",
                  ("pad_not_batch",)),
    "PRELU": OpRule("Alpha must be 1-dimensional (only the innermost dimension can be >1 size)."),
    "QUANTIZE": OpRule(),
    "REDUCE_MAX": OpRule("Cannot operate on the batch dimension.", ("reduce_not_batch",)),
    "REDUCE_MIN": OpRule("Cannot operate on the batch dimension.", ("reduce_not_batch",)),
    "RELU": OpRule(),
    "RELU6": OpRule(),
    "RELU_N1_TO_1": OpRule(),
    "RESHAPE": OpRule("Certain reshapes might not be mapped for large tensor sizes."),
    "RESIZE_BILINEAR": OpRule("Input/output is a 3-dimensional tensor. Depending on input/output size, this operation "
                              "may not be mapped to the Edge TPU to avoid loss in precision.",),
    "RESIZE_NEAREST_NEIGHBOR": OpRule("Input/output is a 3-dimensional tensor. Depending on input/output size, this "
                                      "operation may not be mapped to the Edge TPU to avoid loss in precision."),
    "RSQRT": OpRule(),
    "SLICE": OpRule(),
    "SOFTMAX": OpRule("Supports only 1-D input tensor with a max of 16,000 elements.", ("softmax_1d",)),
    "SPACE_TO_DEPTH": OpRule(),
    "SPLIT": OpRule("No splitting in batch dimension.", ("split_not_batch",)),
    "SQUARED_DIFFERENCE": OpRule(),
    "SQUEEZE": OpRule(),
    "STRIDED_SLICE": OpRule("Supported only when all strides are equal to 1 (effectively a Slice op), with "
                            "ellipsis-axis-mask == 0 and new-axis-mask == 0.", ("strided_slice_unit",)),
    "SUB": OpRule(),
    "SUM": OpRule("Cannot operate on the batch dimension.", ("reduce_not_batch",)),
    "TANH": OpRule(),
    "TRANSPOSE": OpRule(),
    "TRANSPOSE_CONV": OpRule(),
}

SOFTMAX_MAX_ELEMENTS = 16000
# ops that sit at the float boundary of a model and run on the CPU without splitting the Edge TPU graph
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
