"""What to do about a failure of TensorFlow's converter or of LiteRT loading a converted model: known messages are
mapped to their own cause and remedy; anything else gets a generic hint. Pure (text in, hint out)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownFailure:
    pattern: re.Pattern
    hint: str  # may use {mode} and {op}


KNOWN: list[KnownFailure] = [
    KnownFailure(re.compile(r"no_integer_overflow_from_quantization(?:.*?Node number \d+ \((?P<op>[A-Z_0-9]+)\))?",
                            re.S),
                 "a quantization overflow, not a missing op: the {mode} scales of a {op} layer overflow LiteRT's "
                 "integer arithmetic; {mode} has no per-layer float fallback, so use --mode int8 (with "
                 "--max-accuracy-drop to keep sensitive layers in float) or --mode fp16"),
    KnownFailure(re.compile(r"16x8.*not (yet )?supported for op: '?(?P<op>[A-Z_0-9]+)|"
                            r"(?P<op2>[A-Z_0-9]+).*not supported .*16x8|int16 activations .*(?P<op3>[A-Z_]+)", re.S),
                 "op {op} has no int16x8 (16-bit activation) kernel; use --mode int8, fp16 or dynamic"),
    KnownFailure(re.compile(r"Got value of type FLOAT32 but expected type (?P<op>INT\d+|UINT\d+|BOOL)"),
                 "the model has an integer input ({op}) but was calibrated with float data; pass the integer "
                 "data (e.g. token ids) in the input's own dtype"),
    KnownFailure(re.compile(r"Max and min for dynamic tensors should be recorded during calibration: "
                            r"Failed for tensor (?P<op>\S+)"),
                 "TensorFlow's {mode} quantizer cannot calibrate the integer input '{op}'; use --mode int8 or "
                 "dynamic for models with integer inputs (token ids), or build the model from layers edgekit can "
                 "rebuild in tf_keras (converters/keras_bridge.py), whose Embedding converts"),
    KnownFailure(re.compile(r"(?:Didn't find op for builtin opcode|Encountered unresolved custom op|"
                            r"not supported by this interpreter|Op builtin_code out of range)\s*'?(?P<op>[A-Z_0-9]*)"),
                 "the model uses an op ({op}) this LiteRT build lacks; try another --mode"),
]

GENERIC_CONVERTER = "check that the model runs in TensorFlow with a batch of 1, or try another --mode; the " \
                    "converter's message is above"
GENERIC_LOAD = "LiteRT could not prepare the converted model; try another --mode, and report the message above"


def hint_for(text: str, mode: str, generic: str = GENERIC_CONVERTER) -> str:
    for known in KNOWN:
        m = known.pattern.search(text)
        if m:
            op = next((v for k, v in m.groupdict().items() if k.startswith("op") and v), "") or "model"
            return known.hint.format(mode=mode, op=op)
    return generic
