"""DeformConv (2-D) against onnxruntime and onnx.reference: groups and offset groups, strides,
dilations, pads, rectangular kernels, mask and bias, offsets reaching outside the input, a
symbolic batch at two sizes, float and double; and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.errors import SofieError

from .ort_check import make_model, run_ort, run_reference, value_info


def _out(i, k, s, d, pb, pe):
    return (i + pb + pe - ((k - 1) * d + 1)) // s + 1


def _case(rng, n=1, c=2, m=2, hw=(5, 6), k=(3, 3), s=(1, 1), d=(1, 1), pads=(0, 0, 0, 0), group=1, og=1,
          bias=False, mask=False, dtype=np.float32, batch=None, scale=1.5):
    oh = _out(hw[0], k[0], s[0], d[0], pads[0], pads[2])
    ow = _out(hw[1], k[1], s[1], d[1], pads[1], pads[3])
    kk = k[0] * k[1]
    bdim = batch or n
    names = ["x", "w", "off", "b" if bias else "", "mask" if mask else ""]
    while names[-1] == "":
        names.pop()
    node = helper.make_node("DeformConv", names, ["y"], name="dc", kernel_shape=list(k), strides=list(s),
                            dilations=list(d), pads=list(pads), group=group, offset_group=og)
    vis = [value_info("x", dtype, [bdim, c, *hw]), value_info("w", dtype, [m, c // group, *k]),
           value_info("off", dtype, [bdim, og * kk * 2, oh, ow])]
    arrays = [rng.normal(size=(n, c, *hw)), rng.normal(size=(m, c // group, *k)),
              rng.normal(scale=scale, size=(n, og * kk * 2, oh, ow))]
    if bias:
        vis.append(value_info("b", dtype, [m]))
        arrays.append(rng.normal(size=m))
    if mask:  # (without bias, input 3 is the empty name)
        vis.append(value_info("mask", dtype, [bdim, og * kk, oh, ow]))
        arrays.append(rng.uniform(0, 1, size=(n, og * kk, oh, ow)))
    model = make_model([node], vis, [value_info("y", dtype, None)], opset=22)
    return model, [a.astype(dtype) for a in arrays]


def _check(model, arrays, reference=True, rtol=1e-4, atol=1e-5, compiled=None):
    m = compiled or sofie_root.compile(model)
    (got,) = m.infer(*arrays)
    refs = [("onnxruntime", run_ort(model, *arrays)[0])]
    if reference:
        refs.append(("onnx.reference", run_reference(model, *arrays)[0]))
    for who, r in refs:
        assert got.shape == r.shape and got.dtype == r.dtype, who
        np.testing.assert_allclose(got, r, rtol=rtol, atol=atol, err_msg=who)
    return m


CONFIGS = {
    "plain": {},
    "bias_mask": {"bias": True, "mask": True},
    "mask_only": {"mask": True},
    "stride_pad": {"s": (2, 1), "pads": (1, 2, 0, 1), "bias": True},
    "dilation_rect": {"k": (2, 3), "d": (2, 1), "hw": (6, 5)},
    "groups": {"c": 4, "m": 6, "group": 2, "bias": True},
    "offset_groups": {"c": 4, "m": 3, "og": 2, "mask": True},
    "both_groups": {"c": 4, "m": 4, "group": 2, "og": 4, "k": (2, 2)},
    "far_offsets": {"scale": 6.0, "pads": (1, 1, 1, 1)},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_deform_conv_vs_ort_and_reference(name) -> None:
    rng = np.random.default_rng(len(name))
    model, arrays = _case(rng, **CONFIGS[name])
    _check(model, arrays)


def test_deform_conv_symbolic_batch_double() -> None:
    m = None
    for n in (1, 3):
        model, arrays = _case(np.random.default_rng(n), n=n, c=4, m=4, og=2, group=2, bias=True, mask=True,
                              dtype=np.float64, batch="N")
        # onnxruntime at double precision; onnx.reference's sampling loses precision somewhere
        # (~1e-6 relative on doubles), so it is compared at float tolerance
        m = _check(model, arrays, reference=False, rtol=1e-10, atol=1e-10, compiled=m)
        if n == 1:
            _check(model, arrays, compiled=m)


def test_deform_conv_integer_offsets_sample_pixels() -> None:
    """Integer offsets read exact pixels: a 1x1 kernel shifted by (dy, dx) is a shifted copy
    (zero where the shift leaves the input), independent of any runtime."""
    rng = np.random.default_rng(3)
    model, arrays = _case(rng, c=1, m=1, k=(1, 1), hw=(4, 5))
    x = arrays[0]
    arrays[1][...] = 1.0
    arrays[2][:, 0] = 1.0   # dy
    arrays[2][:, 1] = -2.0  # dx
    (got,) = sofie_root.compile(model).infer(*arrays)
    want = np.zeros_like(x)
    want[0, 0, :3, 2:] = x[0, 0, 1:, :3]
    np.testing.assert_array_equal(got, want)


def test_deform_conv_nan_offset_gives_nan_at_its_position() -> None:
    rng = np.random.default_rng(4)
    model, arrays = _case(rng, c=1, m=1, k=(1, 1), hw=(3, 3))
    arrays[2][0, 0, 1, 2] = np.nan
    arrays[2][0, 1, 0, 0] = np.inf  # infinitely far outside: reads zero padding
    (got,) = sofie_root.compile(model).infer(*arrays)
    assert np.isnan(got[0, 0, 1, 2]) and np.isnan(got).sum() == 1
    assert got[0, 0, 0, 0] == 0


def test_deform_conv_refusals() -> None:
    rng = np.random.default_rng(5)
    model, _ = _case(rng)
    model.graph.input[2].CopyFrom(value_info("off", np.float32, [1, 17, 3, 4]))
    with pytest.raises(SofieError, match=r"dc.*offset"):
        sofie_root.compile(model)
    model, _ = _case(rng, c=3, og=2)
    with pytest.raises(SofieError, match="offset_group=2 must divide"):
        sofie_root.compile(model)
    model, _ = _case(rng, mask=True)
    model.graph.input[3].CopyFrom(value_info("mask", np.float32, [1, 9, 2, 2]))
    with pytest.raises(SofieError, match="mask"):
        sofie_root.compile(model)
    node = helper.make_node("DeformConv", ["x", "w", "off"], ["y"], kernel_shape=[3])
    model = make_model([node], [value_info("x", np.float32, [1, 2, 8]), value_info("w", np.float32, [2, 2, 3]),
                                value_info("off", np.float32, [1, 3, 6])], [value_info("y", np.float32, None)],
                       opset=22)
    with pytest.raises(SofieError, match="only 2-D"):
        sofie_root.compile(model)
