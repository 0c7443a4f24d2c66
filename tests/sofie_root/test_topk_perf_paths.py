"""TopK through sofie_rt::topk (integer keys): ties, NaN, -0.0/0.0, both directions, strided axes,
integer and float64 types, k = 0 and k = n, checked against onnxruntime (or a numpy stable sort)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import make_model, run_ort, value_info


def _model(dtype, shape, k, axis, largest):
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)
    return make_model([node], [value_info("x", dtype, shape)],
                      [value_info("v", dtype, None), value_info("i", np.int64, None)],
                      initializers={"k": np.array([k], np.int64)}, opset=11)


def _numpy_topk(x, k, axis, largest):
    """Float reference: stable sort (ties to the lower index), NaN above every number, -0.0 == 0.0."""
    xm = np.moveaxis(x, axis, -1)
    nan = np.isnan(xm)
    key = np.where(nan, 0.0, xm).astype(np.float64) + 0.0
    pos = np.broadcast_to(np.arange(xm.shape[-1]), xm.shape)
    order = np.lexsort((pos, -key if largest else key, ~nan if largest else nan), axis=-1)
    idx = order[..., :k]
    vals = np.take_along_axis(xm, idx, -1)
    return np.moveaxis(vals, -1, axis), np.moveaxis(idx, -1, axis)


def _check(x, k, axis, largest, use_ort=True):
    model = _model(x.dtype, list(x.shape), k, axis, largest)
    got_v, got_i = sofie_root.compile(model).infer(x)
    ref_v, ref_i = run_ort(model, x) if use_ort else _numpy_topk(x, k, axis, largest)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_v, ref_v)  # NaN == NaN for array_equal
    if x.dtype.kind == "f":
        np.testing.assert_array_equal(np.signbit(got_v), np.signbit(np.asarray(ref_v)))


@pytest.mark.parametrize("largest", [0, 1])
def test_ties_nan_signed_zero(largest) -> None:
    x = np.array([[1.0, np.nan, -0.0, 0.0, 1.0, -np.inf, np.inf, -np.nan, 0.0, -0.0, 2.0, 1.0]],
                 np.float32)
    n = x.shape[1]
    for k in (0, 1, 3, 5, n):
        _check(x, k, 1, largest, use_ort=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("largest", [0, 1])
def test_types_and_axes(dtype, largest) -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(-4, 5, size=(3, 7, 5)).astype(dtype)  # many ties
    for axis in (0, 1, 2):
        for k in (0, 1, 2, x.shape[axis]):
            _check(x, k, axis, largest)


def test_knn_shape() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 100, 100)).astype(np.float32)
    _check(x, 17, -1, 0)


def _reference_topk(x, k, axis, largest):
    """onnx.reference's TopK (a stable lexsort: NaN above every number, ties to the lower index)."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(_model(x.dtype, list(x.shape), k, axis, largest)).run(None, {"x": x})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("largest", [0, 1])
def test_small_k_selection_against_onnx_reference(dtype, largest) -> None:
    """The one-pass selection of a small k (2..32, sofie_rt::topk_select_small) on rows of 100
    with many ties and NaN, rows already sorted either way (every element enters the kept set),
    and k around the 32 limit (the nth_element path takes over)."""
    rng = np.random.default_rng(17)
    x = rng.integers(-6, 7, size=(3, 40, 100)).astype(dtype)  # ties everywhere
    if x.dtype.kind == "f":
        x += rng.standard_normal(x.shape).astype(dtype) * (rng.random(x.shape) < 0.5)  # some distinct values
        x[rng.random(x.shape) < 0.05] = np.nan
        x[0, 0, :] = -0.0
        x[0, 1, 50:] = np.inf
    x[1, 0, :] = np.arange(100)  # ascending: with largest, every element beats the kept ones
    x[1, 1, :] = np.arange(100)[::-1]
    x[1, 2, :] = 3  # all equal: the first k indices
    for axis, k in ((-1, 2), (-1, 17), (-1, 32), (-1, 33), (1, 17), (1, 39)):
        model = _model(x.dtype, list(x.shape), k, axis, largest)
        got_v, got_i = sofie_root.compile(model).infer(x)
        ref_v, ref_i = _reference_topk(x, k, axis, largest)
        np.testing.assert_array_equal(got_i, ref_i, err_msg=f"axis {axis} k {k}")
        np.testing.assert_array_equal(got_v, ref_v)


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("largest", [0, 1])
def test_eight_rows_at_once_against_onnx_reference(dtype, largest) -> None:
    """Rows of 32-bit keys go 8 at a time through one lane each (sofie_rt::topk_rows8): row counts
    that leave a remainder for the one-row path (13 and 2x13), rows whose length is not a multiple
    of 8 (37) and the 256 limit, k from 2 to n - 1 and the 32 limit, ties, NaN, +-inf, -0.0,
    rows sorted either way and all equal, a signed-int minimum (the smallest order key)."""
    rng = np.random.default_rng(23)
    for shape in ((2, 13, 37), (1, 17, 256), (1, 8, 9)):
        x = rng.integers(-5, 6, size=shape).astype(dtype)
        if x.dtype.kind == "f":
            x += rng.standard_normal(shape).astype(dtype) * (rng.random(shape) < 0.5)
            x[rng.random(shape) < 0.05] = np.nan
            x[rng.random(shape) < 0.03] = np.inf
            x[rng.random(shape) < 0.03] = -np.inf
            x[0, 0, :] = -0.0
        else:
            x[0, 0, ::3] = np.iinfo(np.int32).min
            x[0, 1, ::5] = np.iinfo(np.int32).max
        n = shape[-1]
        x[0, 2, :] = np.arange(n)
        x[0, 3, :] = np.arange(n)[::-1]
        x[0, 4 % shape[1], :] = 1
        for k in sorted({2, 3, 8, 17, 32, n - 1} & set(range(2, n))):
            model = _model(x.dtype, list(x.shape), k, -1, largest)
            got_v, got_i = sofie_root.compile(model).infer(x)
            ref_v, ref_i = _reference_topk(x, k, -1, largest)
            np.testing.assert_array_equal(got_i, ref_i, err_msg=f"shape {shape} k {k}")
            np.testing.assert_array_equal(got_v, ref_v, err_msg=f"shape {shape} k {k}")


def test_eight_rows_at_once_one_output() -> None:
    """Only the indices (a kNN) or only the values requested: the other pointer is null."""
    rng = np.random.default_rng(29)
    x = rng.standard_normal((3, 11, 40)).astype(np.float32)
    ref_v, ref_i = _reference_topk(x, 6, -1, 1)
    for outputs, ref in ((["", "i"], ref_i), (["v", ""], ref_v)):
        node = helper.make_node("TopK", ["x", "k"], outputs, axis=-1, largest=1)
        name = outputs[0] or outputs[1]
        dt = np.float32 if name == "v" else np.int64
        model = make_model([node], [value_info("x", np.float32, list(x.shape))], [value_info(name, dt, None)],
                           initializers={"k": np.array([6], np.int64)}, opset=11)
        (got,) = sofie_root.compile(model).infer(x)
        np.testing.assert_array_equal(got, ref)
