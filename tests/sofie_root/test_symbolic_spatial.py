"""Convolutions and pools whose spatial input dimensions are symbolic (only known at run time):
compiled at the call for the input's shape, the batch kept symbolic, against onnxruntime."""

from __future__ import annotations

import numpy as np
from onnx import helper

import sofie_root

from .ort_check import make_model, run_ort, value_info

RNG = np.random.default_rng(5)


def _close(model, onnx_model, x):
    got = model.infer(x)
    ref = run_ort(onnx_model, x)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_strided_conv1d_with_symbolic_length_and_batch():
    w = RNG.standard_normal((4, 2, 3)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    m = make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2], pads=[1, 0]),
                    helper.make_node("Relu", ["c"], ["y"])],
                   [value_info("x", np.float32, ["N", 2, "W"])], [value_info("y", np.float32, None)],
                   {"w": w, "b": b})
    model = sofie_root.compile(m)
    assert [str(d) for d in model.inputs[0].shape] == ["N", "2", "W"]
    for n, length in [(1, 7), (3, 7), (2, 12), (1, 3)]:
        _close(model, m, RNG.standard_normal((n, 2, length)).astype(np.float32))
    assert len(model._variants) == 3  # one per length; the batch stays symbolic


def test_pools_and_conv_transpose_with_symbolic_height_and_width():
    w = RNG.standard_normal((3, 2, 2, 2)).astype(np.float32)
    m = make_model([helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
                    helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                     auto_pad="NOTSET", count_include_pad=0),
                    helper.make_node("ConvTranspose", ["a", "w"], ["y"], strides=[2, 2])],
                   [value_info("x", np.float32, [1, 3, "H", "W"])], [value_info("y", np.float32, None)], {"w": w})
    model = sofie_root.compile(m)
    for h, wd in [(9, 6), (5, 11)]:
        _close(model, m, RNG.standard_normal((1, 3, h, wd)).astype(np.float32))


def test_conv_with_same_padding_and_symbolic_length_after_other_ops():
    w = RNG.standard_normal((2, 1, 5)).astype(np.float32)
    m = make_model([helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
                    helper.make_node("Conv", ["u", "w"], ["c"], strides=[3], auto_pad="SAME_UPPER"),
                    helper.make_node("Flatten", ["c"], ["y"])],
                   [value_info("x", np.float32, ["N", "L"])], [value_info("y", np.float32, None)],
                   {"w": w, "ax": np.array([1])})
    model = sofie_root.compile(m)
    for n, length in [(2, 10), (2, 17)]:
        _close(model, m, RNG.standard_normal((n, length)).astype(np.float32))
