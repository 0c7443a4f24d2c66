"""The vectorisable math layer (``sofie_rt::vm`` in runtime.hxx) against numpy float64.

The functions are compiled twice: by cling (through a small declared harness, as generated models
use them) and by the system compiler with the native backend's flags, where the compiler's own
report must say every harness loop was vectorised. Inputs are a sweep of float32 bit patterns
over the whole range (both signs, subnormals, the overflow and underflow edges) plus the special
values; errors are measured in units in the last place of the correctly rounded float32 result.
The harness runs with the caller's floating-point mode (no flush-to-zero), so subnormal results
are compared too; a result below the smallest normal may be anything within that distance of the
exact value (0 included), which is what flush-to-zero gives inside a model.
"""

from __future__ import annotations

import math
import re
import subprocess

import numpy as np
import pytest

from sofie_root.jit import cling, native

FLT_MIN = 1.17549435e-38

#: documented maximum error in ulp (docs/conformance.md, "Numerics"); the sweep must stay within it
BOUNDS = {"exp": 1.0, "expm1": 2.0, "log": 1.0, "log1p": 2.0, "tanh": 5.5, "sigmoid": 3.3,
          "softplus": 2.0, "erf": 2.5, "sqrt": 0.5, "asin": 2.5, "acos": 1.5, "atan": 3.0, "sinh": 2.0,
          "cosh": 2.0, "asinh": 2.0, "acosh": 1.5, "atanh": 2.0}
#: numpy's names of the functions whose reference is a plain numpy ufunc
NUMPY = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "asinh": "arcsinh", "acosh": "arccosh",
         "atanh": "arctanh"}
UNARY = [*BOUNDS, "gelu"]

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-40, -1e-40, FLT_MIN,
                     -FLT_MIN, 3.4028235e38, -3.4028235e38, 88.72283, 88.72284, 89.0, -87.33654, -87.34,
                     -103.97, -103.98, -104.0, 0.5, -0.5, 0.7, -0.7, 0.625, -0.625, 9.0, -9.0, 1.0, -1.0,
                     -1.0 + 2**-24, 1e-8, -1e-8, 20.0, -20.0], np.float32)


def sweep(step: int = 65537) -> np.ndarray:
    """Every step-th float32 bit pattern (both signs, all exponents) and the special values."""
    u = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([u.view(np.float32), SPECIALS])


def _erfc64(d: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erfc, 1, 1)(d).astype(np.float64)


def reference(name: str, d: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-d))
    if name == "softplus":
        return np.logaddexp(0.0, d)
    if name == "erf":
        return np.frompyfunc(math.erf, 1, 1)(d).astype(np.float64)
    if name == "gelu":
        return 0.5 * d * _erfc64(-d / math.sqrt(2.0))
    return getattr(np, NUMPY.get(name, name))(d)


def ulp_errors(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|y - ref| in ulps of the float32 rounding of ref; NaN and infinity must match exactly."""
    r32 = ref.astype(np.float32)
    nan_bad = np.isnan(y) != np.isnan(r32)
    assert not nan_bad.any(), f"NaN mismatch at x={np.flatnonzero(nan_bad)[:5]}: {y[nan_bad][:5]} vs {r32[nan_bad][:5]}"
    inf = np.isinf(r32) | np.isinf(y)
    assert (y[inf] == r32[inf]).all(), f"infinity mismatch: {y[inf][y[inf] != r32[inf]][:5]}"
    fin = np.isfinite(r32) & np.isfinite(y)
    e = np.zeros_like(ref)
    diff = np.abs(y[fin].astype(np.float64) - ref[fin])
    e[fin] = diff / np.spacing(np.abs(r32[fin])).astype(np.float64)
    e[fin & (np.abs(ref) < FLT_MIN)] = 0.0
    sub = fin & (np.abs(ref) < FLT_MIN)
    assert (np.abs(y[sub].astype(np.float64) - ref[sub]) <= FLT_MIN).all()
    return e


HARNESS = "\n".join(
    [f"inline void sofie_vm_test_{n}(const float *x, float *y, long n) "
     f"{{ for (long i = 0; i < n; ++i) y[i] = sofie_rt::vm::{n}(x[i]); }}" for n in UNARY]
    + ["inline void sofie_vm_test_pow(const float *x, const float *b, float *y, long n) "
       "{ for (long i = 0; i < n; ++i) y[i] = sofie_rt::vm::pow(x[i], b[i]); }"])


@pytest.fixture(autouse=True)
def _quiet_numpy():
    # the sweep holds NaN payloads and infinities on purpose
    with np.errstate(all="ignore"):
        yield


@pytest.fixture(scope="module")
def cling_fns():
    ROOT = cling.root()
    if not hasattr(ROOT, "sofie_vm_test_exp"):
        assert ROOT.gInterpreter.Declare(cling.optimized(HARNESS))
    return {n: getattr(ROOT, f"sofie_vm_test_{n}") for n in [*UNARY, "pow"]}


def _call(fn, *args: np.ndarray) -> np.ndarray:
    args = [np.ascontiguousarray(a, dtype=np.float32) for a in args]
    y = np.empty_like(args[0])
    fn(*args, y, len(y))
    return y


@pytest.mark.parametrize("name", UNARY)
def test_unary_over_the_float_range(cling_fns, name) -> None:
    x = sweep()
    y = _call(cling_fns[name], x)
    e = ulp_errors(y, reference(name, x.astype(np.float64)))
    if name == "gelu":
        # relative accuracy of the erfc form: the rounding of z^2 inside exp grows with z^2
        d = x.astype(np.float64)
        assert e[d >= 0].max() <= 7.0
        assert e[(d < 0) & (d > -5)].max() <= 24.0
        assert e.max() <= 300.0
    else:
        assert e.max() <= BOUNDS[name], f"{name}: {e.max():.2f} ulp at x={x[np.argmax(e)]!r}"
    # signed zeros where the function is odd at 0, exact values at the edges
    z = _call(cling_fns[name], np.array([0.0, -0.0], np.float32))
    if name in ("expm1", "log1p", "tanh", "erf", "sqrt", "asin", "atan", "sinh", "asinh", "atanh"):
        assert np.signbit(z).tolist() == [False, True]


#: documented maximum errors of Sin, Cos and Tan on float32 tensors (sofie_rt::vm::map_trig)
TRIG_BOUNDS = {"sin": 1.5, "cos": 1.6, "tan": 2.5}
TRIG_HARNESS = "\n".join(f"inline void sofie_vm_test_map_{n}(const float *x, float *y, long n) "
                         f"{{ sofie_rt::vm::map_trig<{k}>(x, y, n); }}" for k, n in enumerate(TRIG_BOUNDS))


@pytest.mark.parametrize("name", list(TRIG_BOUNDS))
def test_trig_over_the_float_range(name) -> None:
    """The vectorised reduction below 2^28, the library above (huge, inf, NaN), also in place."""
    ROOT = cling.root()
    if not hasattr(ROOT, "sofie_vm_test_map_sin"):
        assert ROOT.gInterpreter.Declare(cling.optimized(TRIG_HARNESS))
    fn = getattr(ROOT, f"sofie_vm_test_map_{name}")
    x = np.concatenate([sweep(), np.float32([2**28, -2**28, 2**28 - 16, 1e10, np.pi / 2, np.pi, 1e-30])])
    y = _call(fn, x)
    e = ulp_errors(y, getattr(np, name)(x.astype(np.float64)))
    assert e.max() <= TRIG_BOUNDS[name], f"{name}: {e.max():.2f} ulp at x={x[np.argmax(e)]!r}"
    inplace = x.copy()
    fn(inplace, inplace, len(inplace))
    assert np.array_equal(inplace, y, equal_nan=True)
    z = _call(fn, np.float32([0.0, -0.0]))
    assert np.signbit(z).tolist() == ([False, False] if name == "cos" else [False, True])
    assert np.isnan(_call(fn, np.float32([np.inf, -np.inf, np.nan]))).all()


def test_inverse_and_hyperbolic_edges(cling_fns) -> None:
    """The values C99 Annex F fixes exactly, and the domain edges."""
    def f(name, *xs):
        return _call(cling_fns[name], np.array(xs, np.float32))

    half_pi = np.float32(np.pi / 2)
    assert f("atan", np.inf, -np.inf).tolist() == [half_pi, -half_pi]
    assert f("asin", 1.0, -1.0).tolist() == [half_pi, -half_pi]
    assert f("acos", 1.0, -1.0, 0.0).tolist() == [0.0, np.float32(np.pi), half_pi]
    assert np.isnan(f("asin", 1.0000001, -1.0000001, np.inf, -np.inf)).all()
    assert np.isnan(f("acos", 1.0000001, -1.0000001, np.inf, -np.inf)).all()
    assert f("sinh", np.inf, -np.inf, 89.5, -89.5).tolist() == [np.inf, -np.inf, np.inf, -np.inf]
    assert f("cosh", np.inf, -np.inf, 89.5).tolist() == [np.inf] * 3
    assert np.isfinite(f("sinh", 89.41, -89.41)).all() and np.isfinite(f("cosh", 89.41)).all()
    assert f("asinh", np.inf, -np.inf).tolist() == [np.inf, -np.inf]
    assert f("acosh", 1.0, np.inf).tolist() == [0.0, np.inf]
    assert np.isnan(f("acosh", 0.999, 0.0, -1.0, -5.0, -np.inf)).all()
    assert f("atanh", 1.0, -1.0).tolist() == [np.inf, -np.inf]
    assert np.isnan(f("atanh", 1.0000001, -2.0, np.inf, -np.inf)).all()
    assert np.isnan(f("sqrt", -1.0, -np.inf, -1e-30)).all() and f("sqrt", np.inf)[0] == np.inf


def test_tanh_dense_and_edges(cling_fns) -> None:
    """tanh over every 7th float of [1e-3, 9.5] (the sweep takes few of them; the rational's
    error peaks near |x| = 7-8.9, where results lie just below 1), and its exact edges: +-1 at
    +-inf (1 + tanh(-inf) = 0 for Gelu's tanh form), -0 kept, |tanh| <= 1 + 2^-23."""
    lo, hi = np.float32(1e-3).view(np.int32), np.float32(9.5).view(np.int32)
    x = np.arange(lo, hi, 7, dtype=np.int32).view(np.float32)
    x = np.concatenate([x, -x])
    y = _call(cling_fns["tanh"], x)
    e = ulp_errors(y, np.tanh(x.astype(np.float64)))
    assert e.max() <= BOUNDS["tanh"], f"tanh: {e.max():.2f} ulp at x={x[np.argmax(e)]!r}"
    assert np.abs(y).max() <= 1 + 2**-23
    edges = _call(cling_fns["tanh"], np.float32([np.inf, -np.inf, 8.9, -8.9, 20.0, -1e30, -0.0, 1e-45]))
    assert edges[:6].tolist() == [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]
    assert np.signbit(edges[6]) and edges[6] == 0 and edges[7] == np.float32(1e-45)
    assert np.float32(1) + edges[1] == 0


def test_erf_dense_and_edges(cling_fns) -> None:
    """erf over every 5th float of [1e-3, 4.5] and its negatives (both branches and the switch at
    0.921875, the clamp at 3.93), and its exact values: +-1 at +-inf and beyond the clamp, -0 kept."""
    lo, hi = np.float32(1e-3).view(np.int32), np.float32(4.5).view(np.int32)
    x = np.arange(lo, hi, 5, dtype=np.int32).view(np.float32)
    x = np.concatenate([x, -x])
    e = ulp_errors(_call(cling_fns["erf"], x), reference("erf", x.astype(np.float64)))
    assert e.max() <= BOUNDS["erf"], f"erf: {e.max():.2f} ulp at x={x[np.argmax(e)]!r}"
    assert e[np.abs(x) >= 0.921875].max() <= 2.0
    y = _call(cling_fns["erf"], np.float32([np.inf, -np.inf, 3.93, -4.0, 1e30, -0.0, 1e-45]))
    assert y[:5].tolist() == [1.0, -1.0, 1.0, -1.0, 1.0]
    assert np.signbit(y[5]) and y[5] == 0 and y[6] == np.float32(1e-45)


def test_sigmoid_edges(cling_fns) -> None:
    """Exact 1 and 0 at the ends (0 from x = -88.38 down, where e^-x's scale factor is inf),
    0.5 at +-0, NaN kept, and relative accuracy of the tiny results above the subnormal range."""
    y = _call(cling_fns["sigmoid"], np.float32([np.inf, 100.0, -np.inf, -88.4, -100.0, -1e30, 0.0, -0.0, np.nan]))
    assert y[:8].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5] and np.isnan(y[8])
    x = np.linspace(-87.0, -20.0, 10001, dtype=np.float32)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert ulp_errors(_call(cling_fns["sigmoid"], x), ref).max() <= BOUNDS["sigmoid"]


def test_exp_edges(cling_fns) -> None:
    f = cling_fns["exp"]
    assert _call(f, np.array([-np.inf, -104.0, -200.0, -1e30], np.float32)).tolist() == [0.0] * 4
    assert _call(f, np.array([np.inf, 89.0, 1e30], np.float32)).tolist() == [np.inf] * 3
    assert _call(f, np.array([88.72283], np.float32))[0] == np.float32(np.exp(np.float64(np.float32(88.72283))))
    assert _call(cling_fns["log"], np.array([0.0, -0.0, -1.0, -np.inf, np.inf], np.float32)).tolist()[:2] == [-np.inf] * 2
    assert np.isnan(_call(cling_fns["log"], np.array([-1.0, -np.inf, -1e-45], np.float32))).all()
    assert _call(cling_fns["log1p"], np.array([-1.0], np.float32))[0] == -np.inf
    assert _call(cling_fns["gelu"], np.array([np.inf], np.float32))[0] == np.inf
    assert np.isnan(_call(cling_fns["gelu"], np.array([-np.inf], np.float32))[0])  # 0.5 * -inf * (1 + erf(-inf))


EXP_N_HARNESS = ("inline void sofie_vm_test_exp_n(const float *x, float *y, long n) "
                 "{ sofie_rt::vm::exp_n(x, y, n); }")


def test_exp_n_matches_exp_over_the_float_range(cling_fns) -> None:
    """The Exp node's array kernel (vscalefps with AVX-512, else the vm::exp loop): within exp's
    bound over the sweep, bit-identical to vm::exp wherever the result is normal, the edges, and
    every tail length of the 64-lane steps, in place too."""
    ROOT = cling.root()
    if not hasattr(ROOT, "sofie_vm_test_exp_n"):
        assert ROOT.gInterpreter.Declare(cling.optimized(EXP_N_HARNESS))
    exp_n = ROOT.sofie_vm_test_exp_n
    x = sweep()
    y = _call(exp_n, x)
    e = ulp_errors(y, np.exp(x.astype(np.float64)))
    assert e.max() <= BOUNDS["exp"], f"{e.max():.2f} ulp at x={x[np.argmax(e)]!r}"
    ref = _call(cling_fns["exp"], x)
    normal = ~(np.abs(ref) < FLT_MIN)
    assert np.array_equal(y[normal], ref[normal], equal_nan=True)
    nan_payloads = np.array([0x7FC000FF, 0xFFC000FE, 0x7F800001, 0xFF800001], np.uint32).view(np.float32)
    assert np.isnan(_call(exp_n, nan_payloads)).all()
    assert _call(exp_n, np.array([-np.inf, -104.0, -200.0, -1e30], np.float32)).tolist() == [0.0] * 4
    assert _call(exp_n, np.array([np.inf, 89.0, 88.72284, 1e30], np.float32)).tolist() == [np.inf] * 4
    rng = np.random.default_rng(3)
    for n in list(range(0, 70)) + [127, 128, 129, 1000]:
        v = (rng.standard_normal(n + 1) * 30).astype(np.float32)  # v[n]: past the end, never read
        want = _call(cling_fns["exp"], v)[:n]
        got = np.full(n + 1, -7.0, np.float32)  # got[n]: a guard value past the end
        normal = ~(want < FLT_MIN)  # below: subnormal or 0 (the harness runs without flush-to-zero)
        exp_n(v, got, n)
        assert np.array_equal(got[:n][normal], want[normal]) and got[n] == -7.0, n
        assert (np.abs(got[:n][~normal]) < FLT_MIN).all(), n
        exp_n(v, v, n)  # in place
        assert np.array_equal(v[:n], got[:n]), n


POW_EXPONENTS = np.array([0.0, -0.0, 1.0, -1.0, 2.0, 3.0, -3.0, 0.5, -0.5, 1 / 3, 2.5, 7.0, -7.0, 1e9, -1e9,
                          16777217.0, np.inf, -np.inf, np.nan, 0.1, 10.3, -200.5, 30.0, -30.0], np.float32)


def test_pow_special_cases_and_accuracy(cling_fns) -> None:
    bases = np.concatenate([sweep(65537 * 7), SPECIALS, np.float32([-8.0, -2.0, 2.0, 8.0, -1.0 - 2**-23])])
    b, p = (a.ravel().copy() for a in np.meshgrid(bases, POW_EXPONENTS))
    y = _call(cling_fns["pow"], b, p)
    ref = np.power(b.astype(np.float64), p.astype(np.float64))
    ref32 = np.power(b, p)
    assert ulp_errors(y, ref).max() <= 1.0
    # the sign of zero and infinity results as C's powf gives them
    both_zero_or_inf = ((y == 0) & (ref32 == 0)) | (np.isinf(y) & np.isinf(ref32))
    assert (np.signbit(y) == np.signbit(ref32))[both_zero_or_inf].all()
    assert np.isnan(_call(cling_fns["pow"], np.float32([-8.0]), np.float32([1 / 3]))[0])
    assert _call(cling_fns["pow"], np.float32([np.nan, 1.0]), np.float32([0.0, np.nan])).tolist() == [1.0, 1.0]


def test_native_compiler_vectorises_every_function(tmp_path) -> None:
    """g++/clang++ with the native backend's flags: each harness loop is reported vectorised."""
    try:
        cxx = native.compiler()
    except Exception as e:  # no compiler: nothing to check on this machine
        pytest.skip(str(e))
    if "g++" not in cxx.identity.lower() and "gcc" not in cxx.identity.lower():
        pytest.skip("the vectorisation report is read from g++'s -fopt-info-vec")
    src = tmp_path / "h.cpp"
    src.write_text(f'#include "{cling.RUNTIME_PATH}"\n' + HARNESS.replace("inline ", "").replace("\n", "\n\n") + "\n")
    flags = [f for f in native.FLAGS if f.startswith(("-std", "-O", "-m", "-fno-trapping", "-fno-math"))]
    out = subprocess.run([*cxx.argv, *flags, "-fopt-info-vec-optimized", "-c", "-o", str(tmp_path / "h.o"), str(src)],
                         capture_output=True, text=True, check=True)
    lines = {int(m.group(1)) for m in re.finditer(r"h\.cpp:(\d+):\d+: optimized: loop vectorized", out.stderr)}
    assert lines == {2 + 2 * k for k in range(len(UNARY) + 1)}, out.stderr[-2000:]
