"""Image operators (Resize, Upsample, CenterCropPad, Col2Im, GridSample, AffineGrid, RoiAlign,
MaxUnpool, LRN) against onnxruntime, or onnx.reference where onnxruntime lacks a kernel or
deviates from the ONNX specification. Variants are grouped as several nodes of one model to keep
the number of JIT compilations (and the run time) small."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import sofie_root
from sofie_root.errors import SofieError

from .ort_check import assert_matches_ort, make_model, value_info

RNG = np.random.default_rng(7)


def _rand(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _assert_matches_reference(model, *arrays, rtol=1e-5, atol=1e-6, compiled=None):
    m = compiled if compiled is not None else sofie_root.compile(model)
    got = m.infer(*arrays)
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    ref = ReferenceEvaluator(model).run(None, dict(zip(names, arrays)))
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape, f"output {k}: shape {g.shape} != reference {r.shape}"
        np.testing.assert_allclose(g, r.astype(g.dtype), rtol=rtol, atol=atol, err_msg=f"output {k}")


def _multi(nodes_attrs, x_shape, inits, op="Resize", dtype=np.float32, opset=19, extra_inputs=()):
    """Model with one node per (inputs, attrs) entry, all reading graph input x; outputs y0, y1..."""
    nodes, outs = [], []
    for k, (ins, attrs) in enumerate(nodes_attrs):
        nodes.append(helper.make_node(op, ["x", *ins], [f"y{k}"], **attrs))
        outs.append(value_info(f"y{k}", dtype, None))
    inputs = [value_info("x", dtype, x_shape), *extra_inputs]
    return make_model(nodes, inputs, outs, initializers=inits, opset=opset)


# -- Resize -----------------------------------------------------------------------------------

CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
        "tf_crop_and_resize"]
# with an 8 x 5 image every output size is exact (onnxruntime and onnx.reference then agree on
# align_corners / half_pixel_symmetric, which they define differently for fractional sizes)
SCALES = {"up": [1.0, 1.0, 1.5, 2.0], "down": [1.0, 1.0, 0.5, 0.6], "mixed": [1.0, 1.0, 0.75, 1.4]}


def _resize_inits():
    inits = {f"s_{k}": np.array(v, np.float32) for k, v in SCALES.items()}
    inits["roi"] = np.array([0, 0, 0.1, 0.25, 1, 1, 0.85, 1.2], np.float32)
    inits["sz"] = np.array([4, 9], np.int64)
    return inits


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_modes_and_coordinate_modes(mode):
    """Every coordinate transformation mode, upsampling, downsampling and both, symbolic batch."""
    nodes = []
    for ctm in CTMS:
        for k in SCALES:
            roi = "roi" if ctm == "tf_crop_and_resize" else ""
            attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
            if ctm == "tf_crop_and_resize":
                attrs["extrapolation_value"] = -3.5
            nodes.append(([roi, f"s_{k}"], attrs))
    # sizes instead of scales
    nodes.append((["", "", "sz"], {"mode": mode, "axes": [2, 3]}))
    model = _multi(nodes, ["N", 3, 8, 5], _resize_inits())
    m = sofie_root.compile(model)
    for n in (2, 1):
        assert_matches_ort(model, _rand((n, 3, 8, 5)), compiled=m, rtol=1e-5, atol=1e-5)


def test_resize_fractional_output_sizes_against_reference():
    """Fractional scale x size products, where the specification (onnx.reference) uses the
    unrounded output length in align_corners, half_pixel_symmetric and tf_crop_and_resize."""
    nodes = [(["roi" if ctm == "tf_crop_and_resize" else "", f"s_{k}"], {"mode": mode, "coordinate_transformation_mode": ctm})
             for ctm in CTMS for k in SCALES for mode in ("linear", "cubic")]
    model = _multi(nodes, [1, 2, 5, 7], _resize_inits())
    _assert_matches_reference(model, _rand((1, 2, 5, 7)), rtol=1e-5, atol=1e-5)


def test_resize_nearest_modes_and_variants():
    nodes = []
    for nm in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]:
        for ctm in ["half_pixel", "asymmetric", "align_corners"]:
            for k in SCALES:
                nodes.append((["", f"s_{k}"], {"mode": "nearest", "nearest_mode": nm,
                                                "coordinate_transformation_mode": ctm}))
    model = _multi(nodes, [2, 3, 8, 5], _resize_inits())
    assert_matches_ort(model, _rand((2, 3, 8, 5)))


def test_resize_cubic_a_exclude_outside_antialias_axes_policy():
    inits = _resize_inits()
    inits["s2"] = np.array([0.6, 0.5], np.float32)
    inits["s2_up"] = np.array([2.0, 2.5], np.float32)
    inits["sz2"] = np.array([4, 3], np.int64)
    inits["roi2"] = np.array([0.1, 0.2, 0.9, 0.7], np.float32)
    nodes = [
        (["", "s_down"], {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}),
        (["", "s_up"], {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}),
        (["", "s_mixed"], {"mode": "cubic", "exclude_outside": 1}),
        (["", "s_down"], {"mode": "linear", "antialias": 1}),
        (["", "s_down"], {"mode": "cubic", "antialias": 1}),
        (["", "s_mixed"], {"mode": "linear", "antialias": 1}),
        (["", "", "sz"], {"mode": "linear", "antialias": 1, "axes": [2, 3]}),
        (["", "s2"], {"mode": "linear", "axes": [2, 3]}),
        (["", "s2_up"], {"mode": "nearest", "axes": [3, -2]}),
        (["roi2", "s2_up"], {"mode": "linear", "axes": [2, 3],
                             "coordinate_transformation_mode": "tf_crop_and_resize"}),
        (["", "", "sz2"], {"mode": "cubic", "axes": [2, 3]}),
        (["", "", "sz2"], {"mode": "nearest", "axes": [3, 2], "keep_aspect_ratio_policy": "not_larger"}),
        (["", "", "sz2"], {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"}),
    ]
    model = _multi(nodes, ["N", 2, 7, 6], inits)
    m = sofie_root.compile(model)
    for n in (1, 2):
        assert_matches_ort(model, _rand((n, 2, 7, 6)), compiled=m, rtol=1e-5, atol=1e-5)


def test_resize_float64_and_integer_types():
    inits = _resize_inits()
    nodes = [(["", "s_mixed"], {"mode": m}) for m in ("nearest", "linear", "cubic")]
    model = _multi(nodes, [1, 2, 5, 6], inits, dtype=np.float64)
    _assert_matches_reference(model, _rand((1, 2, 5, 6), np.float64))  # float32 coordinates
    for dt in (np.uint8, np.int32, np.int64):
        model = _multi([(["", "s_up"], {"mode": "nearest"}), (["", "s_down"], {"mode": "nearest"})],
                       [1, 2, 5, 6], inits, dtype=dt)
        x = RNG.integers(0, 100, (1, 2, 5, 6)).astype(dt)
        _assert_matches_reference(model, x)


def test_resize_opset10_opset11_and_upsample():
    inits = {k: np.array(v, np.float32) for k, v in SCALES.items()}
    model10 = _multi([([k], {"mode": m}) for k in ("up", "down") for m in ("nearest", "linear")],
                     ["N", 2, 5, 6], inits, opset=10)
    m10 = sofie_root.compile(model10)
    for n in (1, 2):
        assert_matches_ort(model10, _rand((n, 2, 5, 6)), compiled=m10)
    inits11 = {"s": np.array([1, 1, 2.4, 1.5], np.float32), "roi": np.array([], np.float32),
               "roi8": np.array([0, 0, 0.2, 0.1, 1, 1, 0.9, 0.8], np.float32)}
    model11 = _multi([(["roi", "s"], {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
                      (["roi8", "s"], {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}),
                      (["roi", "s"], {"mode": "cubic"})], [1, 2, 5, 6], inits11, opset=11)
    assert_matches_ort(model11, _rand((1, 2, 5, 6)))
    up_inits = {"s": np.array([1, 1, 2, 3], np.float32), "s2": np.array([1, 1, 1.5, 2.5], np.float32)}
    model9 = _multi([(["s"], {"mode": "nearest"}), (["s2"], {"mode": "nearest"}), (["s2"], {"mode": "linear"})],
                    [2, 2, 3, 4], up_inits, op="Upsample", opset=9)
    assert_matches_ort(model9, _rand((2, 2, 3, 4)))
    node7 = helper.make_node("Upsample", ["x"], ["y"], mode="linear", scales=[1.0, 1.0, 2.0, 1.5])
    model7 = make_model([node7], [value_info("x", np.float32, [1, 2, 3, 4])],
                        [value_info("y", np.float32, None)], opset=7)
    assert_matches_ort(model7, _rand((1, 2, 3, 4)))


def test_resize_nearest_whole_row_paths():
    """The nearest loop nest of whole rows: integer upsampling of rows wider than one vector
    (x2 and x4 by shuffles, x3 scalar, with a tail), duplicated rows copied, a resized axis
    outside a kept innermost run (memcpy rows), a trailing axis of size 1, a downsampling gather."""
    inits = {"s2": np.array([1, 1, 2, 2], np.float32), "s4": np.array([1, 1, 4, 4], np.float32),
             "s3": np.array([1, 1, 3, 3], np.float32), "sc": np.array([1, 2, 1, 1], np.float32),
             "sd": np.array([1, 1, 0.5, 0.5], np.float32), "s21": np.array([1, 1, 2, 1], np.float32)}
    nodes = [(["", k], {"mode": "nearest"}) for k in ("s2", "s4", "s3", "sc", "sd")]
    nodes += [(["", "s2"], {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                            "nearest_mode": "floor"})]
    model = _multi(nodes, ["N", 3, 6, 19], inits)
    m = sofie_root.compile(model)
    for n in (1, 2):
        assert_matches_ort(model, _rand((n, 3, 6, 19)), compiled=m)
    # a trailing axis of size 1 (the innermost loop is the resized one, stride 1 in the input)
    model = _multi([(["", "s21"], {"mode": "nearest"})], ["N", 3, 9, 1], inits)
    assert_matches_ort(model, _rand((2, 3, 9, 1)))
    model = _multi([(["s2"], {"mode": "nearest"})], ["N", 2, 5, 17], inits, op="Upsample", opset=9)
    assert_matches_ort(model, _rand((2, 2, 5, 17)))
    model = _multi([(["", "s2"], {"mode": "nearest"})], [1, 2, 4, 9], inits, dtype=np.int32)
    _assert_matches_reference(model, RNG.integers(-100, 100, (1, 2, 4, 9)).astype(np.int32))


def test_resize_scales_as_graph_input_and_symbolic_resized_axis():
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")
    model = make_model([node], [value_info("x", np.float32, [1, 2, 4, 4]), value_info("s", np.float32, [4])],
                       [value_info("y", np.float32, None)], opset=19)
    m = sofie_root.compile(model)
    x = _rand((1, 2, 4, 4))
    for s in ([1, 1, 2, 0.5], [1, 1, 1.5, 3]):
        assert_matches_ort(model, x, np.array(s, np.float32), compiled=m)
    model = _multi([(["", "s"], {"mode": "linear"})], [1, 2, "H", 4],
                   {"s": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(SofieError, match="symbolic"):
        sofie_root.compile(model)


# -- CenterCropPad ----------------------------------------------------------------------------

def test_center_crop_pad():
    inits = {"a": np.array([3, 9], np.int64), "b": np.array([3, 7, 4], np.int64),
             "c": np.array([6, 3], np.int64)}
    model = _multi([(["a"], {"axes": [1, 2]}), (["c"], {"axes": [-1, 1]})],
                   ["N", 5, 6], inits, op="CenterCropPad", opset=18)
    m = sofie_root.compile(model)
    for n in (4, 2):
        assert_matches_ort(model, _rand((n, 5, 6)), compiled=m)
    model = _multi([(["b"], {}), (["c"], {"axes": [0, 2]})], [4, 5, 6], inits, op="CenterCropPad", opset=18,
                   dtype=np.int32)
    assert_matches_ort(model, RNG.integers(-9, 9, (4, 5, 6)).astype(np.int32))


# -- Col2Im -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    {"img": [5, 6], "blk": [2, 3], "attrs": {}},
    {"img": [7, 6], "blk": [3, 2], "attrs": {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2]}},
    {"img": [4, 3, 5], "blk": [2, 1, 2], "attrs": {"strides": [1, 2, 2], "pads": [0, 1, 1, 1, 0, 0]}},
    # 1-D; pads wider than the kernel: some (offset, block) pairs land wholly outside the image
    {"img": [9], "blk": [4], "attrs": {"strides": [3], "pads": [3, 2]}},
    {"img": [3, 11], "blk": [3, 2], "attrs": {"pads": [3, 0, 3, 1], "dilations": [2, 1]}},
    # more kernel offsets than are written out one by one (a loop with bounds from tables)
    {"img": [8, 9], "blk": [6, 6], "attrs": {"pads": [1, 0, 0, 2]}},
])
def test_col2im(case):
    img, blk, attrs = case["img"], case["blk"], case["attrs"]
    n = len(img)
    s = attrs.get("strides", [1] * n)
    d = attrs.get("dilations", [1] * n)
    p = attrs.get("pads", [0] * 2 * n)
    nb = [(img[j] + p[j] + p[n + j] - (d[j] * (blk[j] - 1) + 1)) // s[j] + 1 for j in range(n)]
    c = 2
    shape = ["N", c * int(np.prod(blk)), int(np.prod(nb))]
    inits = {"img": np.array(img, np.int64), "blk": np.array(blk, np.int64)}
    model = _multi([(["img", "blk"], attrs)], shape, inits, op="Col2Im", opset=18)
    m = sofie_root.compile(model)
    for b in (1, 3):
        x = _rand((b, *shape[1:]))
        if n == 2:
            assert_matches_ort(model, x, compiled=m)
        else:
            _assert_matches_reference(model, x, compiled=m)


# -- GridSample / AffineGrid --------------------------------------------------------------------

def test_gridsample_2d_all_variants():
    nodes = [([g], {"mode": mode, "padding_mode": pm, "align_corners": ac})
             for mode in ("nearest", "linear", "cubic") for pm in ("zeros", "border", "reflection")
             for ac in (0, 1) for g in ["g"]]
    model = _multi(nodes, ["N", 2, 5, 4], {}, op="GridSample", opset=22,
                   extra_inputs=[value_info("g", np.float32, ["N", 3, 6, 2])])
    m = sofie_root.compile(model)
    for n in (1, 2):
        grid = RNG.uniform(-1.6, 1.6, (n, 3, 6, 2)).astype(np.float32)
        assert_matches_ort(model, _rand((n, 2, 5, 4)), grid, compiled=m, rtol=1e-4, atol=1e-5)


def test_gridsample_3d_float64_and_opset16():
    nodes = [(["g"], {"mode": mode, "padding_mode": pm, "align_corners": ac})
             for mode in ("nearest", "linear") for pm in ("zeros", "border", "reflection") for ac in (0, 1)]
    model = _multi(nodes, [1, 2, 3, 4, 5], {}, op="GridSample", opset=22,
                   extra_inputs=[value_info("g", np.float32, [1, 2, 3, 4, 3])])
    grid = RNG.uniform(-1.4, 1.4, (1, 2, 3, 4, 3)).astype(np.float32)
    assert_matches_ort(model, _rand((1, 2, 3, 4, 5)), grid, rtol=1e-4, atol=1e-5)
    nodes = [(["g"], {"mode": mode, "padding_mode": "reflection"}) for mode in ("linear", "cubic", "nearest")]
    model = _multi(nodes, [1, 2, 5, 4], {}, op="GridSample", opset=22, dtype=np.float64,
                   extra_inputs=[value_info("g", np.float64, [1, 3, 3, 2])])
    grid = RNG.uniform(-1.4, 1.4, (1, 3, 3, 2))
    # (onnx.reference denormalises the coordinates in float32)
    _assert_matches_reference(model, _rand((1, 2, 5, 4), np.float64), grid, rtol=1e-6, atol=1e-6)
    nodes = [(["g"], {"mode": mode, "padding_mode": "border"}) for mode in ("bilinear", "bicubic")]
    model = _multi(nodes, [1, 2, 5, 4], {}, op="GridSample", opset=16,
                   extra_inputs=[value_info("g", np.float32, [1, 3, 3, 2])])
    grid = RNG.uniform(-1.4, 1.4, (1, 3, 3, 2)).astype(np.float32)
    assert_matches_ort(model, _rand((1, 2, 5, 4)), grid, rtol=1e-4, atol=1e-5)


def test_affine_grid():
    inits = {"s2": np.array([2, 3, 4, 5], np.int64), "s3": np.array([2, 3, 3, 4, 2], np.int64)}
    nodes = [helper.make_node("AffineGrid", ["t2", "s2"], [f"y{ac}"], align_corners=ac) for ac in (0, 1)]
    nodes += [helper.make_node("AffineGrid", ["t3", "s3"], [f"y{ac + 2}"], align_corners=ac) for ac in (0, 1)]
    model = make_model(nodes, [value_info("t2", np.float32, [2, 2, 3]), value_info("t3", np.float32, [2, 3, 4])],
                       [value_info(f"y{k}", np.float32, None) for k in range(4)], initializers=inits, opset=20)
    assert_matches_ort(model, _rand((2, 2, 3)), _rand((2, 3, 4)))


# -- RoiAlign ---------------------------------------------------------------------------------

def _rois(r, h, w):
    a = RNG.uniform(-2, [w, h], (r, 2))
    b = a + RNG.uniform(0.3, 6, (r, 2))
    return np.concatenate([a, b], axis=1).astype(np.float32)


def test_roialign():
    nodes = []
    variants = [{"mode": "avg", "coordinate_transformation_mode": "half_pixel"},
                {"mode": "max", "coordinate_transformation_mode": "half_pixel", "sampling_ratio": 2},
                {"mode": "avg", "coordinate_transformation_mode": "output_half_pixel", "sampling_ratio": 3,
                     "spatial_scale": 0.5, "output_height": 2, "output_width": 3},
                {"mode": "max", "coordinate_transformation_mode": "output_half_pixel", "output_height": 3}]
    for k, attrs in enumerate(variants):
        nodes.append(helper.make_node("RoiAlign", ["x", "rois", "bi"], [f"y{k}"], **attrs))
    model = make_model(nodes, [value_info("x", np.float32, ["N", 3, 8, 7]), value_info("rois", np.float32, ["R", 4]),
                               value_info("bi", np.int64, ["R"])],
                       [value_info(f"y{k}", np.float32, None) for k in range(len(nodes))], opset=22)
    m = sofie_root.compile(model)
    for n, r in ((2, 5), (3, 1)):
        bi = RNG.integers(0, n, r).astype(np.int64)
        assert_matches_ort(model, _rand((n, 3, 8, 7)), _rois(r, 8, 7), bi, compiled=m, rtol=1e-4, atol=1e-5)
    with pytest.raises(SofieError, match="batch index"):
        m.infer(_rand((2, 3, 8, 7)), _rois(2, 8, 7), np.array([0, 2], np.int64))


# -- MaxUnpool --------------------------------------------------------------------------------

def test_maxunpool_after_maxpool():
    nodes = [helper.make_node("MaxPool", ["x0"], ["p0", "i0"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxUnpool", ["p0", "i0"], ["y0"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxPool", ["x1"], ["p1", "i1"], kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 0]),
             helper.make_node("MaxUnpool", ["p1", "i1"], ["y1"], kernel_shape=[3, 2], strides=[2, 1],
                              pads=[1, 0, 1, 0])]
    model = make_model(nodes, [value_info("x0", np.float32, ["N", 2, 6, 4]), value_info("x1", np.float32, ["N", 2, 7, 5])],
                       [value_info("y0", np.float32, None), value_info("y1", np.float32, None)], opset=22)
    m = sofie_root.compile(model)
    for n in (1, 2):
        assert_matches_ort(model, _rand((n, 2, 6, 4)), _rand((n, 2, 7, 5)), compiled=m)


def test_maxunpool_output_shape_and_bad_index():
    node = helper.make_node("MaxUnpool", ["x", "i", "os"], ["y"], kernel_shape=[2], strides=[2])
    model = make_model([node], [value_info("x", np.float64, [2, 2, 3]), value_info("i", np.int64, [2, 2, 3])],
                       [value_info("y", np.float64, None)], initializers={"os": np.array([2, 3, 8], np.int64)},
                       opset=22)
    m = sofie_root.compile(model)
    idx = np.stack([RNG.choice(24, 6, replace=False) for _ in range(2)]).reshape(2, 2, 3).astype(np.int64)
    _assert_matches_reference(model, _rand((2, 2, 3), np.float64), idx, compiled=m)
    with pytest.raises(SofieError, match="index out of range"):
        m.infer(_rand((2, 2, 3), np.float64), np.full((2, 2, 3), 24, np.int64))


def test_maxunpool_indices_across_planes():
    """The plane-by-plane scatter: indices into the own plane and earlier planes (repeated: the
    last value wins), then into a later plane (the whole-output fallback), and out of range."""
    node = helper.make_node("MaxUnpool", ["x", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    model = make_model([node], [value_info("x", np.float32, ["N", 3, 2, 3]), value_info("i", np.int64, ["N", 3, 2, 3])],
                       [value_info("y", np.float32, None)], opset=22)
    m = sofie_root.compile(model)
    plane, n = 4 * 6, 2
    x = _rand((n, 3, 2, 3))
    # own or earlier planes only (values below (p + 1) * plane for the input plane p)
    own = np.stack([RNG.integers(0, (p + 1) * plane, 6) for p in range(n * 3)]).reshape(n, 3, 2, 3)
    own[0, 1, 0, :] = 5  # repeated index: the last value wins
    _assert_matches_reference(model, x, own.astype(np.int64), compiled=m)
    later = own.copy()
    later[0, 0, 1, 2] = n * 3 * plane - 1  # the first plane points into the last one
    _assert_matches_reference(model, x, later.astype(np.int64), compiled=m)
    for bad in (n * 3 * plane, -1):
        wrong = own.copy()
        wrong[1, 2, 0, 0] = bad
        with pytest.raises(SofieError, match="index out of range"):
            m.infer(x, wrong.astype(np.int64))


# -- LRN --------------------------------------------------------------------------------------

def test_lrn():
    nodes = [([], {"size": 3}), ([], {"size": 5, "alpha": 0.01, "beta": 0.5, "bias": 2.0}),
             ([], {"size": 1, "alpha": 0.2})]
    model = _multi(nodes, ["N", 5, 3, 4], {}, op="LRN", opset=13)
    m = sofie_root.compile(model)
    for n in (1, 2):
        assert_matches_ort(model, _rand((n, 5, 3, 4)), compiled=m)
    # even sizes (onnxruntime rejects them) and float64 against numpy (onnx.reference's LRN walks
    # the batch size instead of the channels)
    nodes = [([], {"size": 4, "alpha": 0.01, "beta": 0.5, "bias": 2.0}), ([], {"size": 2})]
    model = _multi(nodes, [2, 5, 3, 4], {}, op="LRN", opset=13, dtype=np.float64)
    x = _rand((2, 5, 3, 4), np.float64)
    got = sofie_root.compile(model).infer(x)
    for g, (_, attrs) in zip(got, nodes):
        size, alpha = attrs["size"], attrs.get("alpha", 1e-4)
        beta, bias = attrs.get("beta", 0.75), attrs.get("bias", 1.0)
        sq = np.zeros_like(x)
        for c in range(5):
            lo, hi = max(0, c - (size - 1) // 2), min(5, c + -(-(size - 1) // 2) + 1)
            sq[:, c] = (x[:, lo:hi] ** 2).sum(axis=1)
        np.testing.assert_allclose(g, x / (bias + alpha / size * sq) ** beta, rtol=1e-6)  # float32 attributes
