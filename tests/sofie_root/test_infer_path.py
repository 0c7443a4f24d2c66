"""``Model.infer``'s call path: the quick path (checks cached per input signature), preallocated
outputs (``out=``) and the input casting rules, against numpy and onnxruntime. The cost of the
call path is measured by benchmarks/call_path.py, not here."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import make_model, run_ort, value_info

F = np.float32
RNG = np.random.default_rng(11)
W = RNG.standard_normal((6, 4)).astype(F)


def _one_io():
    """x [N, 6] -> tanh(x @ W) [N, 4]."""
    return make_model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])],
                      [value_info("x", F, ("N", 6))], [value_info("y", F, None)], {"w": W})


def _two_io():
    """a [N, 6], b [N, 4] -> (a @ W + b [N, 4], sum of a over axis 1 [N, 1])."""
    return make_model([helper.make_node("MatMul", ["a", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"]),
                       helper.make_node("ReduceSum", ["a", "axes"], ["s"], keepdims=1)],
                      [value_info("a", F, ("N", 6)), value_info("b", F, ("N", 4))],
                      [value_info("y", F, None), value_info("s", F, None)],
                      {"w": W, "axes": np.array([1], np.int64)})


@pytest.fixture(scope="module")
def one():
    return sofie_root.compile(_one_io())


@pytest.fixture(scope="module")
def two():
    return sofie_root.compile(_two_io())


def test_quick_path_matches_onnxruntime_across_batch_sizes(one) -> None:
    proto = _one_io()
    for n in (1, 3, 1, 17, 3, 256, 1):  # revisited signatures come from the cache
        x = RNG.standard_normal((n, 6)).astype(F)
        (y,) = one.infer(x)
        assert y.shape == (n, 4) and y.dtype == F
        np.testing.assert_allclose(y, run_ort(proto, x)[0], rtol=1e-5, atol=1e-6)
    assert ((1, 6),) in one._signatures, "batch-1 calls are remembered"


def test_checks_still_apply_after_a_signature_is_cached(one, two) -> None:
    one.infer(np.zeros((2, 6), F))
    with pytest.raises(sofie_root.InputError, match=r"'x' expects shape \[N, 6\].*\[2, 5\]"):
        one.infer(np.zeros((2, 5), F))
    two.infer(np.zeros((2, 6), F), np.zeros((2, 4), F))
    with pytest.raises(sofie_root.InputError, match=r"'b'.*N.*3.*2"):
        two.infer(np.zeros((2, 6), F), np.zeros((3, 4), F))
    with pytest.raises(sofie_root.InputError, match="takes 2 input"):
        two.infer(np.zeros((2, 6), F))


def test_non_contiguous_and_other_float_inputs_are_converted(one) -> None:
    base = RNG.standard_normal((5, 12)).astype(F)
    view = base[:, ::2]  # [5, 6], not contiguous
    assert not view.flags.c_contiguous
    expected = np.tanh(np.ascontiguousarray(view).astype(np.float64) @ W.astype(np.float64))
    np.testing.assert_allclose(one.infer(view)[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.infer(view.astype(np.float64))[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.infer(view.astype(">f4"))[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.infer(view.tolist())[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_arrays_for_a_float_input_are_an_error(one, dtype) -> None:
    with pytest.raises(sofie_root.InputError, match=r"input 'x' expects float32, got an array of .*astype"):
        one.infer(np.ones((2, 6), dtype))


def test_integer_inputs_keep_their_same_kind_casts() -> None:
    """int32 indices for an int64 input are widened (same kind); float ones are refused."""
    proto = make_model([helper.make_node("Gather", ["t", "i"], ["y"], axis=0)],
                       [value_info("i", np.int64, ("N",))], [value_info("y", F, None)],
                       {"t": np.arange(10, dtype=F)})
    m = sofie_root.compile(proto)
    np.testing.assert_array_equal(m.infer(np.array([3, 1], np.int32))[0], [3.0, 1.0])
    with pytest.raises(sofie_root.InputError, match="'i' expects int64"):
        m.infer(np.array([3.0, 1.0]))


def test_preallocated_outputs(one, two) -> None:
    x = RNG.standard_normal((3, 6)).astype(F)
    y = np.full((3, 4), np.nan, F)
    res = one.infer(x, out=[y])
    assert res[0] is y
    np.testing.assert_allclose(y, one.infer(x)[0], rtol=0, atol=0)
    a, b = RNG.standard_normal((2, 6)).astype(F), RNG.standard_normal((2, 4)).astype(F)
    outs = (np.empty((2, 4), F), np.empty((2, 1), F))
    res = two.infer(a, b, out=outs)
    assert res[0] is outs[0] and res[1] is outs[1]
    ref = run_ort(_two_io(), a, b)
    np.testing.assert_allclose(outs[0], ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[1], ref[1], rtol=1e-5, atol=1e-6)
    # by name, and through the general path (a float64 input is cast first)
    y2 = np.empty((2, 4), F)
    two.infer(a=a.astype(np.float64), b=b, out=[y2, np.empty((2, 1), F)])
    np.testing.assert_allclose(y2, ref[0], rtol=1e-5, atol=1e-6)


def test_preallocated_output_errors(one) -> None:
    x = RNG.standard_normal((3, 6)).astype(F)
    cases = [([np.empty((2, 4), F)], r"out\[0\] \(output 'y'\).*shape \[3, 4\]"),
             ([np.empty((3, 4), np.float64)], r"out\[0\].*float32"),
             ([np.empty((3, 8), F)[:, ::2]], "C-contiguous"),
             ([], "1 output"),
             (np.empty((3, 4), F), "list of arrays")]
    ro = np.empty((3, 4), F)
    ro.flags.writeable = False
    cases.append(([ro], "writeable"))
    for out, msg in cases:
        with pytest.raises(sofie_root.InputError, match=msg):
            one.infer(x, out=out)
    # an output that overlaps an input would be read after being written
    z = RNG.standard_normal((3, 6)).astype(F)
    with pytest.raises(sofie_root.InputError, match="overlaps"):
        one.infer(z, out=[z.reshape(-1)[:12].reshape(3, 4)])
    shared = RNG.standard_normal(18 + 12).astype(F)
    with pytest.raises(sofie_root.InputError, match="overlaps"):
        one.infer(shared[:18].reshape(3, 6), out=[shared[6:18].reshape(3, 4)])


def test_empty_batch_and_threads(one) -> None:
    assert one.infer(np.zeros((0, 6), F))[0].shape == (0, 4)
    xs = [RNG.standard_normal((n, 6)).astype(F) for n in (1, 2, 7, 1)]
    expected = [one.infer(x)[0] for x in xs]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                for x, e in zip(xs, expected):
                    np.testing.assert_array_equal(one.infer(x)[0], e)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_signature_cache_is_bounded(one) -> None:
    for n in range(1, one.MAX_SIGNATURES + 10):
        one.infer(np.ones((n, 6), F))
    assert 0 < len(one._signatures) <= one.MAX_SIGNATURES
    np.testing.assert_allclose(one.infer(np.ones((5, 6), F))[0], np.tanh(np.ones((5, 6)) @ W), rtol=1e-5)


def test_an_input_called_out() -> None:
    proto = make_model([helper.make_node("Neg", ["out"], ["y"])], [value_info("out", F, ("N", 3))],
                       [value_info("y", F, None)])
    m = sofie_root.compile(proto)
    x = np.arange(6, dtype=F).reshape(2, 3)
    np.testing.assert_array_equal(m.infer(out=x)[0], -x)
    np.testing.assert_array_equal(m.infer(x)[0], -x)


def _gather_model():
    """y = x[:, i] (Gather axis 1): an out-of-range index makes the generated run fail."""
    return make_model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)],
                      [value_info("x", F, ("N", 4)), value_info("i", np.int64, (2,))], [value_info("y", F, None)],
                      opset=13)


@pytest.fixture(params=["pycall", "cppyy"])
def quick_way(request, monkeypatch):
    """Models compiled with the C API quick path (jit/pycall.py) or without it (the cppyy caller,
    as on a machine without the CPython headers)."""
    if request.param == "cppyy":
        monkeypatch.setattr(sofie_root.jit.pycall, "make_plan", lambda *a, **k: None)
    return request.param


def test_both_quick_ways_check_and_compute_the_same(quick_way) -> None:
    m = sofie_root.compile(_gather_model())
    assert (m._pyplan is not None) == (quick_way == "pycall") and (m._fast is None) == (quick_way == "pycall")
    proto = _gather_model()
    x = RNG.standard_normal((3, 4)).astype(F)
    i = np.array([3, -1])
    for _ in range(3):  # the first call of a signature takes the general path, the next ones the quick one
        np.testing.assert_array_equal(m.infer(x, i)[0], run_ort(proto, x, i)[0])
        np.testing.assert_array_equal(m(x, i), run_ort(proto, x, i)[0])
    # an error of the generated code on the quick path comes back as a SofieError, and the model stays usable
    with pytest.raises(sofie_root.SofieError, match=r"inference failed.*Gather.*out of range"):
        m.infer(x, np.array([0, 9]))
    np.testing.assert_array_equal(m.infer(x, np.array([1, 2]))[0], x[:, [1, 2]])
    # a cached signature with the wrong dtype, byte order, alignment or a view still gets the general treatment
    with pytest.raises(sofie_root.InputError, match="'x' expects float32"):
        m.infer(x.astype(np.int32), i)
    np.testing.assert_array_equal(m.infer(x.astype(">f4"), i.astype(">i8"))[0], x[:, [3, 3]])
    raw = np.zeros(x.nbytes + 1, np.uint8)[1:].view(F).reshape(3, 4)  # misaligned
    raw[...] = x
    assert not raw.flags.aligned
    np.testing.assert_array_equal(m.infer(raw, i)[0], x[:, [3, 3]])
    np.testing.assert_array_equal(m.infer(np.asfortranarray(np.tile(x, (1, 1))), i)[0], x[:, [3, 3]])
    with pytest.raises(sofie_root.InputError, match="takes 2 input"):
        m.infer(x)
    with pytest.raises(sofie_root.InputError, match=r"'x' expects shape \[N, 4\]"):
        m.infer(x[:, :3].copy(), i)
    # preallocated outputs: owned, a view, the wrong shape, an input itself
    y = np.empty((3, 2), F)
    assert m.infer(x, i, out=[y])[0] is y and np.array_equal(y, x[:, [3, 3]])
    big = np.empty((6, 2), F)
    assert m.infer(x, i, out=(big[:3],))[0].base is big and np.array_equal(big[:3], x[:, [3, 3]])
    with pytest.raises(sofie_root.InputError, match=r"out\[0\].*shape \[3, 2\]"):
        m.infer(x, i, out=[np.empty((3, 3), F)])


def test_an_output_into_its_own_input_is_refused(quick_way) -> None:
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])], [value_info("x", F, ("N", 5))],
                       [value_info("y", F, None)])
    m = sofie_root.compile(proto)
    x = RNG.standard_normal((2, 5)).astype(F)
    m.infer(x)
    m.infer(x)
    with pytest.raises(sofie_root.InputError, match="overlaps"):
        m.infer(x, out=[x])
    np.testing.assert_array_equal(m.infer(x)[0], np.maximum(x, 0))


def test_bool_and_8_bit_tensors_take_the_quick_path() -> None:
    proto = make_model([helper.make_node("Not", ["b"], ["nb"]), helper.make_node("Neg", ["q"], ["nq"])],
                       [value_info("b", np.bool_, ("N", 3)), value_info("q", np.int8, ("N", 3))],
                       [value_info("nb", np.bool_, None), value_info("nq", np.int8, None)])
    m = sofie_root.compile(proto)
    b = RNG.random((4, 3)) > 0.5
    q = RNG.integers(-100, 100, (4, 3), dtype=np.int8)
    for _ in range(3):
        nb, nq = m.infer(b, q)
        np.testing.assert_array_equal(nb, ~b)
        np.testing.assert_array_equal(nq, -q)


def test_threads_mixing_the_quick_and_the_general_path(quick_way) -> None:
    """The quick path (exact float32) and the general one (float64, cast first) share the Session:
    they must take turns (one mutex, or one lock, for both)."""
    m = sofie_root.compile(_one_io())
    xs = [RNG.standard_normal((n, 6)).astype(F) for n in (1, 5, 64)]
    expected = [np.tanh(x.astype(np.float64) @ W.astype(np.float64)) for x in xs]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for _ in range(40):
                for x, e in zip(xs, expected):
                    got = m.infer(x if k % 2 else x.astype(np.float64))[0]
                    np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-6)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def _data_sized_model():
    """x [N, 4], c [N] -> NonZero(x > 0) [2, nz], Compress(x, c) [nc, 4], Unique(x) (values,
    inverse, counts: [u], [4N], [u]) and Relu(x) [N, 4]: outputs sized by the data next to a fixed one."""
    return make_model([helper.make_node("Greater", ["x", "zero"], ["g"]), helper.make_node("NonZero", ["g"], ["nz"]),
                       helper.make_node("Compress", ["x", "c"], ["cx"], axis=0),
                       helper.make_node("Unique", ["x"], ["u", "", "inv", "cnt"], sorted=1),
                       helper.make_node("Relu", ["x"], ["r"])],
                      [value_info("x", F, ("N", 4)), value_info("c", np.bool_, ("N",))],
                      [value_info("nz", np.int64, None), value_info("cx", F, None), value_info("u", F, None),
                       value_info("inv", np.int64, None), value_info("cnt", np.int64, None),
                       value_info("r", F, None)],
                      {"zero": np.array(0, F)}, opset=13)


def test_outputs_sized_by_the_data(quick_way) -> None:
    """NonZero, Compress and Unique outputs are allocated at their bound and cut to what the run
    found, on the quick path as on the general one: every fill (full, more or less than half the
    bound, empty), fresh C-contiguous arrays each call, out= refused."""
    proto = _data_sized_model()
    m = sofie_root.compile(proto)
    assert (m._pyplan is not None) == (quick_way == "pycall")
    kept = []
    for n in (3, 1, 3, 8, 3):
        for frac in (1.0, 0.75, 0.2, 0.0):  # share of positive x and of true c
            x = np.where(RNG.random((n, 4)) < frac, RNG.integers(1, 4, (n, 4)), -RNG.integers(0, 3, (n, 4))).astype(F)
            c = RNG.random(n) < frac
            for _ in range(3):  # the first call of a signature takes the general path, the next ones the quick one
                got = m.infer(x, c)
                want = run_ort(proto, x, c)
                for g, w in zip(got, want):
                    assert g.shape == w.shape and g.dtype == w.dtype and g.flags.c_contiguous and g.flags.writeable
                    np.testing.assert_array_equal(g, w)
                kept.append((got, [w.copy() for w in want]))
        if quick_way == "pycall":  # the calls above did take the quick builtin
            assert ((n, 4), (n,)) in m._signatures and m._quick((x, c), None) is not None
    for got, want in kept:  # no call wrote into the arrays of another
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    with pytest.raises(sofie_root.InputError, match="sized by the data"):
        m.infer(x, c, out=[np.empty(w.shape, w.dtype) for w in want])
    single = m(x[:1].copy(), c[:1].copy())
    assert isinstance(single, list) and len(single) == 6


def test_run_time_k_reuses_its_variant_with_or_without_conversions() -> None:
    """TopK with k a graph input (a model specialised per value of k): a call whose k is an exact
    int64 array finds its variant without conversions; other dtypes, byte orders and views are
    converted first and reach the same variant; both agree with onnxruntime."""
    proto = make_model([helper.make_node("TopK", ["x", "k"], ["v", "i"])],
                       [value_info("x", F, ("N", 16)), value_info("k", np.int64, (1,))],
                       [value_info("v", F, None), value_info("i", np.int64, None)])
    m = sofie_root.compile(proto)
    x = RNG.standard_normal((3, 16)).astype(F)
    for k in (5, 3, 5, 16, 3):
        for kk in (np.array([k]), np.array([k], np.int32), np.array([k], ">i8"), np.array([k, 0])[:1],
                   [k], np.array([k])):
            for _ in range(2):
                got = m.infer(x, kk)
                want = run_ort(proto, x, np.array([k]))
                for g, w in zip(got, want):
                    assert g.shape == w.shape and g.dtype == w.dtype
                    np.testing.assert_array_equal(g, w)
    assert len(m._variants) == 3 and m._key_plan is not None, "one variant per value of k, whatever its array"
    v = np.empty((3, 5), F)
    i = np.empty((3, 5), np.int64)
    assert m.infer(x, np.array([5]), out=[v, i])[0] is v and np.array_equal(i, run_ort(proto, x, np.array([5]))[1])
    with pytest.raises(sofie_root.InputError, match=r"'x' expects shape \[N, 16\]"):
        m.infer(x[:, :8].copy(), np.array([5]))
    with pytest.raises(sofie_root.InputError, match="takes 2 input"):
        m.infer(x)


def test_threads_on_outputs_sized_by_the_data(quick_way) -> None:
    """Quick (float32) and general (float64, cast first) calls of a model with outputs sized by
    the data, from several threads: each call gets its own sizes and arrays."""
    proto = _data_sized_model()
    m = sofie_root.compile(proto)
    cases = []
    for n, frac in ((1, 1.0), (4, 0.6), (4, 0.1), (9, 0.0)):
        x = np.where(RNG.random((n, 4)) < frac, RNG.integers(1, 4, (n, 4)), -RNG.integers(0, 3, (n, 4))).astype(F)
        c = RNG.random(n) < frac
        cases.append((x, c, run_ort(proto, x, c)))
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for _ in range(30):
                for x, c, want in cases:
                    got = m.infer(x if k % 2 else x.astype(np.float64), c)
                    for g, w in zip(got, want):
                        assert g.shape == w.shape
                        np.testing.assert_array_equal(g, w)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_signatures_added_while_another_thread_runs(quick_way) -> None:
    """One thread calls a model with outputs sized by the data on a large input (a long `run`,
    with the GIL released) while another makes it learn new signatures, past the 64 after which
    they are all forgotten: the cut of the running call's outputs must not read the signature
    table the other thread reallocated or cleared (it did, and crashed in the full suite)."""
    proto = _data_sized_model()
    m = sofie_root.compile(proto)
    x = np.where(RNG.random((4000, 4)) < 0.5, RNG.integers(1, 50, (4000, 4)), -1).astype(F)
    c = RNG.random(4000) < 0.3
    want = run_ort(proto, x, c)
    stop = threading.Event()
    errors: list[BaseException] = []

    def learner() -> None:
        try:
            n = 0
            while not stop.is_set():
                n = n % (3 * m.MAX_SIGNATURES) + 1
                m.infer(np.ones((n, 4), F), np.ones(n, bool))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=learner)
    t.start()
    try:
        for _ in range(150):
            got = m.infer(x, c)
            for g, w in zip(got, want):
                assert g.shape == w.shape
                np.testing.assert_array_equal(g, w)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[0]
