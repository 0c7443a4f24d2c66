"""A model with every element type and every attribute kind (and a compile-time value, an If
with sub-graph initializers, special float values), built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = ["float32", "float64", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool"]


def special_arrays() -> dict[str, np.ndarray]:
    """One initializer per dtype, with the awkward values (nan payloads, -0, inf, denormals, extremes)."""
    f32 = np.array([[np.nan, -0.0, np.inf], [-np.inf, 1e-45, 3.4028235e38]], dtype=np.float32)
    f32.view(np.uint32)[0, 0] = 0x7FC12345  # a nan with a payload
    f64 = np.array([np.nan, -0.0, 5e-324, -1.7976931348623157e308, 0.1], dtype=np.float64)
    f64.view(np.uint64)[0] = 0xFFF8DEADBEEF0001
    out = {"float32": f32, "float64": f64}
    for name in DTYPES[2:-1]:
        info = np.iinfo(name)
        out[name] = np.array([info.min, info.max, 0, 1], dtype=name).reshape(2, 2)
    out["bool"] = np.array([True, False, True])
    out["int8"] = np.array(-7, dtype=np.int8)             # 0-d
    out["uint16"] = np.zeros((0, 3), dtype=np.uint16)     # empty
    return out


def every_kind_model() -> onnx.ModelProto:
    f = TensorProto.FLOAT
    arrays = special_arrays()
    inits = [numpy_helper.from_array(a, f"w_{name}") for name, a in arrays.items()]
    tensor_attr = np.array([1.0, np.nan, -2.5], dtype=np.float64)
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["a"], name="leaky", alpha=0.125,
                         extra_floats=[1.5, float("nan"), float("-inf"), -0.0],
                         extra_strings=["plain", 'x"); abort(); //', "*/ #include <x>\n"],
                         extra_ints=[-(2**63), 2**63 - 1, 0],
                         extra_string="ünïcode \\ \" '",
                         extra_tensor=numpy_helper.from_array(np.array(3.5, dtype=np.float32)),
                         extra_tensors=[numpy_helper.from_array(tensor_attr),
                                        numpy_helper.from_array(np.arange(6, dtype=np.int8).reshape(2, 3))]),
        helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0]),
        helper.make_node("Transpose", ["t"], ["a2"], perm=[1, 0]),
        helper.make_node("Softmax", ["a2"], ["s"], axis=-1),
        helper.make_node("Gelu", ["s"], ["g"], approximate="tanh"),
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("ConstantOfShape", ["shp"], ["k"],
                         value=numpy_helper.from_array(np.array([2.5], dtype=np.float32))),
        helper.make_node("Add", ["g", "k"], ["z"]),
    ]
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["z", "then_w"], ["then_out"])], "then_branch", [],
        [helper.make_tensor_value_info("then_out", f, None)],
        [numpy_helper.from_array(np.array([1.0, -2.0, 0.5, 4.0], dtype=np.float32), "then_w")])
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["z", "else_w"], ["else_out"])], "else_branch", [],
        [helper.make_tensor_value_info("else_out", f, None)],
        [numpy_helper.from_array(np.array([0.25], dtype=np.float32), "else_w")])
    nodes.append(helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g))
    outputs = [helper.make_tensor_value_info("y", f, None)]
    for name in DTYPES:
        to = helper.np_dtype_to_tensor_dtype(np.dtype(name))
        nodes.append(helper.make_node("Cast", ["x"], [f"cast_{name}"], to=to))
        outputs.append(helper.make_tensor_value_info(f"cast_{name}", to, None))
        outputs.append(helper.make_tensor_value_info(f"w_{name}", to, None))
    graph = helper.make_graph(
        nodes, "every_kind",
        [helper.make_tensor_value_info("x", f, ["N", 4]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], producer_name="sofie_root tests")
    model.ir_version = 10
    return model


def every_kind_inputs(batch: int, cond: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(batch)
    x = (rng.standard_normal((batch, 4)) * 3).astype(np.float32)
    return x, np.array(cond)


def compile_every_kind():
    """``every_kind_model`` compiled; its LeakyRelu carries attributes LeakyRelu does not have (to
    store every attribute kind), which the frontend keeps with a warning naming each."""
    import pytest

    import sofie_root

    with pytest.warns(sofie_root.SofieWarning, match="attribute 'extra_[a-z]+' is not an attribute of LeakyRelu"):
        return sofie_root.compile(every_kind_model())
