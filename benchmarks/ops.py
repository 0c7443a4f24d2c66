"""The per-operator speed table: every registered operator with float inputs, as a single-node
model, against ONNX Runtime.

    python benchmarks/ops.py [--quick] [--ops Softmax,LayerNormalization] [--json PATH]
                                                                         (or: make bench-ops)

Each case is one node with a symbolic batch dimension ``N``, compiled once and run at a
batch-1-sized and a batch-256-sized shape typical of HEP networks ([N, 128] activations,
[N, 4, 40, 40] attention scores with and without a key padding mask, [N, 16, 16, 16] feature
maps, [25, N, 16] sequences, ...). For each shape, in one process, interleaved (A, B, C, D, A,
...), one thread: the generated ``run`` from a C++ loop, ONNX Runtime's ``RunWithBinding`` from a
C++ loop through its C API (``benchmarks/ort_capi.py``: the session bound once to the inputs and
to preallocated outputs), ``model.infer`` from Python, and ONNX Runtime ``run`` and I/O binding
from Python. Medians; the ratios are medians of per-repetition ratios (above 1: faster than ONNX
Runtime): **ORT C / C++ loop**, both runtimes called from C++ as an event loop calls them, each
with its whole cost per call; **ORT net / C++ loop**, where ORT net is I/O binding
minus ORT's fixed cost per call from Python (I/O binding of a one-element Identity model, measured
in the same rounds), the operator against the operator, both timed call by call (the median
call of each repetition: ``bench.python_call_median``); **ORT iobind / C++ loop**, which charges
ORT its Python call; **ORT run / infer**, both from Python.
The outputs are compared with ONNX Runtime's first (a case that disagrees is reported, not
timed), and the C API loop's outputs after its timed calls with ONNX Runtime's Python results.

Operators that need more than one node (sequences and optionals between tensors, windows and
mel filters feeding the operator that uses them) are timed as a small graph whose inputs and
outputs are tensors; control flow (If, Loop, Scan) with a small float body. Random generators
(RandomNormal, RandomUniform, their *Like forms, Bernoulli) cannot give onnxruntime's values:
for them shape, dtype, mean and standard deviation are compared (within 6 standard errors).
Registered operators with no float input (bitwise, boolean, integer-only quantised ones),
those that make shapes or constants (Shape, Size, Constant, Range, ...) and those onnxruntime
cannot run are listed as not covered, with the reason, so the table says what it leaves out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root
from benchmarks.bench import CppLoop, aligned_empty, interleaved, ort_iobinding, python_call_median, python_rep
from benchmarks.ort_capi import OrtCError, OrtCLoop

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "ops.json"
F = np.float32
BATCHES = (1, 256)


@dataclass
class Case:
    """One single-node benchmark: ``inputs`` are (name, shape with "N", value kind), constants go
    to ``inits``; ``outputs`` are (name, numpy dtype)."""

    label: str
    op: str
    inputs: list[tuple[str, tuple, str]]
    attrs: dict = field(default_factory=dict)
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: list[tuple[str, type]] = field(default_factory=lambda: [("y", F)])
    opset: int = 22
    batches: tuple[int, ...] = BATCHES
    #: input names of the node (constants included), when not inputs + inits in that order
    node_inputs: list[str] | None = None
    #: the node's domain (ai.onnx.ml, ...) and the version imported for it
    domain: str = ""
    domain_opset: int = 1
    #: a small graph instead of one node (sequences, optionals, windows feeding an operator):
    #: its nodes; every operator in it counts as covered (``op`` is the one the label is about)
    nodes: list[onnx.NodeProto] | None = None
    #: "values": allclose with onnxruntime; "stats": random values, which cannot match
    #: onnxruntime's: same shape and dtype, mean and standard deviation within a statistical bound
    compare: str = "values"

    def model(self) -> onnx.ModelProto:
        names = self.node_inputs or [n for n, _, _ in self.inputs] + list(self.inits)
        nodes = self.nodes or [helper.make_node(self.op, names, [n for n, _ in self.outputs], domain=self.domain or None,
                                                **self.attrs)]
        ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(_dtype(kind))), list(shape))
               for n, shape, kind in self.inputs]
        outs = [helper.make_value_info(n, SEQ_MAP) if t is SEQ_MAP else
                helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
                for n, t in self.outputs]
        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        graph = helper.make_graph(nodes, self.label, ins, outs, inits)
        imports = [helper.make_opsetid("", self.opset)]
        if self.domain:
            imports.append(helper.make_opsetid(self.domain, self.domain_opset))
        return helper.make_model(graph, opset_imports=imports, ir_version=10)

    def covers(self) -> set[str]:
        """The registry names (``domain::Op`` outside the default domain) of the operators timed."""
        nodes = self.nodes or [helper.make_node(self.op, [], [], domain=self.domain or None)]
        return {f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in nodes}

    def arrays(self, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
        return [_values(kind, tuple(batch if d == "N" else d for d in shape), rng) for _, shape, kind in self.inputs]


#: the output type of ZipMap (a sequence of {class: probability} maps in onnxruntime)
SEQ_MAP = helper.make_sequence_type_proto(helper.make_map_type_proto(
    onnx.TensorProto.INT64, helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None)))


def _dtype(kind: str):
    return {"int64": np.int64, "lens": np.int64, "bool": np.bool_}.get(kind.split(":")[0], F)


def _values(kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Input values: ``normal``, ``unit`` (-0.9..0.9), ``pos`` (0.1..4), ``gt1`` (1.1..5),
    ``masked`` (normal scores with the last 40% of every row at -1e9, a key padding mask),
    ``int64:K`` (indices in 0..K-1), ``lens:K`` (lengths in 1..K), ``few`` (whole numbers
    0..31, many repeats), ``prob`` (0..1), ``boxes`` (corner boxes [y1, x1, y2, x2] in a
    100x100 image, sides 5..30), ``bool``."""
    if kind == "normal":
        return rng.standard_normal(shape).astype(F)
    if kind == "unit":
        return rng.uniform(-0.9, 0.9, shape).astype(F)
    if kind == "pos":
        return rng.uniform(0.1, 4.0, shape).astype(F)
    if kind == "gt1":
        return rng.uniform(1.1, 5.0, shape).astype(F)
    if kind == "masked":
        x = rng.standard_normal(shape).astype(F)
        x[..., int(shape[-1] * 0.6):] = -1e9
        return x
    if kind.startswith("int64:"):
        return rng.integers(0, int(kind.split(":")[1]), shape).astype(np.int64)
    if kind.startswith("lens:"):
        return rng.integers(1, int(kind.split(":")[1]) + 1, shape).astype(np.int64)
    if kind == "few":
        return rng.integers(0, 32, shape).astype(F)
    if kind == "prob":
        return rng.random(shape).astype(F)
    if kind == "boxes":
        corner = rng.uniform(0, 70, shape[:-1] + (2,))
        return np.concatenate([corner, corner + rng.uniform(5, 30, shape[:-1] + (2,))], axis=-1).astype(F)
    if kind == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    raise ValueError(kind)


def _w(*shape: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(F)


ACT = ("N", 128)  # a dense layer's activations

UNARY = {  # op -> value kind (its domain) and attributes
    "Abs": "normal", "Acos": "unit", "Acosh": "gt1", "Asin": "unit", "Asinh": "normal", "Atan": "normal",
    "Atanh": "unit", "Ceil": "normal", "Celu": "normal", "Cos": "normal", "Cosh": "normal", "Elu": "normal",
    "Erf": "normal", "Exp": "normal", "Floor": "normal", "Gelu": "normal", "HardSigmoid": "normal",
    "HardSwish": "normal", "Identity": "normal", "LeakyRelu": "normal", "Log": "pos", "Mish": "normal",
    "Neg": "normal", "Reciprocal": "pos", "Relu": "normal", "Round": "normal", "Selu": "normal",
    "Shrink": "normal", "Sigmoid": "normal", "Sign": "normal", "Sin": "normal", "Sinh": "normal",
    "Softplus": "normal", "Softsign": "normal", "Sqrt": "pos", "Tan": "unit", "Tanh": "normal",
    "ThresholdedRelu": "normal", "IsNaN": "normal", "IsInf": "normal", "Dropout": "normal",
}
UNARY_OPSET = {"Celu": 12, "Gelu": 20, "Swish": 24}
BOOL_OUT = {"IsNaN", "IsInf"}
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu", "Mod", "Equal", "Greater",
          "GreaterOrEqual", "Less", "LessOrEqual"]
COMPARE = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"}
REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]

NOT_COVERED = {
    **dict.fromkeys(("And", "Or", "Xor", "Not", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"), "no float input"),
    **dict.fromkeys(("Constant", "ConstantOfShape", "Range", "EyeLike", "Shape", "Size", "NonZero", "OneHot"), "makes shapes or constants, not float data"),
    "ai.onnx.preview::FlexAttention": "onnxruntime 1.32 cannot load the ai.onnx.preview domain "
                                      "(\"ai.onnx.preview:FlexAttention(-1) is not a registered function/op\")",
    "SwiGLU": "onnxruntime 1.32 cannot run it: opset 28, and its function body's Swish(24) has no kernel at "
              "that opset (\"Could not find an implementation for Swish(24)\")",
    **dict.fromkeys(("ai.onnx.preview.training::Adagrad", "ai.onnx.preview.training::Adam",
                     "ai.onnx.preview.training::Momentum"), "training domain: onnxruntime's standard build lacks it"),
}


def cases() -> list[Case]:
    """The benchmark cases, in table order."""
    out: list[Case] = []
    for op, kind in UNARY.items():
        attrs = {"alpha": 0.5} if op == "Celu" else {}
        out.append(Case(op, op, [("x", ACT, kind)], attrs, outputs=[("y", bool if op in BOOL_OUT else F)],
                        opset=UNARY_OPSET.get(op, 22)))
    out.append(Case("Swish", "Swish", [("x", ACT, "normal")], opset=24))
    out.append(Case("Clip [-1, 1]", "Clip", [("x", ACT, "normal")], inits={"lo": np.array(-1, F), "hi": np.array(1, F)}))
    for op in BINARY:
        if op == "Pow":
            out.append(Case("Pow x^2", op, [("x", ACT, "normal")], inits={"e": np.array(2.0, F)}))
            out.append(Case("Pow x^y", op, [("x", ACT, "pos"), ("y2", ACT, "normal")]))
            continue
        if op == "PRelu":
            out.append(Case(op, op, [("x", ACT, "normal")], inits={"slope": _w(128)}))
            continue
        attrs = {"fmod": 1} if op == "Mod" else {}
        out.append(Case(f"{op} [N,128] + [128]", op, [("x", ACT, "normal")], attrs, inits={"b": _w(128, scale=1)},
                        outputs=[("y", bool if op in COMPARE else F)]))
    out.append(Case("Add [N,128] + [N,128]", "Add", [("x", ACT, "normal"), ("x2", ACT, "normal")]))
    out.append(Case("Where", "Where", [("c", ACT, "bool"), ("x", ACT, "normal"), ("x2", ACT, "normal")]))
    # softmax family: classifier heads, attention scores with and without a padding mask, another axis
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        out.append(Case(f"{op} [N,10]", op, [("x", ("N", 10), "normal")], {"axis": -1}))
        out.append(Case(f"{op} [N,4,40,40]", op, [("x", ("N", 4, 40, 40), "normal")], {"axis": -1}))
        out.append(Case(f"{op} [N,4,40,40] masked", op, [("x", ("N", 4, 40, 40), "masked")], {"axis": -1}))
        out.append(Case(f"{op} [N,64,50] axis 1", op, [("x", ("N", 64, 50), "normal")], {"axis": 1}))
    # normalisations
    out.append(Case("LayerNormalization [N,50,64]", "LayerNormalization", [("x", ("N", 50, 64), "normal")],
                    {"axis": -1}, {"g": _w(64, scale=1), "b": _w(64, seed=1)}))
    out.append(Case("LayerNormalization [N,300]", "LayerNormalization", [("x", ("N", 300), "normal")],
                    {"axis": -1}, {"g": _w(300, scale=1), "b": _w(300, seed=1)}))
    out.append(Case("RMSNormalization [N,50,64]", "RMSNormalization", [("x", ("N", 50, 64), "normal")],
                    {"axis": -1}, {"g": _w(64, scale=1)}, opset=23))
    out.append(Case("BatchNormalization [N,16,16,16]", "BatchNormalization", [("x", ("N", 16, 16, 16), "normal")],
                    {}, {"s": _w(16, scale=1), "b": _w(16), "m": _w(16), "v": np.abs(_w(16, seed=2)) + 0.5}))
    out.append(Case("InstanceNormalization [N,16,16,16]", "InstanceNormalization",
                    [("x", ("N", 16, 16, 16), "normal")], {}, {"s": _w(16, scale=1), "b": _w(16)}))
    out.append(Case("GroupNormalization [N,16,16,16] 4 groups", "GroupNormalization",
                    [("x", ("N", 16, 16, 16), "normal")], {"num_groups": 4}, {"s": _w(16, scale=1), "b": _w(16)},
                    opset=21))
    out.append(Case("LpNormalization [N,128]", "LpNormalization", [("x", ACT, "normal")], {"axis": -1, "p": 2}))
    out.append(Case("MeanVarianceNormalization [N,16,16,16]", "MeanVarianceNormalization",
                    [("x", ("N", 16, 16, 16), "normal")], {"axes": [0, 2, 3]}, opset=13))
    out.append(Case("LRN [N,16,16,16]", "LRN", [("x", ("N", 16, 16, 16), "normal")], {"size": 3}))
    # reductions: over the last axis (rows of 64) and over the particle axis
    for op in REDUCE:
        kind = "pos" if op in ("ReduceLogSum", "ReduceProd") else "normal"
        out.append(Case(f"{op} [N,50,64] axis -1", op, [("x", ("N", 50, 64), kind)], {"keepdims": 1},
                        {"axes": np.array([-1], np.int64)}))
        out.append(Case(f"{op} [N,50,64] axis 1", op, [("x", ("N", 50, 64), kind)], {"keepdims": 0},
                        {"axes": np.array([1], np.int64)}))
    for op in ("ArgMax", "ArgMin"):
        out.append(Case(f"{op} [N,50,64]", op, [("x", ("N", 50, 64), "normal")], {"axis": -1},
                        outputs=[("y", np.int64)]))
    out.append(Case("CumSum [N,50,64] axis 1", "CumSum", [("x", ("N", 50, 64), "normal")],
                    inits={"axis": np.array(1, np.int64)}))
    out.append(Case("TopK [N,100,100] k=17", "TopK", [("x", ("N", 100, 100), "normal")], {"axis": -1},
                    {"k": np.array([17], np.int64)}, outputs=[("v", F), ("i", np.int64)]))
    # dense algebra
    out.append(Case("Gemm [N,300]x[300,300]", "Gemm", [("x", ("N", 300), "normal")], {"transB": 1},
                    {"w": _w(300, 300), "b": _w(300)}))
    out.append(Case("Gemm [N,7]x[7,300]", "Gemm", [("x", ("N", 7), "normal")], {"transB": 1},
                    {"w": _w(300, 7), "b": _w(300)}))
    out.append(Case("MatMul [N,50,64]x[64,64]", "MatMul", [("x", ("N", 50, 64), "normal")], {}, {"w": _w(64, 64)}))
    out.append(Case("MatMul [N,4,50,16]x[N,4,16,50]", "MatMul",
                    [("q", ("N", 4, 50, 16), "normal"), ("k", ("N", 4, 16, 50), "normal")]))
    out.append(Case("Einsum np,npl->nl", "Einsum", [("z", ("N", 40), "normal"), ("p", ("N", 40, 32), "normal")],
                    {"equation": "np,npl->nl"}))
    out.append(Case("Attention [N,4,50,16]", "Attention", [("q", ("N", 4, 50, 16), "normal"),
                                                        ("k", ("N", 4, 50, 16), "normal"),
                                                        ("v", ("N", 4, 50, 16), "normal")], opset=23))
    # convolutions and pooling
    img = ("N", 16, 16, 16)
    out.append(Case("Conv 3x3 16->32 [N,16,16,16]", "Conv", [("x", img, "normal")], {"pads": [1] * 4},
                    {"w": _w(32, 16, 3, 3), "b": _w(32)}))
    out.append(Case("Conv 1x1 16->32 [N,16,16,16]", "Conv", [("x", img, "normal")], {}, {"w": _w(32, 16, 1, 1)}))
    out.append(Case("DeformConv 3x3 16->16 [N,16,16,16]", "DeformConv",
                    [("x", img, "normal"), ("off", ("N", 18, 16, 16), "normal")], {"pads": [1] * 4},
                    {"w": _w(16, 16, 3, 3), "b": _w(16)}, node_inputs=["x", "w", "off", "b"]))
    out.append(Case("Conv depthwise 3x3 [N,16,16,16]", "Conv", [("x", img, "normal")], {"pads": [1] * 4, "group": 16},
                    {"w": _w(16, 1, 3, 3)}))
    out.append(Case("Conv 3x3 1->8 [N,1,32,32]", "Conv", [("x", ("N", 1, 32, 32), "normal")], {"pads": [1] * 4},
                    {"w": _w(8, 1, 3, 3), "b": _w(8)}))
    out.append(Case("Conv1d k=1 16->64 [N,16,25]", "Conv", [("x", ("N", 16, 25), "normal")], {},
                    {"w": _w(64, 16, 1), "b": _w(64)}))
    out.append(Case("Conv3d 3x3x3 1->8 [N,1,12,12,20]", "Conv", [("x", ("N", 1, 12, 12, 20), "normal")],
                    {"pads": [1] * 6}, {"w": _w(8, 1, 3, 3, 3), "b": _w(8)}))
    out.append(Case("ConvTranspose 2x2 s2 16->8 [N,16,8,8]", "ConvTranspose", [("x", ("N", 16, 8, 8), "normal")],
                    {"strides": [2, 2]}, {"w": _w(16, 8, 2, 2)}))
    out.append(Case("MaxPool 2x2 [N,16,16,16]", "MaxPool", [("x", img, "normal")],
                    {"kernel_shape": [2, 2], "strides": [2, 2]}))
    out.append(Case("AveragePool 2x2 [N,16,16,16]", "AveragePool", [("x", img, "normal")],
                    {"kernel_shape": [2, 2], "strides": [2, 2]}))
    out.append(Case("LpPool 2x2 [N,16,16,16]", "LpPool", [("x", img, "normal")],
                    {"kernel_shape": [2, 2], "strides": [2, 2]}))
    for op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        # GlobalLpPool at opset 21: ONNX Runtime has no kernel for its opset-22 version
        out.append(Case(f"{op} [N,16,16,16]", op, [("x", img, "normal")], opset=21 if op == "GlobalLpPool" else 22))
    # recurrent layers: 25 steps, 16 features, hidden 32 (ONNX layout [seq, batch, features])
    seq = (25, "N", 16)
    for op, gates in (("LSTM", 4), ("GRU", 3), ("RNN", 1)):
        out.append(Case(f"{op} 25x16->32", op, [("x", seq, "normal")], {"hidden_size": 32},
                        {"w": _w(1, gates * 32, 16), "r": _w(1, gates * 32, 32), "b": _w(1, 2 * gates * 32)},
                        outputs=[("y", F)]))
    # data movement
    out.append(Case("Transpose [N,50,4,16] perm 0213", "Transpose", [("x", ("N", 50, 4, 16), "normal")],
                    {"perm": [0, 2, 1, 3]}))
    # batched 2-D transposes (sofie_rt::transpose2d): ParticleNet's [N, C, P] -> [N, P, C] and a
    # coordinate pair [N, 2, P] (scalar tiles)
    out.append(Case("Transpose [N,32,100] perm 021", "Transpose", [("x", ("N", 32, 100), "normal")], {"perm": [0, 2, 1]}))
    out.append(Case("Transpose [N,2,100] perm 021", "Transpose", [("x", ("N", 2, 100), "normal")], {"perm": [0, 2, 1]}))
    out.append(Case("Concat [N,128]+[N,128]", "Concat", [("x", ACT, "normal"), ("x2", ACT, "normal")], {"axis": 1}))
    out.append(Case("Split [N,192] in 3", "Split", [("x", ("N", 192), "normal")], {"axis": 1, "num_outputs": 3},
                    outputs=[("y", F), ("y2", F), ("y3", F)], opset=18))
    out.append(Case("Slice [N,50,64] -> [:, 1:, :32]", "Slice", [("x", ("N", 50, 64), "normal")], {},
                    {"s": np.array([1, 0], np.int64), "e": np.array([50, 32], np.int64),
                     "a": np.array([1, 2], np.int64)}))
    out.append(Case("Reshape [N,50,64] -> [N,50,4,16]", "Reshape", [("x", ("N", 50, 64), "normal")], {},
                    {"s": np.array([0, 50, 4, 16], np.int64)}))
    out.append(Case("Flatten [N,16,8,8]", "Flatten", [("x", ("N", 16, 8, 8), "normal")], {"axis": 1}))
    out.append(Case("Squeeze [N,1,128]", "Squeeze", [("x", ("N", 1, 128), "normal")], {},
                    {"a": np.array([1], np.int64)}))
    out.append(Case("Unsqueeze [N,128]", "Unsqueeze", [("x", ACT, "normal")], {}, {"a": np.array([1], np.int64)}))
    out.append(Case("Expand [N,1,64] -> [N,50,64]", "Expand", [("x", ("N", 1, 64), "normal")], {},
                    {"s": np.array([1, 50, 64], np.int64)}))
    out.append(Case("Tile [N,64] x 4", "Tile", [("x", ("N", 64), "normal")], {}, {"r": np.array([1, 4], np.int64)}))
    out.append(Case("Pad [N,16,16,16] by 1", "Pad", [("x", img, "normal")], {},
                    {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}))
    out.append(Case("CenterCropPad [N,16,16,16] -> 12x12", "CenterCropPad", [("x", img, "normal")], {"axes": [2, 3]},
                    {"s": np.array([12, 12], np.int64)}))
    out.append(Case("Gather [N,100,8] 16 rows axis 1", "Gather", [("x", ("N", 100, 8), "normal")], {"axis": 1},
                    {"i": np.arange(0, 100, 6, dtype=np.int64)}))
    out.append(Case("GatherElements [N,100,8]", "GatherElements",
                    [("x", ("N", 100, 8), "normal"), ("i", ("N", 16, 8), "int64:100")], {"axis": 1}))
    out.append(Case("GatherND [N,100,8] batch_dims 1", "GatherND",
                    [("x", ("N", 100, 8), "normal"), ("i", ("N", 16, 1), "int64:100")], {"batch_dims": 1}))
    out.append(Case("ScatterElements add [N,12,16]", "ScatterElements",
                    [("x", ("N", 12, 16), "normal"), ("i", ("N", 132, 16), "int64:12"), ("u", ("N", 132, 16), "normal")],
                    {"axis": 1, "reduction": "add"}))
    out.append(Case("Scatter [N,12,16]", "Scatter",
                    [("x", ("N", 12, 16), "normal"), ("i", ("N", 12, 16), "int64:12"), ("u", ("N", 12, 16), "normal")],
                    {"axis": 1}, opset=10))
    out.append(Case("ScatterND add [12,N,16]", "ScatterND",
                    [("x", (12, "N", 16), "normal"), ("u", (132, "N", 16), "normal")], {"reduction": "add"},
                    {"i": np.array([[j] for j in range(12) for _ in range(11)], np.int64)}, node_inputs=["x", "i", "u"]))
    out.append(Case("DepthToSpace [N,16,8,8] b2", "DepthToSpace", [("x", ("N", 16, 8, 8), "normal")], {"blocksize": 2}))
    out.append(Case("SpaceToDepth [N,4,16,16] b2", "SpaceToDepth", [("x", ("N", 4, 16, 16), "normal")],
                    {"blocksize": 2}))
    out.append(Case("Trilu [N,50,50]", "Trilu", [("x", ("N", 50, 50), "normal")]))
    out.append(Case("Resize nearest x2 [N,16,8,8]", "Resize", [("x", ("N", 16, 8, 8), "normal")], {"mode": "nearest"},
                    {"roi": np.array([], F), "sc": np.array([1, 1, 2, 2], F)}))
    out.append(Case("Upsample x2 [N,16,8,8]", "Upsample", [("x", ("N", 16, 8, 8), "normal")], {"mode": "nearest"},
                    {"sc": np.array([1, 1, 2, 2], F)}, opset=9))
    out.append(Case("Cast float->double [N,128]", "Cast", [("x", ACT, "normal")], {"to": onnx.TensorProto.DOUBLE},
                    outputs=[("y", np.float64)]))
    out.append(Case("CastLike float->double [N,128]", "CastLike", [("x", ACT, "normal")],
                    inits={"t": np.zeros(1, np.float64)}, outputs=[("y", np.float64)]))
    out.append(Case("QuantizeLinear [N,128]", "QuantizeLinear", [("x", ACT, "normal")], {},
                    {"s": np.array(0.05, F), "z": np.array(0, np.int8)}, outputs=[("y", np.int8)]))
    out.append(Case("DynamicQuantizeLinear [N,128]", "DynamicQuantizeLinear", [("x", ACT, "normal")],
                    outputs=[("y", np.uint8), ("s", F), ("z", np.uint8)]))
    out.append(Case("MaxUnpool 2x2 [N,16,8,8]", "MaxUnpool", [("x", ("N", 16, 8, 8), "normal"),
                                                            ("i", ("N", 16, 8, 8), "int64:64")],
                    {"kernel_shape": [2, 2], "strides": [2, 2]}))
    out.append(Case("GridSample [N,4,16,16]", "GridSample", [("x", ("N", 4, 16, 16), "normal"),
                                                          ("g", ("N", 8, 8, 2), "unit")], {}, opset=20))
    out.append(Case("AffineGrid [N,2,3] -> 16x16", "AffineGrid", [("t", ("N", 2, 3), "normal")], {},
                    {"size": np.array([1, 4, 16, 16], np.int64)}, opset=20, batches=(1,)))
    out.append(Case("RoiAlign [N,4,16,16] 8 rois", "RoiAlign", [("x", ("N", 4, 16, 16), "normal")],
                    {"output_height": 4, "output_width": 4},
                    {"rois": np.array([[1, 1, 9, 9]] * 8, F), "bi": np.zeros(8, np.int64)}, opset=16, batches=(1,)))
    out.append(Case("Col2Im [N,16,64] 2x2 -> 9x9", "Col2Im", [("x", ("N", 16, 64), "normal")], {},
                    {"im": np.array([9, 9], np.int64), "blk": np.array([2, 2], np.int64)}, opset=18))
    out.append(_tfidf_case())
    out.append(Case("NegativeLogLikelihoodLoss [N,10]", "NegativeLogLikelihoodLoss",
                    [("x", ("N", 10), "normal"), ("t", ("N",), "int64:10")], {"reduction": "none"}))
    out.append(Case("SoftmaxCrossEntropyLoss [N,10]", "SoftmaxCrossEntropyLoss",
                    [("x", ("N", 10), "normal"), ("t", ("N",), "int64:10")], {"reduction": "none"}))
    out += _more_cases()
    return out


def _n(op: str, ins: list[str], outs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, ins, outs, **attrs)


def _body(name: str, nodes: list[onnx.NodeProto], ins: list[tuple], outs: list[tuple[str, int]]):
    """A subgraph (If branch, Loop/Scan/SequenceMap body): inputs as (name, element type[, shape]),
    outputs as (name, element type)."""
    return helper.make_graph(nodes, name, [helper.make_tensor_value_info(i[0], i[1], i[2] if len(i) > 2 else None)
                                           for i in ins],
                             [helper.make_tensor_value_info(n, t, None) for n, t in outs])


FT, BT, IT = onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL, onnx.TensorProto.INT64


def _more_cases() -> list[Case]:
    """Signal, linear algebra, data movement with data-dependent sizes, random generators,
    control flow, sequences and optionals, tree ensembles and the newer function operators."""
    out: list[Case] = []
    i64 = np.int64
    # signal: a waveform of 64 (radix-2) or 50 samples, windows and mel filters as a model uses them
    for n in (64, 50):
        out.append(Case(f"DFT [N,{n},1] real, onesided", "DFT", [("x", ("N", n, 1), "normal")], {"onesided": 1},
                        {"ax": np.array(1, i64)}, node_inputs=["x", "", "ax"], opset=20))
    out.append(Case("HannWindow(64) -> STFT [N,256,1] step 16", "STFT", [("x", ("N", 256, 1), "normal")],
                    inits={"ws": np.array(64, i64), "step": np.array(16, i64)},
                    nodes=[_n("HannWindow", ["ws"], ["w"]), _n("STFT", ["x", "step", "w", "ws"], ["y"], onesided=1)],
                    opset=17))
    for op in ("HammingWindow", "BlackmanWindow"):
        out.append(Case(f"{op}(64) x waveform [N,64]", op, [("x", ("N", 64), "normal")],
                        inits={"ws": np.array(64, i64)}, nodes=[_n(op, ["ws"], ["w"]), _n("Mul", ["x", "w"], ["y"])],
                        opset=17))
    out.append(Case("MelWeightMatrix 33x16 -> MatMul [N,33]", "MelWeightMatrix", [("x", ("N", 33), "pos")],
                    inits={"nm": np.array(16, i64), "nd": np.array(64, i64), "sr": np.array(16000, i64),
                           "lo": np.array(20, F), "hi": np.array(8000, F)},
                    nodes=[_n("MelWeightMatrix", ["nm", "nd", "sr", "lo", "hi"], ["m"]), _n("MatMul", ["x", "m"], ["y"])],
                    opset=17))
    # linear algebra, cumulative product
    out.append(Case("Det [N,5,5]", "Det", [("x", ("N", 5, 5), "normal")]))
    out.append(Case("CumProd [N,50,64] axis 1", "CumProd", [("x", ("N", 50, 64), "gt1")],
                    inits={"axis": np.array(1, i64)}, opset=26))
    out.append(Case("BitCast float->int32 [N,128]", "BitCast", [("x", ACT, "normal")], {"to": onnx.TensorProto.INT32},
                    outputs=[("y", np.int32)], opset=26))
    # data movement, some with sizes known only from the data
    out.append(Case("Compress [N,128] axis 0, run-time condition", "Compress",
                    [("x", ACT, "normal"), ("c", ("N",), "bool")], {"axis": 0}))
    out.append(Case("Compress [N,128] axis 1, 32 constant columns", "Compress", [("x", ACT, "normal")], {"axis": 1},
                    {"c": np.arange(128) % 4 == 1}))
    out.append(Case("ReverseSequence [25,N,16]", "ReverseSequence", [("x", (25, "N", 16), "normal"),
                                                                    ("l", ("N",), "lens:25")],
                    {"batch_axis": 1, "time_axis": 0}))
    out.append(Case("Unique [N,64] sorted, 32 values", "Unique", [("x", ("N", 64), "few")], {"sorted": 1},
                    outputs=[("y", F), ("i", np.int64), ("inv", np.int64), ("cnt", np.int64)]))
    out.append(Case("TensorScatter [N,4,64,16] KV cache", "TensorScatter",
                    [("c", ("N", 4, 64, 16), "normal"), ("u", ("N", 4, 1, 16), "normal"), ("w", ("N",), "int64:63")],
                    opset=24))
    out.append(Case("NonMaxSuppression [N,100] boxes, 10 kept", "NonMaxSuppression",
                    [("b", ("N", 100, 4), "boxes"), ("s", ("N", 1, 100), "prob")], {},
                    {"m": np.array([10], i64), "iou": np.array([0.5], F), "st": np.array([0.1], F)},
                    outputs=[("y", np.int64)]))
    # transformer pieces (function operators of recent opsets)
    out.append(Case("RotaryEmbedding [N,4,50,16]", "RotaryEmbedding",
                    [("x", ("N", 4, 50, 16), "normal"), ("pos", ("N", 50), "int64:50")], {},
                    {"cos": np.cos(np.outer(np.arange(50), 1e-4 ** (np.arange(8) / 8))).astype(F),
                     "sin": np.sin(np.outer(np.arange(50), 1e-4 ** (np.arange(8) / 8))).astype(F)},
                    node_inputs=["x", "cos", "sin", "pos"], opset=23))
    out.append(Case("LinearAttention [N,50,4x16]", "LinearAttention",
                    [("q", ("N", 50, 64), "normal"), ("k", ("N", 50, 64), "normal"), ("v", ("N", 50, 64), "normal")],
                    {"q_num_heads": 4, "kv_num_heads": 4, "update_rule": "linear"}, outputs=[("y", F), ("st", F)], opset=27))
    out.append(Case("CausalConvWithState [N,16,25] k=4 silu", "CausalConvWithState", [("x", ("N", 16, 25), "normal")],
                    {"activation": "silu"}, {"w": _w(16, 1, 4, scale=0.5), "b": _w(16)},
                    outputs=[("y", F), ("st", F)], opset=27))
    # random generators: values cannot match onnxruntime's, distributions are compared
    for op in ("RandomNormal", "RandomUniform"):
        for b in BATCHES:
            out.append(Case(f"{op} [{b},128]", op, [], {"shape": [b, 128]}, batches=(b,), compare="stats", opset=21))
    for op in ("RandomNormalLike", "RandomUniformLike"):
        out.append(Case(f"{op} [N,128]", op, [("x", ACT, "normal")], compare="stats", opset=21))
    out.append(Case("Bernoulli [N,128]", "Bernoulli", [("x", ACT, "prob")], compare="stats", opset=21))
    # control flow with small float bodies
    out.append(Case("If [N,128] relu / tanh branches", "If", [("cond", (), "bool"), ("x", ACT, "normal")],
                    {"then_branch": _body("then", [_n("Relu", ["x"], ["t"])], [], [("t", FT)]),
                     "else_branch": _body("else", [_n("Tanh", ["x"], ["e"])], [], [("e", FT)])},
                    node_inputs=["cond"]))
    loop_body = _body("body", [_n("Mul", ["h", "a"], ["m"]), _n("Add", ["m", "b"], ["s"]), _n("Tanh", ["s"], ["h2"]),
                               _n("Identity", ["c"], ["c2"])],
                      [("it", IT, []), ("c", BT, []), ("h", FT)], [("c2", BT), ("h2", FT)])
    out.append(Case("Loop 8 x tanh(a h + b) [N,128]", "Loop", [("x", ACT, "normal")],
                    inits={"M": np.array(8, i64), "a": _w(128, scale=1), "b": _w(128, seed=1)},
                    nodes=[_n("Loop", ["M", "", "x"], ["y"], body=loop_body)]))
    scan_body = _body("body", [_n("Mul", ["h", "a"], ["m"]), _n("Add", ["m", "xt"], ["s"]), _n("Tanh", ["s"], ["h2"]),
                               _n("Identity", ["h2"], ["yt"])],
                      [("h", FT), ("xt", FT)], [("h2", FT), ("yt", FT)])
    out.append(Case("Scan 25 x tanh(a h + x_t) [25,N,16]", "Scan",
                    [("h0", ("N", 16), "normal"), ("xs", (25, "N", 16), "normal")], inits={"a": _w(16, scale=1)},
                    nodes=[_n("Scan", ["h0", "xs"], ["h", "ys"], body=scan_body, num_scan_inputs=1)],
                    outputs=[("h", F), ("ys", F)]))
    # sequences and optionals, between tensors (how exporters use them: split/unbind, lists, stack)
    out.append(Case("SplitToSequence -> SequenceAt [N,192]", "SplitToSequence", [("x", ("N", 192), "normal")],
                    inits={"sp": np.array([64, 64, 64], i64), "pos": np.array(1, i64)},
                    nodes=[_n("SplitToSequence", ["x", "sp"], ["s"], axis=1), _n("SequenceAt", ["s", "pos"], ["y"])]))
    out.append(Case("SplitToSequence -> ConcatFromSequence [N,50,64] unbind, stack", "ConcatFromSequence",
                    [("x", ("N", 50, 64), "normal")],
                    nodes=[_n("SplitToSequence", ["x"], ["s"], axis=1, keepdims=0),
                           _n("ConcatFromSequence", ["s"], ["y"], axis=2, new_axis=1)]))
    out.append(Case("SequenceConstruct, Insert, Erase, Length -> Concat [N,128]", "SequenceConstruct",
                    [("x", ACT, "normal"), ("x2", ACT, "normal"), ("x3", ACT, "normal")],
                    inits={"p0": np.array(0, i64)},
                    nodes=[_n("SequenceConstruct", ["x", "x2"], ["s1"]), _n("SequenceInsert", ["s1", "x3"], ["s2"]),
                           _n("SequenceErase", ["s2", "p0"], ["s3"]), _n("SequenceLength", ["s3"], ["n"]),
                           _n("ConcatFromSequence", ["s3"], ["y"], axis=1)],
                    outputs=[("y", F), ("n", np.int64)]))
    # (the resolve_sequences pass turns the sequences of these graphs into Split/Concat/Transpose/
    # Identity nodes: only the SequenceMap case below runs sequence kernels)
    out.append(Case("SplitToSequence 3 pieces, Insert, Erase, Length -> Concat [N,192]", "SequenceErase",
                    [("x", ("N", 192), "normal"), ("x2", ("N", 64), "normal")],
                    inits={"sp": np.array([64, 64, 64], i64), "p0": np.array(0, i64), "m1": np.array(-1, i64)},
                    nodes=[_n("SplitToSequence", ["x", "sp"], ["s"], axis=1), _n("SequenceInsert", ["s", "x2", "p0"], ["s2"]),
                           _n("SequenceErase", ["s2", "m1"], ["s3"]), _n("SequenceLength", ["s3"], ["n"]),
                           _n("ConcatFromSequence", ["s3"], ["y"], axis=1)],
                    outputs=[("y", F), ("n", np.int64)]))
    out.append(Case("SequenceEmpty, Insert x2 -> Concat [N,128]", "SequenceEmpty",
                    [("x", ACT, "normal"), ("x2", ACT, "normal")],
                    nodes=[_n("SequenceEmpty", [], ["s0"], dtype=FT), _n("SequenceInsert", ["s0", "x"], ["s1"]),
                           _n("SequenceInsert", ["s1", "x2"], ["s2"]), _n("ConcatFromSequence", ["s2"], ["y"], axis=0)]))
    map_body = _body("f", [_n("Tanh", ["e"], ["t"]), _n("Mul", ["t", "e"], ["r"])], [("e", FT)], [("r", FT)])
    out.append(Case("SequenceMap x tanh(x) over 4 x [N,64]", "SequenceMap", [("x", ("N", 4, 64), "normal")],
                    nodes=[_n("SplitToSequence", ["x"], ["s"], axis=1, keepdims=0),
                           _n("SequenceMap", ["s"], ["m"], body=map_body),
                           _n("ConcatFromSequence", ["m"], ["y"], axis=1, new_axis=1)]))
    out.append(Case("Optional -> HasElement, GetElement [N,128]", "Optional", [("x", ACT, "normal")],
                    nodes=[_n("Optional", ["x"], ["o"]), _n("OptionalHasElement", ["o"], ["h"]),
                           _n("OptionalGetElement", ["o"], ["g"]), _n("Relu", ["g"], ["y"])],
                    outputs=[("y", F), ("h", np.bool_)], opset=18))
    # ai.onnx.ml: feature selection, thresholds, label maps, boosted decision trees
    ml = {"domain": "ai.onnx.ml", "domain_opset": 3}
    out.append(Case("ArrayFeatureExtractor [N,128] 16 columns", "ArrayFeatureExtractor", [("x", ACT, "normal")],
                    inits={"i": np.arange(0, 128, 8, dtype=i64)}, **ml))
    out.append(Case("Binarizer [N,128]", "Binarizer", [("x", ACT, "normal")], {"threshold": 0.25}, **ml))
    out.append(Case("LabelEncoder int64->float [N,128]", "LabelEncoder", [("x", ACT, "int64:24")],
                    {"keys_int64s": list(range(20)), "values_floats": [0.5 * k for k in range(20)],
                     "default_float": -1.0}, domain="ai.onnx.ml", domain_opset=2))
    out += _tree_cases()
    return out


def _trees(n_trees: int, depth: int, n_features: int, seed: int = 0) -> dict:
    """Full binary trees (a boosted decision tree's shape): per tree, internal nodes 0..2^depth-2
    (children 2i+1, 2i+2) with a feature and a threshold, then 2^depth leaves with a weight."""
    rng = np.random.default_rng(seed)
    n_int, n_all = 2 ** depth - 1, 2 ** (depth + 1) - 1
    t = {"tree": [], "node": [], "feat": [], "thr": [], "leaf": [], "true": [], "false": [], "w": []}
    for tree in range(n_trees):
        for i in range(n_all):
            inner = i < n_int
            t["tree"].append(tree)
            t["node"].append(i)
            t["feat"].append(int(rng.integers(0, n_features)) if inner else 0)
            t["thr"].append(float(rng.standard_normal() * 0.7) if inner else 0.0)
            t["leaf"].append(not inner)
            t["true"].append(2 * i + 1 if inner else 0)
            t["false"].append(2 * i + 2 if inner else 0)
            t["w"].append(float(rng.standard_normal() * 0.1) if not inner else 0.0)
    return t


def _tree_cases() -> list[Case]:
    """A BDT regressor (100 trees of depth 5 on 16 features), a 3-class BDT classifier (33 rounds
    of 3 trees, softmax) and the regressor in the opset-5 TreeEnsemble form."""
    t = _trees(100, 5, 16)
    nodes = {"nodes_treeids": t["tree"], "nodes_nodeids": t["node"], "nodes_featureids": t["feat"],
             "nodes_values": t["thr"], "nodes_modes": ["LEAF" if lf else "BRANCH_LEQ" for lf in t["leaf"]],
             "nodes_truenodeids": t["true"], "nodes_falsenodeids": t["false"]}
    leaves = [k for k, lf in enumerate(t["leaf"]) if lf]
    reg = {**nodes, "n_targets": 1, "target_treeids": [t["tree"][k] for k in leaves],
           "target_nodeids": [t["node"][k] for k in leaves], "target_ids": [0] * len(leaves),
           "target_weights": [t["w"][k] for k in leaves]}
    ml = {"domain": "ai.onnx.ml", "domain_opset": 3}
    out = [Case("TreeEnsembleRegressor 100 trees depth 5 [N,16]", "TreeEnsembleRegressor", [("x", ("N", 16), "normal")],
                reg, **ml)]
    tc = _trees(99, 4, 16, seed=1)
    cnodes = {"nodes_treeids": tc["tree"], "nodes_nodeids": tc["node"], "nodes_featureids": tc["feat"],
              "nodes_values": tc["thr"], "nodes_modes": ["LEAF" if lf else "BRANCH_LEQ" for lf in tc["leaf"]],
              "nodes_truenodeids": tc["true"], "nodes_falsenodeids": tc["false"]}
    cleaves = [k for k, lf in enumerate(tc["leaf"]) if lf]
    cls = {**cnodes, "classlabels_int64s": [0, 1, 2], "post_transform": "SOFTMAX",
           "class_treeids": [tc["tree"][k] for k in cleaves], "class_nodeids": [tc["node"][k] for k in cleaves],
           "class_ids": [tc["tree"][k] % 3 for k in cleaves], "class_weights": [tc["w"][k] for k in cleaves]}
    out.append(Case("TreeEnsembleClassifier 99 trees depth 4, 3 classes [N,16]", "TreeEnsembleClassifier",
                    [("x", ("N", 16), "normal")], cls, outputs=[("label", np.int64), ("p", F)], **ml))
    # what sklearn converters emit after a classifier: the probabilities as {class: p} maps
    out.append(Case("TreeEnsembleClassifier -> ZipMap [N,16]", "ZipMap", [("x", ("N", 16), "normal")],
                    nodes=[helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "p"], domain="ai.onnx.ml", **cls),
                           helper.make_node("ZipMap", ["p"], ["z"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])],
                    outputs=[("label", np.int64), ("z", SEQ_MAP)], **ml))
    # opset-5 TreeEnsemble: internal nodes only, children are node or leaf indices
    n_int, n_leaf = 2 ** 5 - 1, 2 ** 5
    inner = [k for k, lf in enumerate(t["leaf"]) if not lf]
    roots, feats, splits, tids, tleaf, fids, fleaf = [], [], [], [], [], [], []
    for tree in range(100):
        roots.append(tree * n_int)
        for i in range(n_int):
            k = inner[tree * n_int + i]
            feats.append(t["feat"][k])
            splits.append(t["thr"][k])
            for child, ids, is_leaf in ((2 * i + 1, tids, tleaf), (2 * i + 2, fids, fleaf)):
                leaf = child >= n_int
                ids.append(tree * n_leaf + child - n_int if leaf else tree * n_int + child)
                is_leaf.append(int(leaf))
    ens = {"n_targets": 1, "aggregate_function": 1, "post_transform": 0, "tree_roots": roots,
           "nodes_featureids": feats, "nodes_splits": numpy_helper.from_array(np.array(splits, F)),
           "nodes_modes": numpy_helper.from_array(np.zeros(len(feats), np.uint8)),
           "nodes_truenodeids": tids, "nodes_trueleafs": tleaf, "nodes_falsenodeids": fids, "nodes_falseleafs": fleaf,
           "leaf_targetids": [0] * (100 * n_leaf),
           "leaf_weights": numpy_helper.from_array(np.array([t["w"][k] for k in leaves], F))}
    out.append(Case("TreeEnsemble (opset 5) 100 trees depth 5 [N,16]", "TreeEnsemble", [("x", ("N", 16), "normal")],
                    ens, domain="ai.onnx.ml", domain_opset=5))
    return out


def _tfidf_case() -> Case:
    """Bag of n-grams of token ids: 200 unigrams, 300 bigrams and 100 trigrams of a 1000-word
    vocabulary (distinct n-grams: onnxruntime refuses repeated ones), skips up to 2, TFIDF."""
    rng = np.random.default_rng(0)
    grams: dict[int, list[tuple[int, ...]]] = {}
    for size, k in ((1, 200), (2, 300), (3, 100)):
        seen: set[tuple[int, ...]] = set()
        while len(seen) < k:
            seen.add(tuple(int(t) for t in rng.integers(0, 1000, size)))
        grams[size] = sorted(seen)
    pool = [t for size in (1, 2, 3) for g in grams[size] for t in g]
    attrs = {"mode": "TFIDF", "min_gram_length": 1, "max_gram_length": 3, "max_skip_count": 2,
             "ngram_counts": [0, 200, 800], "ngram_indexes": list(range(600)), "pool_int64s": pool,
             "weights": rng.uniform(0.1, 2.0, 600).tolist()}
    return Case("TfIdfVectorizer [N,64] tokens, 600 n-grams", "TfIdfVectorizer", [("x", ("N", 64), "int64:1000")],
                attrs, opset=9)


def _covered_ops(all_cases: list[Case]) -> set[str]:
    return set().union(*(c.covers() for c in all_cases))


def ort_floor():
    """ORT's fixed cost of a call from Python: I/O binding of an Identity on one float."""
    import onnxruntime as ort

    proto = Case("floor", "Identity", [("x", (1,), "normal")]).model()
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return ort_iobinding(sess, [np.ones(1, F)])


def run_case(case: Case, loop: CppLoop, reps: int, budget: float, floor, ort_c: OrtCLoop | None = None) -> dict:
    """Compile, check against ORT and time one case at each of its batch sizes (with ``ort_c``,
    also ONNX Runtime from a C++ loop through its C API)."""
    import onnxruntime as ort

    res: dict = {"case": case.label, "op": case.op}
    proto = case.model()
    t = time.perf_counter()
    try:
        model = sofie_root.compile(proto)
    except sofie_root.SofieError as e:
        res["error"] = f"sofie_root: {type(e).__name__}: {e}"[:300]
        return res
    res["compile_s"] = time.perf_counter() - t
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: TensorScatter warns at every call that it copies the cache
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's own limits (opsets, operators): the case is reported, not timed
        res["error"] = f"onnxruntime: {e}"[:300]
        return res
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(0)
    for batch in case.batches:
        arrays = case.arrays(batch, rng)
        feeds = dict(zip(names, arrays))
        try:
            ref = sess.run(None, feeds)
        except Exception as e:
            res["error"] = f"onnxruntime at batch {batch}: {e}"[:300]
            return res
        ours = model.infer(*arrays)
        if not _agree(case, ours, ref):
            res["error"] = f"output differs from onnxruntime at batch {batch}"
            return res
        variants = {"cpp": loop.prepare(model, tuple(arrays), budget),
                    "infer": python_rep(lambda arrays=arrays: model.infer(*arrays), budget),
                    "ort_run": python_rep(lambda feeds=feeds: sess.run(None, feeds), budget),
                    "ort_iobinding": python_rep(ort_iobinding(sess, arrays), budget),
                    "ort_iob_calls": python_call_median(ort_iobinding(sess, arrays), budget),
                    "ort_floor_calls": python_call_median(floor, budget)}
        c_sess = _ort_c_session(ort_c, proto, feeds, ref, res, batch)
        if c_sess is not None:
            variants["ort_c"] = c_sess.prepare(budget)
        times = interleaved(variants, reps)
        if c_sess is not None:
            c_out = list(c_sess.outputs.values())
            c_sess.close()
            if not _agree(case, c_out, ref):
                res["ort_c_error"] = f"ONNX Runtime's C API gave other outputs than its Python API at batch {batch}"
                del times["ort_c"]
            else:
                res[f"ort_c_over_cpp_b{batch}"] = statistics.median(c / a for a, c in zip(times["cpp"],
                                                                                        times["ort_c"]))
        # ORT's own time for the node: I/O binding minus that of a one-element Identity model
        # (ORT's fixed cost per call from Python), both as medians of single calls (see
        # python_call_median: a difference of two means cannot resolve a batch-1 operator's 50-150
        # ns under a 4.4 us floor), at least 1% of it (noise can make it negative)
        net = [max(b - f, 0.01 * b) for b, f in zip(times["ort_iob_calls"], times["ort_floor_calls"])]
        res[f"ort_net_b{batch}_us"] = statistics.median(net) * 1e6
        res[f"ort_net_over_cpp_b{batch}"] = statistics.median(n / a for a, n in zip(times["cpp"], net))
        for k, v in times.items():
            res[f"{k}_b{batch}_us"] = statistics.median(v) * 1e6
        res[f"ort_iobind_over_cpp_b{batch}"] = statistics.median(b / a for a, b in zip(times["cpp"],
                                                                                      times["ort_iobinding"]))
        res[f"ort_run_over_infer_b{batch}"] = statistics.median(b / a for a, b in zip(times["infer"],
                                                                                     times["ort_run"]))
        res["shape_b" + str(batch)] = [list(a.shape) for a in arrays]
    return res


def _agree(case: Case, outputs: list, ref: list) -> bool:
    """Whether ``outputs`` match onnxruntime's ``ref`` (within 1e-3 relative, 1e-4 absolute; random
    generators by their distribution)."""
    for a, r in zip(outputs, ref):
        if isinstance(r, list):  # ZipMap's maps, one per row: here the matrix itself
            r = np.array([[m[k] for k in sorted(m)] for m in r], F).reshape(a.shape)
        same = (_same_distribution(a, np.asarray(r)) if case.compare == "stats" else
                a.shape == r.shape and np.allclose(a.astype(np.float64), r.astype(np.float64), rtol=1e-3,
                                                   atol=1e-4, equal_nan=True))
        if not same:
            return False
    return True


def _ort_c_session(ort_c: OrtCLoop | None, proto, feeds: dict, ref: list, res: dict, batch: int):
    """The case's session through ORT's C API, bound to its inputs and to 64-byte aligned outputs
    shaped like ORT's Python results; None (with ``ort_c_error`` set) when that is not possible."""
    if ort_c is None:
        return None
    if not all(isinstance(r, np.ndarray) and r.dtype != object for r in ref):
        res["ort_c_error"] = "an output that is not a numeric tensor (the C API loop binds tensors only)"
        return None
    try:
        outs = {o.name: aligned_empty(r.shape, r.dtype) for o, r in zip(proto.graph.output, ref)}
        return ort_c.session(proto.SerializeToString(), {k: np.ascontiguousarray(v) for k, v in feeds.items()}, outs)
    except (OrtCError, KeyError, ValueError, TypeError) as e:
        res["ort_c_error"] = f"batch {batch}: {e}"[:300]
        return None


def _same_distribution(a: np.ndarray, b: np.ndarray) -> bool:
    """Random outputs: same shape and dtype, and means and standard deviations that agree within
    6 standard errors (of the difference of two sample means, of two sample deviations)."""
    if a.shape != b.shape or a.dtype != b.dtype or a.size < 2:
        return False
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    sa, sb, n = a.std(), b.std(), a.size
    return bool(abs(a.mean() - b.mean()) <= 6 * math.sqrt((sa ** 2 + sb ** 2) / n) + 1e-12
                and abs(sa - sb) <= 6 * math.sqrt((sa ** 2 + sb ** 2) / (2 * n)) + 1e-12)


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def summary(results: list[dict]) -> dict:
    """Geometric means and the slowest cases of ORT net / C++ loop and of ORT C / C++ loop (over
    every timed shape), and the geometric means of ORT iobind / C++ loop and ORT run / infer."""
    def ratios(prefix: str) -> list[tuple[float, str]]:
        return sorted((r[k], f"{r['case']} (b{k.rsplit('_b', 1)[1]})") for r in results for k in r
                      if k.startswith(prefix))

    net, c = ratios("ort_net_over_cpp_b"), ratios("ort_c_over_cpp_b")
    raw = [r[k] for r in results for k in r if k.startswith("ort_iobind_over_cpp_b")]
    py = [r[k] for r in results for k in r if k.startswith("ort_run_over_infer_b")]
    return {"geomean_net": _geomean([v for v, _ in net]), "geomean_iobind": _geomean(raw),
            "geomean_infer": _geomean(py), "timed": len(net), "below_1": sum(v < 1 for v, _ in net),
            "slowest": net[:15], "geomean_c": _geomean([v for v, _ in c]), "timed_c": len(c),
            "below_1_c": sum(v < 1 for v, _ in c), "slowest_c": c[:15]}


def table(results: list[dict], s: dict, meta: dict) -> str:
    head = ["case"] + [f"{c} b{b}" for b in BATCHES for c in (
        "µs C++", "µs ORT C", "ORT C / C++", "µs ORT net", "ORT net / C++", "ORT iobind / C++", "ORT run / infer")]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    def f(v, fmt=".2f"):
        return "–" if v is None else format(v, fmt)

    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | not timed: {r['error'].splitlines()[0][:120]} |" + " |" * (len(head) - 2))
            continue
        row = [r["case"]]
        for b in BATCHES:
            row += [f(r.get(f"cpp_b{b}_us")), f(r.get(f"ort_c_b{b}_us")), f(r.get(f"ort_c_over_cpp_b{b}")),
                    f(r.get(f"ort_net_b{b}_us")), f(r.get(f"ort_net_over_cpp_b{b}")),
                    f(r.get(f"ort_iobind_over_cpp_b{b}")), f(r.get(f"ort_run_over_infer_b{b}"))]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if s.get("timed_c"):
        lines.append(f"ORT C / C++ loop (ONNX Runtime's RunWithBinding from a C++ loop) over {s['timed_c']} timed "
                     f"shapes: geometric mean {s['geomean_c']:.2f}, {s['below_1_c']} below 1.0.")
        lines.append("Slowest 15 (ORT C / C++ loop): " + ", ".join(f"{n} {v:.2f}" for v, n in s["slowest_c"]) + ".")
    lines.append(f"ORT net / C++ loop over {s['timed']} timed shapes: geometric mean {s['geomean_net']:.2f}, "
                 f"{s['below_1']} below 1.0; ORT iobind / C++ loop: geometric mean {s['geomean_iobind']:.2f}; "
                 f"ORT run / infer: geometric mean {s['geomean_infer']:.2f}.")
    lines.append("Slowest 15 (ORT net / C++ loop): " + ", ".join(f"{n} {v:.2f}" for v, n in s["slowest"]) + ".")
    if any("ort_c_error" in r and "error" not in r for r in results):
        lines.append("No ORT C column: " + "; ".join(f"{r['case']} ({r['ort_c_error']})" for r in results
                                                     if "ort_c_error" in r and "error" not in r) + ".")
    if meta.get("not_covered"):
        lines.append("Not covered: " + "; ".join(f"{op} ({why})" for op, why in sorted(meta["not_covered"].items())))
    lines.append(f"{meta['date']}, onnxruntime {meta['onnxruntime']}, load average {meta['load_start']:.2f} at the "
                 f"start, {meta['load_end']:.2f} at the end, {meta['seconds']:.0f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 short repetitions instead of 7")
    p.add_argument("--ops", default="", help="comma-separated op types (default: all)")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results (default: %(default)s)")
    a = p.parse_args(argv)
    reps, budget = (3, 0.02) if a.quick else (7, 0.06)
    import onnxruntime

    all_cases = cases()
    wanted = {o.strip() for o in a.ops.split(",") if o.strip()}
    # an operator by its registry name (ai.onnx.ml::TreeEnsemble) or its bare name (TreeEnsemble)
    selected = [c for c in all_cases if not wanted or any(op in wanted or op.rpartition("::")[2] in wanted
                                                          for op in c.covers())]
    registered = set(sofie_root.supported_ops())
    covered = _covered_ops(all_cases)
    not_covered = {op: NOT_COVERED.get(op, "no case yet") for op in sorted(registered - covered)}
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "onnxruntime": onnxruntime.__version__, "load_start": os.getloadavg()[0], "cpu_count": os.cpu_count(),
            "not_covered": not_covered, "quick": a.quick}
    t0 = time.perf_counter()
    loop = CppLoop()
    floor = ort_floor()
    try:
        ort_c = OrtCLoop()
    except (OrtCError, OSError) as e:
        print(f"no ORT C column: {e}", file=sys.stderr)
        ort_c = None
    results = []
    for i, case in enumerate(selected):
        results.append(run_case(case, loop, reps, budget, floor, ort_c))
        r = results[-1]
        print(f"  [{i + 1}/{len(selected)}] {case.label}: "
              + (r.get("error", "") or f"net {r.get('ort_net_over_cpp_b1', 0):.2f}, C {r.get('ort_c_over_cpp_b1', 0):.2f}"),
              file=sys.stderr, flush=True)
    meta["load_end"] = os.getloadavg()[0]
    meta["seconds"] = time.perf_counter() - t0
    s = summary(results)
    print(table(results, s, meta), flush=True)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": s, "cases": results}, indent=1))
    print(f"\n(written to {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
