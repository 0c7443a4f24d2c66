"""Constant folding of operators onnx.reference implements only from a later opset."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from tests.sofie_root.ort_check import make_model, run_ort, value_info


@pytest.mark.parametrize("opset", [10, 13, 18])
def test_dequantize_linear_below_opset_19_is_folded(opset) -> None:
    # issue 11: onnx.reference has no DequantizeLinear before opset 19; onnxruntime runs it
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"]), helper.make_node("Add", ["x", "w"], ["y"])]
    model = make_model(nodes, [value_info("x", np.float32, [4])], [value_info("y", np.float32, [4])],
                       {"q": np.array([0, 10, 200, 255], np.uint8), "s": np.array(0.5, np.float32),
                        "z": np.array(3, np.uint8)}, opset=opset)
    compiled = sofie_root.compile(model)
    assert [n.op_type for n in compiled.graph.nodes] == ["Add"]  # the dequantisation was folded
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    np.testing.assert_array_equal(compiled(x), run_ort(model, x)[0])


def test_quantize_linear_below_opset_19_is_folded() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["c", "s", "z"], ["q"]), helper.make_node("Cast", ["q"], ["f"], to=1),
             helper.make_node("Add", ["x", "f"], ["y"])]
    model = make_model(nodes, [value_info("x", np.float32, [4])], [value_info("y", np.float32, [4])],
                       {"c": np.array([-3.0, 0.2, 7.5, 900.0], np.float32), "s": np.array(0.5, np.float32),
                        "z": np.array(3, np.uint8)}, opset=13)
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    np.testing.assert_array_equal(sofie_root.compile(model)(x), run_ort(model, x)[0])
