"""Constant folding: nodes whose inputs are all constant are evaluated at compile time.

Evaluation uses ``onnx.reference`` (the ONNX reference implementation), so folding needs no
per-operator numpy code and follows the specification exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from ..errors import ShapeInferenceError
from ..ir.dims import Dim
from ..ir.dtypes import DType
from ..ir.graph import Graph, Node, TensorInfo

#: folding is skipped when it would create a constant larger than this (bytes) that is also
#: larger than the inputs it comes from (ConstantOfShape, Expand, Tile of a small tensor)
MAX_FOLD_GROWTH = 1 << 22

#: never folded: outputs differ from call to call
NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
              "Bernoulli"}
#: never folded either: onnx.reference computes something else than the operator's C++ (which
#: follows the specification and onnxruntime), so a constant input must not change the answer
#: (TfIdfVectorizer: the reference reads IDF weights by output column, not by n-gram)
REFERENCE_DIFFERS = {"TfIdfVectorizer"}


#: operators onnx.reference implements only from a later opset, whose later versions only add
#: element types and attributes whose defaults keep the earlier behaviour: folded at that opset
#: (onnx.reference has no DequantizeLinear before 19; versions 10 and 13 compute the same
#: (x - zero_point) * scale on the types they allow)
REFERENCE_OPSET = {"DequantizeLinear": 19, "QuantizeLinear": 19}


def should_fold(node: Node, outputs: Sequence[TensorInfo | None]) -> bool:
    if node.op_type in NEVER_FOLD or (not node.domain and node.op_type in REFERENCE_DIFFERS) or any(isinstance(v, Graph) for v in node.attrs.values()):
        return False
    # sequences and optionals are not arrays (onnx.reference returns lists and None for them)
    if any(info is not None and (info.elements is not None or info.optional is not None) for info in outputs):
        return False
    total = 0
    for info in outputs:
        if info is None:
            continue
        if any(isinstance(d, Dim) for d in info.shape):
            return False
        n = 1
        for d in info.shape:
            n *= int(d)
        total += n * info.dtype.itemsize
    return total <= MAX_FOLD_GROWTH


def to_onnx_node(node: Node) -> onnx.NodeProto:
    attrs = {}
    for k, v in node.attrs.items():
        if isinstance(v, np.ndarray):
            attrs[k] = onnx.numpy_helper.from_array(v)
        else:
            attrs[k] = v
    return helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name or None,
                            domain=node.domain or None, **attrs)


def evaluate_node(node: Node, inputs: Sequence[np.ndarray | None], out_dtypes: Sequence[DType | None],
                  where: str) -> list[np.ndarray]:
    """Run one node with ``onnx.reference`` on numpy inputs."""
    from onnx.reference import ReferenceEvaluator

    in_names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    out_names = [f"o{k}" if d is not None else "" for k, d in enumerate(out_dtypes)]
    proto = to_onnx_node(Node(node.op_type, in_names, out_names, node.attrs, node.name, node.domain))
    g_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
                for n, x in zip(in_names, inputs) if x is not None]
    g_outputs = [helper.make_tensor_value_info(n, d.onnx, None) for n, d in zip(out_names, out_dtypes) if d is not None]
    graph = helper.make_graph([proto], "fold", g_inputs, g_outputs)
    opset = node.opset
    if not node.domain and node.op_type in REFERENCE_OPSET:
        opset = max(opset, REFERENCE_OPSET[node.op_type])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain, opset)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ReferenceEvaluator(model)
            results = ref.run(None, {n: x for n, x in zip(in_names, inputs) if x is not None})
    except Exception as e:
        raise ShapeInferenceError(f"{where}: evaluating the node on its constant inputs failed: {e}") from e
    out = []
    k = 0
    for d in out_dtypes:
        if d is None:
            continue
        r = np.asarray(results[k])
        k += 1
        out.append(np.require(r.astype(d.numpy, copy=False), requirements="C"))
    return out
