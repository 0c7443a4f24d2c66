"""Reductions and normalising operators against onnxruntime: Reduce* (axes as attribute and as
input, keepdims, noop_with_empty_axes, empty sets), ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax
(opset < 13 and >= 13), TopK and CumSum.

To keep the file fast, the variants of one operator go into one model with one output per
variant (one compilation); inputs with a batch dimension ``N`` are run at two batch sizes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import sofie_root
from sofie_root.errors import SofieError

from .ort_check import assert_matches_ort, make_model, value_info

RNG = np.random.default_rng(7)

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare",
              "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"]
#: (axes, keepdims) variants; None: the default (every axis)
AXES_VARIANTS = [([1], 1), ([1], 0), ([0, 2], 1), ([0, 2], 0), ([-1], 1), ([-3, -1], 0), ([1, 2], 0),
                 ([0], 1), (None, 1), (None, 0)]


def _data(op: str, shape, dtype=np.float32) -> np.ndarray:
    if op == "ReduceLogSum":
        return RNG.uniform(0.2, 2.0, shape).astype(dtype)
    if op == "ReduceProd":
        return RNG.uniform(0.5, 1.5, shape).astype(dtype) * RNG.choice([-1, 1], shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def _int_data(op: str, shape, dtype) -> np.ndarray:
    if op == "ReduceProd":
        return RNG.integers(-2, 3, shape).astype(dtype)
    if op in ("ReduceLogSum", "ReduceLogSumExp"):
        return RNG.integers(0, 6, shape).astype(dtype)
    lo = 0 if np.dtype(dtype).kind == "u" else -50
    return RNG.integers(lo, 50, shape).astype(dtype)


def _reduce_model(op: str, opset: int, dtype, shape, variants, noop: int | None = None):
    """One node per (axes, keepdims) variant; axes as attribute or as an initializer input."""
    axes_input = opset >= (13 if op == "ReduceSum" else 18)
    nodes, outs, inits = [], [], {}
    for k, (axes, keep) in enumerate(variants):
        attrs = {"keepdims": keep}
        ins = ["x"]
        if axes_input:
            if noop is not None:
                attrs["noop_with_empty_axes"] = noop
            if axes is not None:
                inits[f"axes{k}"] = np.array(axes, dtype=np.int64)
                ins.append(f"axes{k}")
        elif axes is not None:
            attrs["axes"] = axes
        nodes.append(helper.make_node(op, ins, [f"y{k}"], **attrs))
        outs.append(value_info(f"y{k}", dtype, None))
    return make_model(nodes, [value_info("x", dtype, shape)], outs, inits, opset=opset)


def _run_two_batches(model, make, rtol=1e-5, atol=1e-6):
    compiled = sofie_root.compile(model)
    for n in (1, 4):
        assert_matches_ort(model, make(n), compiled=compiled, rtol=rtol, atol=atol)
    return compiled


def _reference(model, *arrays) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = [i.name for i in model.graph.input]
        return ReferenceEvaluator(model).run(None, dict(zip(names, arrays)))


def _assert_matches_reference(model, *arrays, rtol=1e-5, atol=1e-6, compiled=None) -> None:
    """Like assert_matches_ort, against onnx.reference (dtypes onnxruntime has no kernel for)."""
    m = compiled if compiled is not None else sofie_root.compile(model)
    got = m.infer(*arrays)
    ref = _reference(model, *arrays)
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        r = np.asarray(r)
        assert g.shape == r.shape, f"output {k}: shape {g.shape} != reference {r.shape}"
        assert g.dtype == r.dtype, f"output {k}: dtype {g.dtype} != reference {r.dtype}"
        if r.dtype.kind == "f":
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(g, r, err_msg=f"output {k}")


# -- Reduce* ----------------------------------------------------------------------------------

@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_reduce_axes_keepdims_symbolic_batch(op: str, opset: int) -> None:
    model = _reduce_model(op, opset, np.float32, ["N", 3, 5], AXES_VARIANTS)
    _run_two_batches(model, lambda n: _data(op, (n, 3, 5)), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_float64_rank4(op: str) -> None:
    variants = [([1, 3], 1), ([0, 2], 0), ([-2], 1), ([1, 2], 1), ([3], 0)]
    model = _reduce_model(op, 18, np.float64, [2, 3, 4, 5], variants)
    assert_matches_ort(model, _data(op, (2, 3, 4, 5), np.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op", [op for op in REDUCE_OPS if op != "ReduceLogSumExp"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_int(op: str, dtype) -> None:
    variants = [([1], 1), ([0, 2], 0), ([-1], 1), (None, 0)]
    model = _reduce_model(op, 18, dtype, [3, 4, 5], variants)
    assert_matches_ort(model, _int_data(op, (3, 4, 5), dtype))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_log_sum_exp_int(dtype) -> None:
    """Integer LogSumExp (before opset 28) is the truncated exact value. onnxruntime computes it in
    integer steps (exp(x - max) truncated to 0 or 1), which is not a meaningful reference."""
    model = _reduce_model("ReduceLogSumExp", 18, dtype, [3, 4, 5], [([1], 1), ([0, 2], 0), (None, 0)])
    x = _int_data("ReduceLogSumExp", (3, 4, 5), dtype)
    got = sofie_root.compile(model).infer(x)
    xf = x.astype(np.float64)
    for g, axes, keep in zip(got, [(1,), (0, 2), None], [True, False, False]):
        ref = np.log(np.sum(np.exp(xf), axis=axes, keepdims=keep)).astype(dtype)
        np.testing.assert_array_equal(g, ref)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_reduce_max_min_small_ints(op: str, dtype) -> None:
    model = _reduce_model(op, 18, dtype, [3, 4, 5], [([1], 1), ([0, 2], 0), (None, 0)])
    info = np.iinfo(dtype)
    assert_matches_ort(model, RNG.integers(info.min, info.max, (3, 4, 5), endpoint=True).astype(dtype))


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceMax"])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_reduce_unsigned_against_reference(op: str, dtype) -> None:
    model = _reduce_model(op, 18, dtype, [3, 4, 5], [([1], 1), ([0, 2], 0)])
    _assert_matches_reference(model, RNG.integers(0, 9, (3, 4, 5)).astype(dtype))


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_noop_and_empty_axes(op: str) -> None:
    """Empty axes: identity-like with noop_with_empty_axes=1, every axis without; axes omitted."""
    x = _data(op, (3, 4))
    for noop in (0, 1):
        model = _reduce_model(op, 18, np.float32, [3, 4], [([], 1), ([], 0), (None, 1)], noop=noop)
        assert_matches_ort(model, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_empty_set(op: str) -> None:
    """Reducing a zero-sized axis gives the reduction's identity (ONNX opset 18+)."""
    model = _reduce_model(op, 18, np.float32, [2, 0, 4], [([1], 1), ([1], 0), ([0, 1], 0)])
    x = np.zeros((2, 0, 4), np.float32)
    if op == "ReduceMean":  # 0 / 0: the reference and numpy give NaN
        got = sofie_root.compile(model).infer(x)
        assert all(g.shape == s and np.isnan(g).all() for g, s in zip(got, [(2, 1, 4), (2, 4), (4,)]))
        return
    _assert_matches_reference(model, x)


def test_reduce_empty_output() -> None:
    """A zero-sized axis that is not reduced gives an empty output."""
    model = _reduce_model("ReduceSum", 13, np.float32, [2, 0, 4], [([2], 1), ([0], 0)])
    assert_matches_ort(model, np.zeros((2, 0, 4), np.float32))


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_max_min_bool(op: str) -> None:
    model = _reduce_model(op, 20, np.bool_, [4, 3], [([1], 1), ([0], 0), (None, 0)])
    x = RNG.uniform(size=(4, 3)) > 0.5
    x[0] = True
    x[1] = False
    _assert_matches_reference(model, x)
    empty = _reduce_model(op, 20, np.bool_, [2, 0, 4], [([1], 1)])
    _assert_matches_reference(empty, np.zeros((2, 0, 4), np.bool_))


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_max_min_nan(op: str) -> None:
    model = _reduce_model(op, 18, np.float32, [3, 4, 2], [([1], 0), ([0, 2], 0), ([2], 1)])
    x = RNG.standard_normal((3, 4, 2)).astype(np.float32)
    x[0, 1, 0] = np.nan
    x[2, 3, 1] = np.nan
    got = sofie_root.compile(model).infer(x)
    fn = np.max if op == "ReduceMax" else np.min
    np.testing.assert_array_equal(got[0], fn(x, axis=1))
    np.testing.assert_array_equal(got[1], fn(x, axis=(0, 2)))
    np.testing.assert_array_equal(got[2], fn(x, axis=2, keepdims=True))


@pytest.mark.parametrize("op", ["ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                                "ReduceMax", "ReduceMin"])
def test_reduce_last_axis_rows_in_vector_lanes(op: str) -> None:
    """Float rows of the last axis go to sofie_rt::rows::reduce (chains of 8-lane vectors, a
    padded tail, then the square root or log): every row length up to four vectors and past, NaN
    in each chain of the maxima and in the tail, +-inf and -0 among the values, against float64
    numpy."""
    fns = {"ReduceMax": lambda a: np.max(a, axis=-1), "ReduceMin": lambda a: np.min(a, axis=-1),
           "ReduceProd": lambda a: np.prod(a, axis=-1),
           "ReduceSumSquare": lambda a: np.sum(a * a, axis=-1),
           "ReduceL1": lambda a: np.sum(np.abs(a), axis=-1),
           "ReduceL2": lambda a: np.sqrt(np.sum(a * a, axis=-1)),
           "ReduceLogSum": lambda a: np.log(np.sum(a, axis=-1))}
    for n in (1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33, 64, 100):
        model = _reduce_model(op, 18, np.float32, ["N", 5, n], [([-1], 0)])
        x = _data(op, (3, 5, n))
        if n >= 3:
            x[0, 1, n - 1] = np.nan    # in the tail or the last vector
            x[1, 2, 0] = np.inf
            x[2, 3, n // 2] = -np.inf
            x[2, 4, 1] = -0.0
            x[1, 0, min(8, n - 1)] = np.nan   # the second vector of a block of four
            x[1, 4, min(20, n - 1)] = np.nan  # the third
        with np.errstate(all="ignore"):
            want = fns[op](x.astype(np.float64)).astype(np.float32)
        got = sofie_root.compile(model).infer(x)[0]
        np.testing.assert_allclose(got, want, rtol=2e-6 * max(1, n) ** 0.5, atol=1e-6, equal_nan=True,
                                   err_msg=f"{op} rows of {n}")


def test_reduce_log_sum_exp_large_and_infinite() -> None:
    model = _reduce_model("ReduceLogSumExp", 18, np.float32, [3, 4, 2], [([1], 0), ([0, 2], 1), (None, 0)])
    x = (RNG.standard_normal((3, 4, 2)) * 200).astype(np.float32)
    assert_matches_ort(model, x, rtol=1e-5, atol=1e-4)
    x[0, :, 0] = -np.inf
    x[1, 2, 1] = np.inf
    # an all -inf slice gives -inf (onnxruntime agrees; the reference gives NaN from -inf - -inf)
    assert_matches_ort(model, x, rtol=1e-5, atol=1e-4)


def test_reduce_symbolic_reduced_axis() -> None:
    """Reducing the symbolic batch axis itself (and with a symbolic inner axis)."""
    model = _reduce_model("ReduceMean", 18, np.float32, ["N", 3, "M"],
                          [([0], 1), ([0, 2], 0), ([1], 0), ([2], 1)])
    compiled = sofie_root.compile(model)
    for n, m in ((1, 1), (4, 5)):
        assert_matches_ort(model, _data("ReduceMean", (n, 3, m)), compiled=compiled)


@pytest.mark.parametrize("op", ["ReduceProd", "ReduceSum"])
def test_reduce_folds_shape_subgraph(op: str) -> None:
    """Shape -> ReduceProd/ReduceSum folds at compile time with a symbolic batch (no node left)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node(op, ["s"], ["p"], keepdims=1)]
    outs = [value_info("p", np.int64, None)]
    if op == "ReduceProd":
        nodes.append(helper.make_node("Reshape", ["x", "p"], ["y"]))
        outs.append(value_info("y", np.float32, None))
    model = make_model(nodes, [value_info("x", np.float32, ["N", 3, 4])], outs, opset=13)
    compiled = sofie_root.compile(model)
    assert not any(n.op_type == op for n in compiled.graph.nodes)
    if op == "ReduceProd":
        assert [str(d) for d in compiled.outputs[1].shape] == ["12*N"]
    for n in (1, 4):
        assert_matches_ort(model, _data(op, (n, 3, 4)), compiled=compiled)


def test_reduce_propagate_symbolic_value() -> None:
    """ReduceProd over Shape with a symbolic batch gives a symbolic compile-time value."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["p"], axes=[0], keepdims=1),
             helper.make_node("Concat", ["one", "p"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"])]
    model = make_model(nodes, [value_info("x", np.float32, ["N", 2, 3])], [value_info("y", np.float32, None)],
                       {"one": np.array([1], np.int64)}, opset=13)
    compiled = sofie_root.compile(model)
    assert [str(d) for d in compiled.outputs[0].shape] == ["1", "6*N"]
    for n in (1, 3):
        assert_matches_ort(model, _data("ReduceProd", (n, 2, 3)), compiled=compiled)


def test_reduce_runtime_axes_rejected_or_specialised() -> None:
    """Axes computed from data cannot be compiled ahead of time: a clear error or specialisation."""
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    model = make_model([node], [value_info("x", np.float32, [2, 3]), value_info("axes", np.int64, [1])],
                       [value_info("y", np.float32, None)], opset=13)
    x = _data("ReduceSum", (2, 3))
    try:
        compiled = sofie_root.compile(model)
    except SofieError as e:
        assert "axes" in str(e)
        return
    np.testing.assert_allclose(compiled.infer(x, np.array([1], np.int64))[0], x.sum(1, keepdims=True), rtol=1e-6)


def test_reduce_bad_axes() -> None:
    for axes in ([3], [1, 1], [-4]):
        node = helper.make_node("ReduceSum", ["x"], ["y"], axes=axes)
        model = make_model([node], [value_info("x", np.float32, [2, 3, 4])], [value_info("y", np.float32, None)],
                           opset=11)
        with pytest.raises(SofieError):
            sofie_root.compile(model)


# -- ArgMax / ArgMin --------------------------------------------------------------------------

ARG_VARIANTS = [{"axis": 0}, {"axis": 1}, {"axis": 2, "keepdims": 0}, {"axis": -1}, {"axis": -2, "keepdims": 0},
                {}]


def _arg_model(op, dtype, shape, variants, opset=13):
    nodes = [helper.make_node(op, ["x"], [f"y{k}"], **attrs) for k, attrs in enumerate(variants)]
    outs = [value_info(f"y{k}", np.int64, None) for k in range(len(variants))]
    return make_model(nodes, [value_info("x", dtype, shape)], outs, opset=opset)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_symbolic_batch_with_ties(op: str, last: int) -> None:
    variants = [dict(v, select_last_index=last) for v in ARG_VARIANTS]
    model = _arg_model(op, np.float32, ["N", 4, 5], variants)
    # few distinct values: many ties
    _run_two_batches(model, lambda n: RNG.integers(0, 3, (n, 4, 5)).astype(np.float32))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_opset11(op: str) -> None:
    model = _arg_model(op, np.float64, [3, 4, 5], ARG_VARIANTS, opset=11)
    assert_matches_ort(model, RNG.standard_normal((3, 4, 5)))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint8])
def test_arg_int(op: str, dtype) -> None:
    variants = [{"axis": 1}, {"axis": -1, "keepdims": 0, "select_last_index": 1}, {"axis": 0}]
    model = _arg_model(op, dtype, [3, 4, 5], variants)
    assert_matches_ort(model, RNG.integers(0, 4, (3, 4, 5)).astype(dtype))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_nan_like_numpy(op: str) -> None:
    model = _arg_model(op, np.float32, [3, 4], [{"axis": 1}, {"axis": 0}])
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    x[1, 2] = np.nan
    x[2, 0] = np.nan
    got = sofie_root.compile(model).infer(x)
    fn = np.argmax if op == "ArgMax" else np.argmin
    np.testing.assert_array_equal(got[0], fn(x, axis=1)[:, None])
    np.testing.assert_array_equal(got[1], fn(x, axis=0)[None, :])


# -- Softmax, LogSoftmax, Hardmax -------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family_axes(op: str, opset: int) -> None:
    """Every axis and the default: 2-D coercion before opset 13, a single axis since."""
    variants = [{"axis": 0}, {"axis": 1}, {"axis": 2}, {"axis": -1}, {"axis": -3}, {}]
    nodes = [helper.make_node(op, ["x"], [f"y{k}"], **attrs) for k, attrs in enumerate(variants)]
    outs = [value_info(f"y{k}", np.float32, None) for k in range(len(variants))]
    model = make_model(nodes, [value_info("x", np.float32, ["N", 4, 5])], outs, opset=opset)
    if op == "Hardmax":  # ties: the first maximum wins
        _run_two_batches(model, lambda n: RNG.integers(0, 4, (n, 4, 5)).astype(np.float32))
    else:
        _run_two_batches(model, lambda n: (RNG.standard_normal((n, 4, 5)) * 3).astype(np.float32))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_large_values_float64(op: str) -> None:
    variants = [{"axis": 1}, {"axis": -1}, {"axis": 0}]
    nodes = [helper.make_node(op, ["x"], [f"y{k}"], **attrs) for k, attrs in enumerate(variants)]
    outs = [value_info(f"y{k}", np.float64, None) for k in range(len(variants))]
    model = make_model(nodes, [value_info("x", np.float64, [3, 6, 2])], outs, opset=13)
    x = RNG.standard_normal((3, 6, 2)) * 1000 + 1e4
    assert_matches_ort(model, x, rtol=1e-10, atol=1e-10)
    model32 = make_model([helper.make_node(op, ["x"], ["y"], axis=-1)], [value_info("x", np.float32, [2, 4])],
                         [value_info("y", np.float32, None)], opset=13)
    assert_matches_ort(model32, np.array([[1000, 1001, 1002, 999], [-1e4, 0, 1e4, 3]], np.float32), atol=1e-5)


def test_softmax_rank1_and_opset1() -> None:
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=0), helper.make_node("LogSoftmax", ["x"], ["z"])]
    model = make_model(nodes, [value_info("x", np.float32, [7])],
                       [value_info("y", np.float32, None), value_info("z", np.float32, None)], opset=13)
    assert_matches_ort(model, RNG.standard_normal(7).astype(np.float32))
    model = make_model([helper.make_node("Softmax", ["x"], ["y"])], [value_info("x", np.float32, [2, 3, 4])],
                       [value_info("y", np.float32, None)], opset=7)
    assert_matches_ort(model, RNG.standard_normal((2, 3, 4)).astype(np.float32))


# -- TopK -------------------------------------------------------------------------------------

def _topk_model(dtype, shape, variants, opset):
    """variants: (k, attrs); K as an attribute before opset 10, an initializer input after."""
    nodes, outs, inits = [], [], {}
    for n, (k, attrs) in enumerate(variants):
        if opset < 10:
            nodes.append(helper.make_node("TopK", ["x"], [f"v{n}", f"i{n}"], k=k, **attrs))
        else:
            inits[f"k{n}"] = np.array([k], np.int64)
            nodes.append(helper.make_node("TopK", ["x", f"k{n}"], [f"v{n}", f"i{n}"], **attrs))
        outs += [value_info(f"v{n}", dtype, None), value_info(f"i{n}", np.int64, None)]
    return make_model(nodes, [value_info("x", dtype, shape)], outs, inits, opset=opset)


@pytest.mark.parametrize("opset", [9, 10, 11])
def test_topk_axes_symbolic_batch(opset: int) -> None:
    variants = [(2, {}), (5, {"axis": -1}), (1, {"axis": 1}), (3, {"axis": 1}), (6, {"axis": 2})]
    if opset >= 11:
        variants += [(3, {"axis": 2, "largest": 0}), (2, {"axis": 1, "largest": 0, "sorted": 1}), (0, {"axis": 2})]
    model = _topk_model(np.float32, ["N", 4, 6], variants, opset)
    _run_two_batches(model, lambda n: RNG.standard_normal((n, 4, 6)).astype(np.float32))


def test_topk_batch_axis() -> None:
    model = _topk_model(np.float32, ["N", 3], [(1, {"axis": 0}), (1, {"axis": 0, "largest": 0})], 11)
    _run_two_batches(model, lambda n: RNG.standard_normal((n, 3)).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint8, np.float64])
def test_topk_ties_lower_index_first(dtype) -> None:
    variants = [(4, {"axis": -1}), (4, {"axis": -1, "largest": 0}), (2, {"axis": 0}), (3, {"axis": 0, "largest": 0})]
    model = _topk_model(dtype, [5, 7], variants, 11)
    assert_matches_ort(model, RNG.integers(0, 3, (5, 7)).astype(dtype))


def test_topk_unsorted_same_set() -> None:
    model = _topk_model(np.float32, [3, 8], [(3, {"axis": 1, "sorted": 0}), (3, {"axis": 1, "largest": 0, "sorted": 0})],
                        11)
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    got = sofie_root.compile(model).infer(x)
    order = np.argsort(-x, axis=1, kind="stable")
    np.testing.assert_array_equal(np.sort(got[1], axis=1), np.sort(order[:, :3], axis=1))
    np.testing.assert_array_equal(np.sort(got[3], axis=1), np.sort(np.argsort(x, axis=1, kind="stable")[:, :3], axis=1))


def test_topk_k_too_large() -> None:
    model = _topk_model(np.float32, [3, 4], [(5, {"axis": 1})], 11)
    with pytest.raises(SofieError):
        sofie_root.compile(model)


# -- CumSum -----------------------------------------------------------------------------------

def _cumsum_model(dtype, shape, variants, axis_dtype=np.int64):
    nodes, outs, inits = [], [], {}
    for n, (axis, attrs) in enumerate(variants):
        inits[f"a{n}"] = np.array(axis, axis_dtype)
        nodes.append(helper.make_node("CumSum", ["x", f"a{n}"], [f"y{n}"], **attrs))
        outs.append(value_info(f"y{n}", dtype, None))
    return make_model(nodes, [value_info("x", dtype, shape)], outs, inits, opset=14)


CUMSUM_VARIANTS = [(0, {}), (1, {}), (2, {}), (-1, {}), (1, {"exclusive": 1}), (1, {"reverse": 1}),
                   (2, {"exclusive": 1, "reverse": 1}), (0, {"reverse": 1}), (-2, {"exclusive": 1})]


def test_cumsum_symbolic_batch() -> None:
    model = _cumsum_model(np.float32, ["N", 3, 4], CUMSUM_VARIANTS)
    _run_two_batches(model, lambda n: RNG.standard_normal((n, 3, 4)).astype(np.float32), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64])
@pytest.mark.parametrize("axis_dtype", [np.int32, np.int64])
def test_cumsum_dtypes(dtype, axis_dtype) -> None:
    variants = [(1, {}), (0, {"exclusive": 1, "reverse": 1}), (-1, {"reverse": 1}), (2, {"exclusive": 1})]
    model = _cumsum_model(dtype, [2, 3, 4], variants, axis_dtype)
    assert_matches_ort(model, RNG.integers(-9, 9, (2, 3, 4)).astype(dtype))


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("inner", [8, 9, 33, 67])
def test_cumulative_float_columns_in_vector_lanes(op: str, inner: int) -> None:
    """Float scans along a middle axis of at least 8 columns (sofie_rt::rows::scan_cols: running
    totals of 32 and of 8 columns in vector registers, the last columns one by one), every
    reverse/exclusive combination, with NaN and infinities, bit for bit against numpy's
    sequential accumulation in float32."""
    variants = [(1, {}), (1, {"exclusive": 1}), (1, {"reverse": 1}), (1, {"exclusive": 1, "reverse": 1})]
    nodes, outs, inits = [], [], {}
    for n, (axis, attrs) in enumerate(variants):
        inits[f"a{n}"] = np.array(axis, np.int64)
        nodes.append(helper.make_node(op, ["x", f"a{n}"], [f"y{n}"], **attrs))
        outs.append(value_info(f"y{n}", np.float32, None))
    model = make_model(nodes, [value_info("x", np.float32, ["N", 7, inner])], outs, inits, opset=26)
    m = sofie_root.compile(model)
    acc = np.multiply.accumulate if op == "CumProd" else np.add.accumulate
    one = np.float32(1 if op == "CumProd" else 0)
    for n in (1, 3):
        x = RNG.uniform(0.5, 1.5, (n, 7, inner)).astype(np.float32)
        x[0, 2, 0], x[0, 4, inner - 1], x[-1, 0, inner // 2] = np.nan, np.inf, -np.inf
        got = m.infer(x)
        for g, (_, attrs) in zip(got, variants):
            xs = x[:, ::-1] if attrs.get("reverse") else x
            ref = acc(xs, axis=1, dtype=np.float32)
            if attrs.get("exclusive"):
                ref = np.concatenate([np.full_like(ref[:, :1], one), ref[:, :-1]], axis=1)
            if attrs.get("reverse"):
                ref = ref[:, ::-1]
            np.testing.assert_array_equal(g, ref)


def test_cumsum_rank1_scalar_and_1elem_axis() -> None:
    model = _cumsum_model(np.float32, [6], [(0, {}), (-1, {"exclusive": 1}), (0, {"reverse": 1})])
    assert_matches_ort(model, RNG.standard_normal(6).astype(np.float32))
    nodes = [helper.make_node("CumSum", ["x", "a"], ["y"], reverse=1)]
    model = make_model(nodes, [value_info("x", np.float32, [2, 5])], [value_info("y", np.float32, None)],
                       {"a": np.array([1], np.int32)}, opset=14)
    assert_matches_ort(model, RNG.standard_normal((2, 5)).astype(np.float32))


def test_other_int_dtypes_against_reference() -> None:
    """Element types onnxruntime has no kernel for: ArgMax/TopK on int16/uint64, CumSum on uint32/uint64."""
    for dtype in (np.int16, np.uint64):
        x = RNG.integers(0, 5, (3, 6)).astype(dtype)
        _assert_matches_reference(_arg_model("ArgMax", dtype, [3, 6], [{"axis": 1}, {"axis": 0, "keepdims": 0}]), x)
        _assert_matches_reference(_arg_model("ArgMin", dtype, [3, 6], [{"axis": 1, "select_last_index": 1}]), x)
        _assert_matches_reference(_topk_model(dtype, [3, 6], [(3, {"axis": 1}), (2, {"axis": 0, "largest": 0})], 11), x)
    for dtype in (np.uint32, np.uint64):
        x = RNG.integers(0, 9, (3, 4)).astype(dtype)
        _assert_matches_reference(_cumsum_model(dtype, [3, 4], [(1, {}), (0, {"exclusive": 1, "reverse": 1})]), x)
