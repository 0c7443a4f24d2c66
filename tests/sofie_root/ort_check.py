"""Helpers for operator tests: build small ONNX models and compare sofie_root with onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import sofie_root

ORT_IR_VERSION = 9  # onnxruntime rejects models newer than it knows


def value_info(name: str, dtype: object, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


def make_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
               outputs: Sequence[onnx.ValueInfoProto], initializers: dict[str, np.ndarray] | None = None,
               opset: int = 17, name: str = "test") -> onnx.ModelProto:
    """An ONNX model from nodes and value infos; outputs may have shape None (inferred)."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ORT_IR_VERSION)


def run_ort(model: onnx.ModelProto, *arrays: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, arrays)))


def assert_matches_ort(model: onnx.ModelProto, *arrays: np.ndarray, rtol: float = 1e-5, atol: float = 1e-6,
                       compiled: sofie_root.Model | None = None) -> list[np.ndarray]:
    """Compile ``model`` (unless given), run both and compare every output (shape, dtype, values)."""
    m = compiled if compiled is not None else sofie_root.compile(model)
    got = m.infer(*arrays)
    try:
        ref = run_ort(model, *arrays)
    except (ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.InvalidGraph) as e:
        if "Type Error" not in str(e) and "Could not find an implementation" not in str(e):
            raise
        ref = run_reference(model, *arrays)  # onnxruntime lacks this op for this dtype
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        r = np.asarray(r)
        assert g.shape == r.shape, f"output {k}: shape {g.shape} != onnxruntime's {r.shape}"
        assert g.dtype == r.dtype, f"output {k}: dtype {g.dtype} != onnxruntime's {r.dtype}"
        if r.dtype.kind == "f":
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(g, r, err_msg=f"output {k}")
    return got


def run_reference(model: onnx.ModelProto, *arrays: np.ndarray) -> list[np.ndarray]:
    """The ONNX reference evaluator (for dtypes onnxruntime does not implement, e.g. float64 Erf)."""
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(model)
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    return [np.asarray(r) for r in ref.run(None, dict(zip(names, arrays)))]
