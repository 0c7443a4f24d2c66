"""Small ONNX models for the RDataFrame tests, built with onnx.helper (no training, no download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT


def _save(nodes, inputs, outputs, inits, path: Path, metadata: dict | None = None) -> Path:
    g = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (metadata or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))
    return path


def _w(rng, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32))


def dense(path: Path, n_in: int = 3, columns: list[str] | None = None) -> Path:
    """x[N, n_in] -> Gemm(8) -> Relu -> Gemm(1) -> Sigmoid -> y[N, 1]."""
    rng = np.random.default_rng(7)
    inits = []
    for name, shape in (("W1", (n_in, 8)), ("b1", (8,)), ("W2", (8, 1)), ("b2", (1,))):
        t = _w(rng, *shape)
        t.name = name
        inits.append(t)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["z"]), helper.make_node("Sigmoid", ["z"], ["y"])]
    meta = {"sofie_root.columns": json.dumps(columns)} if columns else None
    return _save(nodes, [helper.make_tensor_value_info("x", F32, ["N", n_in])],
                 [helper.make_tensor_value_info("y", F32, ["N", 1])], inits, path, meta)


def tagger(path: Path, P: int = 4, F: int = 3, J: int = 2) -> Path:
    """particles[N, P, F] and jet[N, J] -> probs[N, 3] (softmax) and total[N, 1]."""
    rng = np.random.default_rng(8)
    W = _w(rng, P * F + J, 3)
    W.name = "W"
    b = _w(rng, 3)
    b.name = "b"
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Flatten", ["particles"], ["flat"], axis=1),
             helper.make_node("Concat", ["flat", "jet"], ["cat"], axis=1),
             helper.make_node("Gemm", ["cat", "W", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
             helper.make_node("ReduceSum", ["cat", "axes"], ["total"], keepdims=1)]
    return _save(nodes, [helper.make_tensor_value_info("particles", F32, ["N", P, F]),
                         helper.make_tensor_value_info("jet", F32, ["N", J])],
                 [helper.make_tensor_value_info("probs", F32, ["N", 3]),
                  helper.make_tensor_value_info("total", F32, ["N", 1])], [W, b, axes], path)


def identity(path: Path, shape: list) -> Path:
    """x[shape] -> Flatten -> y: returns the padded input, to compare padding implementations exactly."""
    flat = 1
    for d in shape[1:]:
        flat *= d
    nodes = [helper.make_node("Flatten", ["x"], ["y"], axis=1)]
    return _save(nodes, [helper.make_tensor_value_info("x", F32, shape)],
                 [helper.make_tensor_value_info("y", F32, ["N", flat])], [], path)


def symbolic_particles(path: Path, F: int = 2) -> Path:
    """x[N, P, F] with symbolic P -> ReduceSum over particles -> y[N, F]."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)]
    return _save(nodes, [helper.make_tensor_value_info("x", F32, ["N", "P", F])],
                 [helper.make_tensor_value_info("y", F32, ["N", F])], [axes], path)
