"""Data movement operators against onnxruntime: Transpose, Concat, Split, Slice, Gather,
GatherElements, GatherND, ScatterElements/Scatter, ScatterND, Expand, Tile, Pad, Range,
ConstantOfShape, EyeLike, Trilu, OneHot, NonZero, DepthToSpace, SpaceToDepth; symbolic batch
dimensions, folding of shape sub-graphs, and checked indices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import helper

import sofie_root

from .ort_check import assert_matches_ort, make_model, run_reference, value_info

RNG = np.random.default_rng(4321)
I64 = np.int64
F32 = np.float32
INT_MAX = 2**63 - 1


def rand(shape: Sequence[int], dtype=F32) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return RNG.random(shape) > 0.5
    if dt.kind == "f":
        return RNG.standard_normal(shape).astype(dt)
    lo = -100 if dt.kind == "i" else 0
    return RNG.integers(lo, 100, shape).astype(dt)


def build(nodes, inputs: dict[str, np.ndarray], outputs: dict[str, object], opset: int = 17,
          inits: dict[str, np.ndarray] | None = None, dims: dict[str, list] | None = None) -> onnx.ModelProto:
    dims = dims or {}
    ins = [value_info(n, a.dtype, dims.get(n, list(a.shape))) for n, a in inputs.items()]
    outs = [value_info(n, dt, None) for n, dt in outputs.items()]
    return make_model(nodes, ins, outs, initializers=inits, opset=opset)


def check(nodes, inputs: dict[str, np.ndarray], outputs: dict[str, object], opset: int = 17,
          inits: dict[str, np.ndarray] | None = None, dims: dict[str, list] | None = None,
          more: Sequence[dict[str, np.ndarray]] = (), reference: bool = False):
    """Compile once, compare with onnxruntime (or the reference) on ``inputs`` and each of ``more``."""
    model = build(nodes, inputs, outputs, opset, inits, dims)
    m = sofie_root.compile(model)
    for feed in [inputs, *more]:
        arrays = list(feed.values())
        if reference:
            got, ref = m.infer(*arrays), run_reference(model, *arrays)
            for g, r in zip(got, ref):
                assert g.shape == r.shape and g.dtype == r.dtype
                np.testing.assert_array_equal(g, r)
        else:
            assert_matches_ort(model, *arrays, compiled=m)
    return m


# -- Transpose -----------------------------------------------------------------------------------

@pytest.mark.parametrize("perm", [None, [0, 1, 2], [2, 0, 1], [1, 0, 2], [0, 2, 1], [2, 1, 0]], ids=str)
def test_transpose(perm) -> None:
    x = rand((2, 3, 4))
    attrs = {} if perm is None else {"perm": perm}
    check([helper.make_node("Transpose", ["x"], ["y"], **attrs)], {"x": x}, {"y": F32})


@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.uint16, np.int64, np.uint64, np.bool_])
def test_transpose_dtypes_symbolic(dtype) -> None:
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[1, 3, 0, 2])
    check([node], {"x": rand((2, 3, 1, 5), dtype)}, {"y": dtype}, dims={"x": ["N", 3, 1, 5]},
          more=[{"x": rand((4, 3, 1, 5), dtype)}])


@pytest.mark.parametrize("shape,perm", [((2, 100, 16, 32), [0, 3, 1, 2]), ((3, 8, 100), [0, 2, 1]),
                                         ((37, 19), [1, 0]), ((2, 1, 17, 1, 33), [4, 1, 3, 0, 2]),
                                         ((2, 5, 3, 7), [0, 2, 3, 1]), ((4, 6, 5), [2, 0, 1])], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.bool_])
def test_transpose_batched_2d(shape, perm, dtype) -> None:
    """Permutations that are a batched 2-D transpose once adjacent axes merge (sofie_rt::transpose2d,
    by 16 x 16 tiles: sizes on and off the tile edges), with a symbolic first dimension."""
    m = sofie_root.compile(build([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], {"x": rand(shape, dtype)},
                                 {"y": dtype}, dims={"x": ["N", *shape[1:]]}))
    for n in (shape[0], 1, 3):
        x = rand((n, *shape[1:]), dtype)
        (y,) = m.infer(x)
        np.testing.assert_array_equal(y, np.transpose(x, perm))
    assert "transpose2d" in m.source, "the tiled kernel is used"


@pytest.mark.parametrize("rows,cols", [(8, 8), (9, 8), (8, 9), (17, 23), (16, 40), (40, 33), (7, 100), (2, 100),
                                       (100, 7), (1600, 8), (64, 64), (3, 50), (100, 3), (9, 2), (17, 4), (15, 3),
                                       (7, 4)], ids=str)
def test_transpose_float_blocks_bit_exact(rows, cols) -> None:
    """Float [N, R, C] -> [N, C, R]: the 8 x 8 register blocks (R and C >= 8), the shuffles of 8 rows
    of 2, 3 or 4 columns, the scalar tiles at their right and lower edges and the tile loops kept
    for the JIT's sake (C > 32), checked bit
    for bit (NaN payloads, -0, infinities and subnormals are moved, not computed)."""
    m = sofie_root.compile(build([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1])],
                                 {"x": rand((2, rows, cols))}, {"y": F32}, dims={"x": ["N", rows, cols]}))
    for n in (1, 3):
        bits = RNG.integers(0, 2**32, size=(n, rows, cols), dtype=np.uint32)
        bits.flat[:4] = [0x7FC00001, 0x80000000, 0xFF800000, 0x00000001]  # NaN with payload, -0, -inf, subnormal
        (y,) = m.infer(bits.view(np.float32))
        np.testing.assert_array_equal(y.view(np.uint32), bits.transpose(0, 2, 1))


# -- Concat --------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_concat(axis) -> None:
    shapes = [[2, 3, 4] for _ in range(3)]
    for k, s in enumerate(shapes):
        s[axis] = k + 1
    feeds = {f"x{k}": rand(s) for k, s in enumerate(shapes)}
    check([helper.make_node("Concat", list(feeds), ["y"], axis=axis)], feeds, {"y": F32})


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.float64])
def test_concat_dtypes_zero_size(dtype) -> None:
    feeds = {"a": rand((2, 0), dtype), "b": rand((2, 3), dtype), "c": rand((2, 1), dtype)}
    check([helper.make_node("Concat", list(feeds), ["y"], axis=-1)], feeds, {"y": dtype})


def test_concat_symbolic_batch() -> None:
    nodes = [helper.make_node("Concat", ["a", "b"], ["y"], axis=1),
             helper.make_node("Concat", ["a", "w"], ["z"], axis=0)]  # along the symbolic axis
    check(nodes, {"a": rand((2, 3)), "b": rand((2, 5))}, {"y": F32, "z": F32}, dims={"a": ["N", 3], "b": ["N", 5]},
          inits={"w": rand((2, 3))}, more=[{"a": rand((5, 3)), "b": rand((5, 5))}])


# -- Split ---------------------------------------------------------------------------------------

def test_split_attribute_opset11() -> None:
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, split=[1, 2, 3])
    check([node], {"x": rand((2, 6))}, {"a": F32, "b": F32, "c": F32}, opset=11)


def test_split_input_opset13_negative_axis() -> None:
    node = helper.make_node("Split", ["x", "s"], ["a", "b"], axis=-1)
    check([node], {"x": rand((3, 2, 7))}, {"a": F32, "b": F32}, opset=13, inits={"s": np.array([5, 2], I64)})


def test_split_equal_and_zero() -> None:
    nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=0),
             helper.make_node("Split", ["x", "s"], ["d", "e", "f"], axis=1)]
    check(nodes, {"x": rand((6, 4), np.int16)}, dict.fromkeys("abcdef", np.int16), opset=13,
          inits={"s": np.array([0, 4, 0], I64)})


@pytest.mark.parametrize("n,d", [(3, 7), (3, 8), (2, 6), (4, 4)])
def test_split_num_outputs(n, d) -> None:
    outs = [f"o{k}" for k in range(n)]
    node = helper.make_node("Split", ["x"], outs, axis=1, num_outputs=n)
    check([node], {"x": rand((2, d))}, dict.fromkeys(outs, F32), opset=18)


def test_split_uneven_last_chunks_empty() -> None:
    """5 into 4 parts: 2, 2, 1, 0 as onnx.reference gives (onnxruntime rejects it at run time)."""
    node = helper.make_node("Split", ["x"], list("abcd"), num_outputs=4)
    m = check([node], {"x": rand((5, 2))}, dict.fromkeys("abcd", F32), opset=18, reference=True)
    assert [o.shape[0] for o in m.infer(rand((5, 2)))] == [2, 2, 1, 0]


def test_split_symbolic_batch() -> None:
    node = helper.make_node("Split", ["x"], ["a", "b"], axis=1)
    check([node], {"x": rand((2, 6), np.uint32)}, {"a": np.uint32, "b": np.uint32}, dims={"x": ["N", 6]},
          opset=13, more=[{"x": rand((3, 6), np.uint32)}])


# -- Slice ---------------------------------------------------------------------------------------

SLICES = [
    # starts, ends, axes, steps
    ([0, 1], [3, 4], [0, 1], None),
    ([1], [INT_MAX], [1], None),
    ([-3], [-1], [2], None),
    ([4, 1], [0, 3], [1, 0], [-1, 1]),
    ([-1], [-INT_MAX], [1], [-2]),
    ([0, 0, 1], [10, -1, 100], None, None),
    ([20], [-20], [-1], [-1]),
    ([-100, 1], [100, 2], [-3, -2], [3, 1]),
    ([5], [2], [2], [1]),
    ([2], [3], [-1], [5]),
    ([-10], [-20], [2], [-1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES, ids=str)
def test_slice(starts, ends, axes, steps) -> None:
    x = rand((4, 5, 6))
    inits = {"s": np.array(starts, I64), "e": np.array(ends, I64)}
    ins = ["x", "s", "e"]
    if axes is not None or steps is not None:
        inits["a"] = np.array(axes if axes is not None else list(range(len(starts))), I64)
        ins.append("a")
    if steps is not None:
        inits["t"] = np.array(steps, I64)
        ins.append("t")
    check([helper.make_node("Slice", ins, ["y"])], {"x": x}, {"y": F32}, inits=inits, opset=13)


def test_slice_attributes_opset9() -> None:
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -4], ends=[1000, -1], axes=[0, 2])
    check([node], {"x": rand((3, 4, 5), np.int64)}, {"y": I64}, opset=9)
    node = helper.make_node("Slice", ["x"], ["y"], starts=[0, 1], ends=[2, 3])
    check([node], {"x": rand((3, 4), np.bool_)}, {"y": np.bool_}, opset=9)


def test_slice_int32_indices() -> None:
    inits = {"s": np.array([1], np.int32), "e": np.array([-1], np.int32), "a": np.array([0], np.int32)}
    check([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])], {"x": rand((5, 2), np.uint8)},
          {"y": np.uint8}, inits=inits)


def test_slice_symbolic_batch() -> None:
    inits = {"s": np.array([1, 1], I64), "e": np.array([-1, INT_MAX], I64), "a": np.array([0, 1], I64),
             "s2": np.array([-1], I64), "e2": np.array([-INT_MAX], I64), "a2": np.array([0], I64),
             "t2": np.array([-1], I64)}
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"]),
             helper.make_node("Slice", ["x", "s2", "e2", "a2", "t2"], ["z"])]
    check(nodes, {"x": rand((3, 4))}, {"y": F32, "z": F32}, inits=inits, dims={"x": ["N", 4]},
          more=[{"x": rand((6, 4))}])


def test_slice_symbolic_bounds_checked_at_run_time() -> None:
    inits = {"s": np.array([1], I64), "e": np.array([3], I64), "a": np.array([0], I64)}
    m = check([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])], {"x": rand((5, 4))}, {"y": F32},
              inits=inits, dims={"x": ["N", 4]}, more=[{"x": rand((3, 4))}])
    with pytest.raises(sofie_root.SofieError, match="slice bounds"):
        m.infer(rand((2, 4)))


# -- Gather family -------------------------------------------------------------------------------

@pytest.mark.parametrize("axis,ind_shape", [(0, ()), (0, (3,)), (1, (2, 2)), (-1, (4,)), (2, (1, 3, 2))], ids=str)
def test_gather(axis, ind_shape) -> None:
    x = rand((5, 4, 3))
    d = x.shape[axis]
    ind = RNG.integers(-d, d, ind_shape).astype(I64)
    check([helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)], {"x": x, "i": ind}, {"y": F32})


@pytest.mark.parametrize("dtype", [np.int8, np.uint64, np.bool_, np.float64])
def test_gather_dtypes_int32_indices_symbolic(dtype) -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
    ind = np.array([[2, -1], [0, 1]], np.int32)
    check([node], {"x": rand((2, 3, 2), dtype), "i": ind}, {"y": dtype}, dims={"x": ["N", 3, 2]},
          more=[{"x": rand((5, 3, 2), dtype), "i": ind}])


def test_gather_constant_indices_on_symbolic_axis() -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=0)
    check([node], {"x": rand((4, 3))}, {"y": F32}, inits={"i": np.array([0, -1, 1], I64)},
          dims={"x": ["N", 3]}, more=[{"x": rand((2, 3))}])


@pytest.mark.parametrize("bad", [5, -6, 100])
def test_gather_index_out_of_range_raises(bad) -> None:
    model = build([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
                  {"x": rand((5, 3)), "i": np.zeros(2, I64)}, {"y": F32})
    m = sofie_root.compile(model)
    with pytest.raises(sofie_root.SofieError, match="out of range"):
        m.infer(rand((5, 3)), np.array([0, bad], I64))
    np.testing.assert_array_equal(m.infer(np.eye(5, 3, dtype=F32), np.array([4, -5], I64))[0],
                                  np.eye(5, 3, dtype=F32)[[4, 0]])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis) -> None:
    x = rand((4, 5, 3), np.int32)
    ishape = [3, 4, 2]
    ishape[axis] = 6
    d = x.shape[axis]
    ind = RNG.integers(-d, d, ishape).astype(I64)
    check([helper.make_node("GatherElements", ["x", "i"], ["y"], axis=axis)], {"x": x, "i": ind}, {"y": np.int32})


def test_gather_elements_out_of_range_raises() -> None:
    model = build([helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
                  {"x": rand((2, 3)), "i": np.zeros((2, 2), I64)}, {"y": F32})
    with pytest.raises(sofie_root.SofieError, match="out of range"):
        sofie_root.compile(model).infer(rand((2, 3)), np.array([[0, 1], [3, 0]], I64))


@pytest.mark.parametrize("batch_dims,xshape,ishape", [
    (0, (3, 4, 5), (2, 1)), (0, (3, 4, 5), (2, 3, 2)), (0, (3, 4), (2, 2)),
    (1, (2, 3, 4), (2, 1)), (1, (2, 3, 4), (2, 5, 2)), (2, (2, 3, 4, 5), (2, 3, 1)),
], ids=str)
def test_gather_nd(batch_dims, xshape, ishape) -> None:
    x = rand(xshape, np.float64)
    m = ishape[-1]
    cols = [RNG.integers(-xshape[batch_dims + q], xshape[batch_dims + q], ishape[:-1]) for q in range(m)]
    ind = np.stack(cols, axis=-1).astype(I64)
    check([helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=batch_dims)], {"x": x, "i": ind},
          {"y": np.float64})


def test_gather_nd_out_of_range_raises() -> None:
    model = build([helper.make_node("GatherND", ["x", "i"], ["y"])],
                  {"x": rand((2, 3)), "i": np.zeros((1, 2), I64)}, {"y": F32})
    with pytest.raises(sofie_root.SofieError, match="out of range"):
        sofie_root.compile(model).infer(rand((2, 3)), np.array([[1, -4]], I64))


# -- Scatter family ------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, -1])
def test_scatter_elements(reduction, axis) -> None:
    x = rand((4, 5))
    upd = rand((3, 5) if axis == 0 else (4, 3))
    d = x.shape[axis]
    if reduction == "none":  # distinct targets per line (duplicates are unspecified)
        perm = np.argsort(RNG.random((x.shape[1 - axis % 2], d)), axis=1)[:, :3]
        ind = (perm.T if axis == 0 else perm).astype(I64)
        ind = np.where(RNG.random(ind.shape) > 0.5, ind - d, ind)
    else:
        ind = RNG.integers(-d, d, upd.shape).astype(I64)
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=axis, reduction=reduction)
    check([node], {"x": x, "i": ind, "u": upd}, {"y": F32}, opset=18)


def test_scatter_elements_int_and_old_scatter() -> None:
    x, u = rand((3, 4), np.int32), rand((3, 2), np.int32)
    ind = np.array([[0, 3], [1, 2], [-1, -2]], I64)
    check([helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1)], {"x": x, "i": ind, "u": u},
          {"y": np.int32}, opset=13)
    check([helper.make_node("Scatter", ["x", "i", "u"], ["y"], axis=1)], {"x": x, "i": ind, "u": u},
          {"y": np.int32}, opset=10)


def test_scatter_out_of_range_raises() -> None:
    model = build([helper.make_node("ScatterElements", ["x", "i", "u"], ["y"])],
                  {"x": rand((3, 2)), "i": np.zeros((1, 2), I64), "u": rand((1, 2))}, {"y": F32}, opset=13)
    with pytest.raises(sofie_root.SofieError, match="out of range"):
        sofie_root.compile(model).infer(rand((3, 2)), np.array([[0, 3]], I64), rand((1, 2)))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction) -> None:
    x = rand((4, 3, 2))
    ind = np.array([[[1], [-1]], [[0], [2]]], I64) if reduction == "none" else RNG.integers(-4, 4, (3, 1)).astype(I64)
    upd = rand(ind.shape[:-1] + (3, 2))
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction)
    check([node], {"x": x, "i": ind, "u": upd}, {"y": F32}, opset=18)


def test_scatter_nd_elements_and_out_of_range() -> None:
    x, ind, u = rand((3, 4), np.int64), np.array([[0, 1], [2, -1], [1, 0]], I64), rand((3,), np.int64)
    model = check([helper.make_node("ScatterND", ["x", "i", "u"], ["y"])], {"x": x, "i": ind, "u": u},
                  {"y": I64}, opset=13)
    with pytest.raises(sofie_root.SofieError, match="out of range"):
        model.infer(x, np.array([[0, 1], [3, 0], [1, 0]], I64), u)


# -- Expand / Tile -------------------------------------------------------------------------------

@pytest.mark.parametrize("xshape,shape", [((3, 1), (2, 3, 4)), ((1, 4), (3, 1)), ((2, 1, 3), (1, 1)),
                                          ((), (2, 2)), ((4,), (3, 4))], ids=str)
def test_expand(xshape, shape) -> None:
    check([helper.make_node("Expand", ["x", "s"], ["y"])], {"x": rand(xshape, np.int16)}, {"y": np.int16},
          inits={"s": np.array(shape, I64)})


def test_expand_symbolic_from_shape() -> None:
    nodes = [helper.make_node("Shape", ["r"], ["s"]), helper.make_node("Expand", ["x", "s"], ["y"])]
    check(nodes, {"x": rand((1, 3), np.bool_), "r": rand((2, 3))}, {"y": np.bool_},
          dims={"r": ["N", 3]}, more=[{"x": rand((1, 3), np.bool_), "r": rand((5, 3))}])


@pytest.mark.parametrize("reps", [(1, 1, 1), (2, 1, 3), (1, 3, 1), (2, 2, 2), (0, 1, 2)], ids=str)
def test_tile(reps) -> None:
    check([helper.make_node("Tile", ["x", "r"], ["y"])], {"x": rand((2, 3, 2), np.uint8)}, {"y": np.uint8},
          inits={"r": np.array(reps, I64)})


def test_tile_symbolic_batch() -> None:
    check([helper.make_node("Tile", ["x", "r"], ["y"])], {"x": rand((2, 3))}, {"y": F32},
          inits={"r": np.array([2, 3], I64)}, dims={"x": ["N", 3]}, more=[{"x": rand((3, 3))}])


# -- Pad -----------------------------------------------------------------------------------------

PADS = [(0, 1, 2, 1, 0, 2), (2, 0, 0, 0, 3, 1), (0, -1, 1, 1, 2, -2), (3, 4, 4, 5, 5, 4)]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", PADS, ids=str)
def test_pad(mode, pads) -> None:
    if mode == "reflect":
        pads = tuple(min(p, 1) for p in pads)  # onnxruntime limits reflect pads to size - 1
    x = rand((2, 3, 4))
    ins = ["x", "p"] + (["c"] if mode == "constant" else [])
    inits = {"p": np.array(pads, I64)}
    if mode == "constant":
        inits["c"] = np.array(1.5, F32)
    check([helper.make_node("Pad", ins, ["y"], mode=mode)], {"x": x}, {"y": F32}, inits=inits, opset=19)


def test_pad_runtime_value_and_axes() -> None:
    node = helper.make_node("Pad", ["x", "p", "c", "a"], ["y"])
    check([node], {"x": rand((2, 3, 4), np.int32), "c": np.array(7, np.int32)}, {"y": np.int32},
          inits={"p": np.array([1, 0, 2, 3], I64), "a": np.array([-1, 0], I64)}, opset=18)


def test_pad_attributes_opset10() -> None:
    node = helper.make_node("Pad", ["x"], ["y"], pads=[1, 0, 0, 2], value=-3.0)
    check([node], {"x": rand((2, 3))}, {"y": F32}, opset=10)
    node = helper.make_node("Pad", ["x"], ["y"], pads=[1, 2, 1, 0], mode="edge")
    check([node], {"x": rand((2, 3), np.float64)}, {"y": np.float64}, opset=10)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_symbolic_batch(mode) -> None:
    node = helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)
    check([node], {"x": rand((2, 4))}, {"y": F32}, inits={"p": np.array([0, 1, 0, 1], I64)},
          dims={"x": ["N", 4]}, opset=13, more=[{"x": rand((5, 4))}])


# -- Range, ConstantOfShape, EyeLike, Trilu, OneHot, NonZero ---------------------------------------

@pytest.mark.parametrize("dtype,args", [(F32, (0.5, 4.0, 0.75)), (np.int32, (10, -3, -4)), (I64, (2, 3, 5)),
                                        (np.float64, (1.0, 1.0, 1.0)), (np.int16, (-5, 7, 2))], ids=str)
def test_range_constant(dtype, args) -> None:
    inits = {k: np.array(a, dtype) for k, a in zip("sld", args)}
    nodes = [helper.make_node("Range", ["s", "l", "d"], ["r"]), helper.make_node("Shape", ["r"], ["n"]),
             helper.make_node("Expand", ["x", "n"], ["y"])]
    check(nodes, {"x": rand((1,), dtype)}, {"y": dtype}, inits=inits, opset=11)


def test_range_symbolic_limit() -> None:
    zero = np.array(0, I64)
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"]),
             helper.make_node("Range", ["one", "n", "one"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Range", ["zero", "n", "one"], ["r2"])]
    check(nodes, {"x": rand((4, 2))}, {"rf": F32, "r2": I64}, dims={"x": ["N", 2]},
          inits={"zero": zero, "one": np.array(1, I64)}, opset=13, more=[{"x": rand((7, 2))}])


@pytest.mark.parametrize("value", [None, np.array([3], np.int32), np.array([2.5], np.float64),
                                   np.array([True])], ids=str)
def test_constant_of_shape(value) -> None:
    attrs = {} if value is None else {"value": onnx.numpy_helper.from_array(value)}
    dt = F32 if value is None else value.dtype
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["y"], **attrs),
             helper.make_node("ConstantOfShape", ["c"], ["z"], **attrs)]
    check(nodes, {"x": rand((2, 3))}, {"y": dt, "z": dt}, dims={"x": ["N", 3]},
          inits={"c": np.array([2, 0], I64)}, more=[{"x": rand((4, 3))}])


@pytest.mark.parametrize("k,dtype", [(0, None), (1, onnx.TensorProto.INT32), (-2, onnx.TensorProto.DOUBLE),
                                     (7, None), (2, onnx.TensorProto.BOOL)], ids=str)
def test_eye_like(k, dtype) -> None:
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    out = F32 if dtype is None else helper.tensor_dtype_to_np_dtype(dtype)
    check([helper.make_node("EyeLike", ["x"], ["y"], **attrs)], {"x": rand((3, 5))}, {"y": out}, reference=True)
    check([helper.make_node("EyeLike", ["x"], ["y"], **attrs)], {"x": rand((4, 2))}, {"y": out}, reference=True)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7, 9])
def test_trilu(upper, k) -> None:
    inits = None if k is None else {"k": np.array(k, I64)}
    ins = ["x"] if k is None else ["x", "k"]
    check([helper.make_node("Trilu", ins, ["y"], upper=upper)], {"x": rand((2, 4, 5))}, {"y": F32},
          inits=inits, opset=14)


def test_trilu_runtime_k_symbolic() -> None:
    node = helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)
    check([node], {"x": rand((2, 3, 3), np.int64), "k": np.array(1, I64)}, {"y": I64}, opset=14,
          dims={"x": ["N", 3, 3]}, more=[{"x": rand((3, 3, 3), np.int64), "k": np.array(-1, I64)}])


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
@pytest.mark.parametrize("ind_dtype,depth_dtype,val_dtype", [(I64, I64, F32), (np.int32, F32, F32), (F32, F32, F32),
                                                             (I64, F32, np.int32), (F32, I64, I64)], ids=str)
def test_one_hot(axis, ind_dtype, depth_dtype, val_dtype) -> None:
    ind = np.array([[0, 3, -1], [-4, 5, 2]], ind_dtype)  # 5 is out of range: all off_value
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=axis)
    check([node], {"i": ind, "v": np.array([-1, 2], val_dtype)}, {"y": val_dtype},
          inits={"d": np.array(4, depth_dtype)}, opset=11)


def test_one_hot_int_values_symbolic() -> None:
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"])
    ind = np.array([1, 0], I64)
    check([node], {"i": ind, "v": np.array([0, 5], I64)}, {"y": I64}, inits={"d": np.array([3], I64)},
          dims={"i": ["N"]}, more=[{"i": np.array([2, -1, 7], I64), "v": np.array([1, 9], I64)}])


def test_non_zero_constant_and_runtime() -> None:
    c = np.array([[1, 0, 2], [0, 0, 3]], np.int32)
    nodes = [helper.make_node("NonZero", ["c"], ["nz"]), helper.make_node("Add", ["nz", "x"], ["y"])]
    check(nodes, {"x": np.zeros((2, 3), I64)}, {"y": I64}, inits={"c": c}, opset=13)
    model = build([helper.make_node("NonZero", ["x"], ["y"])], {"x": c}, {"y": I64}, opset=13)
    np.testing.assert_array_equal(sofie_root.compile(model)(c), np.array(np.nonzero(c)))


# -- DepthToSpace / SpaceToDepth -------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("b", [2, 3])
def test_depth_to_space(mode, b) -> None:
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=b, mode=mode)
    check([node], {"x": rand((2, 2 * b * b, 3, 2))}, {"y": F32}, dims={"x": ["N", 2 * b * b, 3, 2]},
          opset=13, more=[{"x": rand((1, 2 * b * b, 3, 2))}])


@pytest.mark.parametrize("b", [2, 3])
def test_space_to_depth(b) -> None:
    node = helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=b)
    check([node], {"x": rand((2, 3, 2 * b, 3 * b), np.int8)}, {"y": np.int8}, dims={"x": ["N", 3, 2 * b, 3 * b]},
          opset=13, more=[{"x": rand((3, 3, 2 * b, 3 * b), np.int8)}])


def test_space_to_depth_crd_and_round_trip() -> None:
    x = rand((2, 3, 4, 6))
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=2, mode="CRD"),
             helper.make_node("DepthToSpace", ["s"], ["y"], blocksize=2, mode="CRD")]
    m = check(nodes, {"x": x}, {"s": F32, "y": F32}, opset=28, reference=True)
    np.testing.assert_array_equal(m.infer(x)[1], x)


# -- shape sub-graphs ------------------------------------------------------------------------------

def test_shape_subgraph_folds_on_symbolic_batch() -> None:
    """x.reshape(x.shape[0], -1) as exported: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = {"zero": np.array(0, I64), "ax": np.array([0], I64), "minus1": np.array([-1], I64)}
    model = build(nodes, {"x": rand((1, 3, 4))}, {"y": F32}, dims={"x": ["N", 3, 4]}, inits=inits, opset=13)
    m = sofie_root.compile(model)
    assert [n.op_type for n in m.graph.nodes] == ["Reshape"]
    assert [str(d) for d in m.graph.info("y").shape] == ["N", "12"]
    for batch in (1, 5):
        x = rand((batch, 3, 4))
        y = assert_matches_ort(model, x, compiled=m)[0]
        np.testing.assert_array_equal(y, x.reshape(batch, -1))


def test_shape_subgraph_slice_concat_tile() -> None:
    """Slice/Concat/Tile/Expand/Split of symbolic shape values also fold."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "st", "en"], ["hw"]),           # (3, 4)
             helper.make_node("Split", ["s", "sp"], ["n", "rest"], axis=0),   # (N), (3, 4)
             helper.make_node("Tile", ["n", "two"], ["nn"]),                  # (N, N)
             helper.make_node("Slice", ["nn", "z1", "o1"], ["n2"]),           # (N)
             helper.make_node("Concat", ["n2", "hw"], ["shape"], axis=0),     # (N, 3, 4)
             helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["xt", "shape"], ["y"])]
    inits = {"st": np.array([1], I64), "en": np.array([INT_MAX], I64), "sp": np.array([1, 2], I64),
             "two": np.array([2], I64), "z1": np.array([0], I64), "o1": np.array([1], I64)}
    model = build(nodes, {"x": rand((2, 3, 4))}, {"y": F32}, dims={"x": ["N", 3, 4]}, inits=inits, opset=13)
    m = sofie_root.compile(model)
    assert sorted(n.op_type for n in m.graph.nodes) == ["Reshape", "Transpose"]
    for batch in (1, 3):
        assert_matches_ort(model, rand((batch, 3, 4)), compiled=m)


def test_nonzero_on_runtime_input_with_downstream_ops() -> None:
    # NonZero's count is only known at run time: outputs are sized at their bound, then trimmed
    nodes = [helper.make_node("NonZero", ["x"], ["idx"]),
             helper.make_node("Transpose", ["idx"], ["pairs"], perm=[1, 0]),
             helper.make_node("Cast", ["idx"], ["f"], to=onnx.TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["f"], ["s"], keepdims=0)]
    model = make_model(nodes, [value_info("x", np.float32, ["N", 4])],
                       [value_info("pairs", np.int64, None), value_info("s", np.float32, None)], opset=13)
    compiled = sofie_root.compile(model)
    for x in (np.array([[0, 1, 0, 2], [3, 0, 0, 0]], np.float32), np.zeros((3, 4), np.float32),
              RNG.integers(0, 2, (5, 4)).astype(np.float32)):
        got = compiled.infer(x)
        np.testing.assert_array_equal(got[0], np.argwhere(x))
        np.testing.assert_allclose(got[1], np.nonzero(x)[0].sum(keepdims=False) + np.nonzero(x)[1].sum(), rtol=1e-6)
