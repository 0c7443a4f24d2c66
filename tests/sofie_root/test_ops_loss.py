"""Loss operators against onnxruntime (onnx.reference where onnxruntime has no kernel):
NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss, and RMSNormalization."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import assert_matches_ort, make_model, run_reference, value_info

RNG = np.random.default_rng(2024)


def _targets(shape, c, ii=None, dtype=np.int64):
    t = RNG.integers(0, c, size=shape).astype(dtype)
    if ii is not None:
        t.reshape(-1)[::3] = ii  # every third element ignored
    return t


def _loss_model(op, x_shape, t_shape, dtype=np.float32, tdtype=np.int64, weight=False, log_prob=False,
                opset=13, **attrs):
    ins = ["x", "t"] + (["w"] if weight else [])
    outs = ["loss"] + (["log_prob"] if log_prob else [])
    node = helper.make_node(op, ins, outs, **attrs)
    inputs = [value_info("x", dtype, x_shape), value_info("t", tdtype, t_shape)]
    if weight:
        inputs.append(value_info("w", dtype, [x_shape[1]]))
    return make_model([node], inputs, [value_info(o, dtype, None) for o in outs], opset=opset)


def _inputs(x_shape, dtype=np.float32, tdtype=np.int64, weight=False, ii=None, softmax=False):
    x = RNG.standard_normal(x_shape).astype(dtype)
    if not softmax:
        x = -np.abs(x)  # log-probability-like
    t = _targets((x_shape[0], *x_shape[2:]), x_shape[1], ii, tdtype)
    arrays = [x, t]
    if weight:
        arrays.append(RNG.uniform(0.2, 2.0, x_shape[1]).astype(dtype))
    return arrays


SHAPES = [(4, 5), (3, 4, 6), (2, 3, 4, 5), (2, 3, 2, 2, 3)]
OPS = ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weight", [False, True])
def test_loss(op, shape, reduction, weight):
    model = _loss_model(op, shape, (shape[0], *shape[2:]), weight=weight, reduction=reduction)
    assert_matches_ort(model, *_inputs(shape, weight=weight, softmax=op != OPS[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("ii", [2, -1, -100, 17])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weight", [False, True])
def test_loss_ignore_index(op, ii, reduction, weight):
    shape = (3, 4, 5)
    model = _loss_model(op, shape, (3, 5), weight=weight, reduction=reduction, ignore_index=ii)
    assert_matches_ort(model, *_inputs(shape, weight=weight, ii=ii, softmax=op != OPS[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("weight", [False, True])
def test_sce_log_prob(reduction, weight):
    shape = (2, 6, 3, 2)
    model = _loss_model("SoftmaxCrossEntropyLoss", shape, (2, 3, 2), weight=weight, log_prob=True,
                        reduction=reduction, ignore_index=1)
    assert_matches_ort(model, *_inputs(shape, weight=weight, ii=1, softmax=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype,tdtype", [(np.float64, np.int64), (np.float32, np.int32), (np.float64, np.int32)])
def test_loss_dtypes(op, dtype, tdtype):
    shape = (3, 4, 2)
    model = _loss_model(op, shape, (3, 2), dtype=dtype, tdtype=tdtype, weight=True, reduction="mean")
    arrays = _inputs(shape, dtype=dtype, tdtype=tdtype, weight=True, softmax=op != OPS[0])
    assert_matches_ort(model, *arrays, rtol=1e-6 if dtype == np.float64 else 1e-5, atol=1e-7)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_loss_symbolic_batch(op, reduction):
    model = _loss_model(op, ["N", 4, 3], ["N", 3], weight=True, reduction=reduction, ignore_index=0)
    m = sofie_root.compile(model)
    for n in (1, 5):
        assert_matches_ort(model, *_inputs((n, 4, 3), weight=True, ii=0, softmax=op != OPS[0]), compiled=m,
                           rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad", [4, -1, 1000])
def test_loss_target_out_of_range_raises(op, bad):
    model = _loss_model(op, (2, 4, 3), (2, 3), reduction="sum", ignore_index=-100)
    m = sofie_root.compile(model)
    x, t = _inputs((2, 4, 3), softmax=op != OPS[0])
    m.infer(x, t)  # in range: fine
    t[1, 2] = bad
    with pytest.raises(sofie_root.SofieError, match="out of range"):
        m.infer(x, t)
    t[1, 2] = -100  # the ignored class may be out of range
    m.infer(x, t)


def test_loss_unsupported_variants_have_a_reason():
    model = _loss_model("NegativeLogLikelihoodLoss", (2, 3), (2,), reduction="max")
    with pytest.raises(sofie_root.UnsupportedOperatorError, match="reduction"):
        sofie_root.compile(model)


# -- RMSNormalization -------------------------------------------------------------------------

def _rms_model(x_shape, s_shape, dtype=np.float32, **attrs):
    node = helper.make_node("RMSNormalization", ["x", "s"], ["y"], **attrs)
    return make_model([node], [value_info("x", dtype, x_shape), value_info("s", dtype, s_shape)],
                      [value_info("y", dtype, None)], opset=23)


def _assert_rms(model, x, s, rtol=1e-5, compiled=None):
    m = compiled if compiled is not None else sofie_root.compile(model)
    got = m.infer(x, s)[0]
    ref = run_reference(model, x, s)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("axis", [-1, -2, 0, 1, 2])
@pytest.mark.parametrize("epsilon", [1e-5, 0.1])
def test_rms_normalization(axis, epsilon):
    shape = (2, 3, 4)
    norm = shape[axis:]
    model = _rms_model(shape, norm, axis=axis, epsilon=epsilon)
    _assert_rms(model, RNG.standard_normal(shape).astype(np.float32), RNG.standard_normal(norm).astype(np.float32))


def test_rms_normalization_broadcast_scale_float64_and_symbolic_batch():
    model = _rms_model(["N", 3, 4], [1, 4], dtype=np.float64, axis=1, stash_type=1)
    m = sofie_root.compile(model)
    s = RNG.standard_normal((1, 4))
    for n in (1, 3):
        _assert_rms(model, RNG.standard_normal((n, 3, 4)), s, rtol=1e-6, compiled=m)
    model = _rms_model(["N", 5], [5], axis=-1)
    m = sofie_root.compile(model)
    for n in (2, 4):
        x = RNG.standard_normal((n, 5)).astype(np.float32)
        assert_matches_ort(model, x, RNG.standard_normal(5).astype(np.float32), compiled=m, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("weight", [False, True])
def test_loss_mean_all_ignored_is_nan(op, weight):
    model = _loss_model(op, (2, 3), (2,), weight=weight, reduction="mean", ignore_index=1)
    arrays = [np.zeros((2, 3), np.float32), np.array([1, 1])] + ([np.ones(3, np.float32)] if weight else [])
    got = assert_matches_ort(model, *arrays)
    assert np.isnan(got[0])


def test_loss_target_with_another_symbol_is_rejected():
    # the target is read at the input's extents, so its dimensions must be provably the same
    model = _loss_model("NegativeLogLikelihoodLoss", ["N", 4, 3], ["M", 3], reduction="none")
    with pytest.raises(sofie_root.SofieError, match="does not match"):
        sofie_root.compile(model)
