"""The attribute audit (frontends/audit.py): stale attributes honoured as the inputs they became,
unknown, mistyped, missing and degenerate attributes — never silently ignored."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root import InvalidGraphError, SofieWarning

from .ort_check import make_model, run_ort, value_info

RNG = np.random.default_rng(12)


def _stale_and_valid(op, x, attr, value, opset, valid_inputs, extra_attrs=None, out_shape=None):
    """(model with ``attr`` as a stale attribute, the same model with it as the input it became)."""
    xi = [value_info("x", x.dtype, x.shape)]
    yo = [value_info("y", x.dtype, out_shape)]
    stale = make_model([helper.make_node(op, ["x"], ["y"], name="stale_node", **{attr: value},
                                         **(extra_attrs or {}))], xi, yo, opset=opset)
    names = ["x", *[k if k else "" for k in valid_inputs]]
    valid = make_model([helper.make_node(op, names, ["y"], name="n", **(extra_attrs or {}))], xi, yo,
                       {k: v for k, v in valid_inputs.items() if k}, opset=opset)
    return stale, valid


CASES = [
    # op, input shape, attribute, value, opset, the input it became {name: value}, extra attributes
    ("ReduceSumSquare", (3, 4, 5), "axes", [0, 2], 21, {"ax": np.array([0, 2])}, {"keepdims": 0}),
    ("ReduceMean", (3, 4, 5), "axes", [-1], 18, {"ax": np.array([-1])}, None),
    ("ReduceSum", (3, 4, 5), "axes", [1], 13, {"ax": np.array([1])}, None),
    ("Squeeze", (3, 1, 5), "axes", [1], 13, {"ax": np.array([1])}, None),
    ("Unsqueeze", (3, 5), "axes", [0], 13, {"ax": np.array([0])}, None),
    ("Slice", (6, 5), "starts", [1], 10, {"st": np.array([1]), "en": np.array([4])}, {"ends": [4]}),
    ("Pad", (3, 4), "pads", [1, 0, 0, 2], 11, {"p": np.array([1, 0, 0, 2])}, None),
    ("Clip", (3, 4), "min", -0.25, 11, {"lo": np.array(-0.25, np.float32)}, None),
]


@pytest.mark.parametrize("op,shape,attr,value,opset,inputs,extra", CASES, ids=[c[0] for c in CASES])
def test_stale_attribute_is_honoured_with_a_warning(op, shape, attr, value, opset, inputs, extra):
    x = RNG.standard_normal(shape).astype(np.float32)
    if op == "Slice":  # starts and ends both moved; the valid model takes both as inputs
        stale = make_model([helper.make_node(op, ["x"], ["y"], name="stale_node", starts=[1], ends=[4])],
                           [value_info("x", x.dtype, x.shape)], [value_info("y", x.dtype, None)], opset=opset)
        valid = make_model([helper.make_node(op, ["x", "st", "en"], ["y"])], [value_info("x", x.dtype, x.shape)],
                           [value_info("y", x.dtype, None)], inputs, opset=opset)
    else:
        stale, valid = _stale_and_valid(op, x, attr, value, opset, inputs, extra)
    with pytest.warns(SofieWarning, match=r"stale_node.*became input"):
        model = sofie_root.compile(stale)
    got = model.infer(x)[0]
    ref = run_ort(valid, x)[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_reduce_sum_square_stale_axes_matches_numpy():
    x = RNG.standard_normal((38, 4, 66)).astype(np.float32)
    stale = make_model([helper.make_node("ReduceSumSquare", ["x"], ["y"], name="rss", axes=[1], keepdims=0)],
                       [value_info("x", x.dtype, x.shape)], [value_info("y", x.dtype, None)], opset=21)
    with pytest.warns(SofieWarning, match="rss"):
        got = sofie_root.compile(stale).infer(x)[0]
    np.testing.assert_allclose(got, np.sum(x.astype(np.float64) ** 2, axis=1), rtol=1e-5)


def test_attribute_and_input_both_given_is_refused():
    x = np.ones((2, 3), np.float32)
    m = make_model([helper.make_node("ReduceSum", ["x", "ax"], ["y"], name="both", axes=[0])],
                   [value_info("x", x.dtype, x.shape)], [value_info("y", x.dtype, None)],
                   {"ax": np.array([1])}, opset=13)
    with pytest.raises(InvalidGraphError, match=r"both.*'axes'.*gives both"):
        sofie_root.compile(m)


def test_unknown_attribute_warns_naming_node_and_attribute():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="r1", frobnicate=3)],
                   [value_info("x", x.dtype, x.shape)], [value_info("y", x.dtype, x.shape)])
    with pytest.warns(SofieWarning, match=r"r1.*'frobnicate'.*ignored"):
        model = sofie_root.compile(m)
    np.testing.assert_array_equal(model.infer(x)[0], np.maximum(x, 0))


def test_mistyped_missing_and_legacy_attributes_are_refused():
    x = np.ones((2, 3), np.float32)
    xi, yo = [value_info("x", x.dtype, x.shape)], [value_info("y", x.dtype, None)]
    bad_type = make_model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1.0)], xi, yo)
    with pytest.raises(InvalidGraphError, match=r"sm.*'axis' has type FLOAT"):
        sofie_root.compile(bad_type)
    missing = make_model([helper.make_node("Cast", ["x"], ["y"], name="c")], xi, yo)
    with pytest.raises(InvalidGraphError, match=r"c.*required attribute 'to'"):
        sofie_root.compile(missing)
    legacy = make_model([helper.make_node("Add", ["x", "x"], ["y"], name="add", broadcast=1, axis=1)], xi, yo)
    with pytest.raises(InvalidGraphError, match=r"add.*broadcast=1"):
        sofie_root.compile(legacy)


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
def test_rnn_clip_zero_means_no_clipping(op):
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[op]
    seq, batch, isz, hid = 3, 2, 4, 5
    x = RNG.standard_normal((seq, batch, isz)).astype(np.float32)
    w = (RNG.standard_normal((1, gates * hid, isz)) * 0.5).astype(np.float32)
    r = (RNG.standard_normal((1, gates * hid, hid)) * 0.5).astype(np.float32)
    outs = ["Y", "Y_h"]

    def model(**clip):
        return make_model([helper.make_node(op, ["x", "w", "r"], outs, name="rec", hidden_size=hid, **clip)],
                          [value_info("x", x.dtype, x.shape)], [value_info(o, x.dtype, None) for o in outs],
                          {"w": w, "r": r}, opset=14)

    with pytest.warns(SofieWarning, match=r"rec.*clip=0 <= 0.*no clipping"):
        got = sofie_root.compile(model(clip=0.0)).infer(x)
    ref = run_ort(model(), x)  # onnxruntime, without the attribute
    assert np.abs(ref[0]).max() > 0.05
    for g, rr in zip(got, ref):
        np.testing.assert_allclose(g, rr, rtol=1e-5, atol=1e-5)
