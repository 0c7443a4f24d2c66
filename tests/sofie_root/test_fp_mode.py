"""Flush-to-zero / denormals-are-zero inside a model's run (sofie_rt::FPModeGuard).

The guard must be active while the generated code runs (a product that would be subnormal comes
out as 0, a subnormal input reads as 0), must restore the caller's floating-point control bits
after ``infer``, after a run that throws, and after every RDataFrame functor event, and must be
switched off by the ``sofie_root.flush_denormals`` metadata property. A padding-masked attention
(where the softmax produces values that underflow) still matches onnxruntime.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root import SofieError
from sofie_root.jit import cling

from .ort_check import make_model, run_ort, value_info

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"),
                                reason="the guard sets FTZ on x86-64 and aarch64 only")

#: MXCSR status flags (sticky exception bits) are not part of the mode; FPCR has none there
STATUS = 0x3F if platform.machine() in ("x86_64", "AMD64") else 0


def mode() -> int:
    return int(cling.root().sofie_rt.fp_mode()) & ~STATUS


def _mul_model(flush: str | None = None):
    node = helper.make_node("Mul", ["x", "c"], ["y"])
    m = make_model([node], [value_info("x", np.float32, ["N", 4])], [value_info("y", np.float32, None)],
                   {"c": np.full((4,), 1e-20, np.float32)})
    if flush is not None:
        helper.set_model_props(m, {"sofie_root.flush_denormals": flush})
    return m


def _backend_available(backend: str) -> bool:
    if backend == "cling":
        return True
    from sofie_root.jit import native

    try:
        native.compiler()
        return True
    except SofieError:
        return False


@pytest.mark.parametrize("backend", ["cling", "native"])
def test_denormals_flushed_inside_run_and_mode_restored(backend, tmp_path, monkeypatch) -> None:
    if not _backend_available(backend):
        pytest.skip("no C++ compiler for the native backend")
    monkeypatch.setenv("SOFIE_ROOT_CACHE", str(tmp_path))  # never the user's library cache
    x = np.array([[1e-20, 2e-20, 1.0, -1e-20]], np.float32)  # 1e-40: subnormal product
    before = mode()
    m = sofie_root.compile(_mul_model(), backend=backend)
    y = m(x)
    assert mode() == before
    assert y.tolist() == [[0.0, 0.0, np.float32(1e-20), 0.0]] and np.signbit(y[0, 3])
    # a subnormal input reads as zero too
    assert m(np.array([[1e-40, 1.0, 1.0, 1.0]], np.float32))[0, 0] == 0.0
    # switched off: the numpy result, subnormals included
    off = sofie_root.compile(_mul_model("0"), backend=backend)
    assert np.array_equal(off(x), x * np.float32(1e-20)) and off(x)[0, 0] != 0.0
    assert mode() == before


MXCSR_HARNESS = r"""
// calls a model's run with MXCSR set to `mx`: returns MXCSR as run left it (the whole word)
inline unsigned long long sofie_fp_test_run(unsigned mx, long long fn, long long s, long long sym, long long in,
                                            long long out)
{
   using run_fn = int (*)(void *, std::int64_t *, const void *const *, void *const *, char *, std::size_t);
   unsigned saved, set = mx, got;
   char err[256];
   __asm__ __volatile__("stmxcsr %0" : "=m"(saved));
   __asm__ __volatile__("ldmxcsr %0" : : "m"(set));
   const int rc = reinterpret_cast<run_fn>(fn)(reinterpret_cast<void *>(s), reinterpret_cast<std::int64_t *>(sym),
      reinterpret_cast<const void *const *>(in), reinterpret_cast<void *const *>(out), err, sizeof(err));
   __asm__ __volatile__("stmxcsr %0" : "=m"(got));
   __asm__ __volatile__("ldmxcsr %0" : : "m"(saved));
   return rc ? ~0ull : got;
}
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="MXCSR is x86-64's")
@pytest.mark.parametrize("mx", [0x1F80, 0x1FA0, 0x1FBF, 0x1F81, 0x7F80, 0x3FA0, 0x9FC0, 0x1FC0, 0x9F80])
def test_every_caller_mode_restored_exactly(mx) -> None:
    """The guard loads constant words for a caller in MXCSR's power-on mode (any sticky exception
    flags) and the saved word otherwise (another rounding mode, FTZ or DAZ already set): in every
    case subnormal products are flushed inside the run and the caller's whole MXCSR, flags
    included, is what it finds afterwards."""
    import ctypes

    ROOT = cling.root()
    if not hasattr(ROOT, "sofie_fp_test_run"):
        assert ROOT.gInterpreter.Declare(MXCSR_HARNESS)
    m = sofie_root.compile(_mul_model())
    x = np.array([[1e-20, 2e-20, 1.0, -1e-20]], np.float32)
    y = np.full((1, 4), np.nan, np.float32)
    sym = (ctypes.c_int64 * 1)(1)
    ins = (ctypes.c_void_p * 1)(x.ctypes.data)
    outs = (ctypes.c_void_p * 1)(y.ctypes.data)
    fn = ctypes.cast(m._entry.run, ctypes.c_void_p).value
    got = int(ROOT.sofie_fp_test_run(mx, fn, int(m._session), ctypes.addressof(sym), ctypes.addressof(ins),
                                     ctypes.addressof(outs)))
    assert got == mx, f"MXCSR {mx:#06x} before the run, {got:#06x} after"
    # round toward zero (0x7F80) gives the same products here; the subnormal ones are flushed
    assert y[0, 0] == 0.0 and y[0, 1] == 0.0 and y[0, 3] == 0.0 and np.signbit(y[0, 3])
    assert y[0, 2] == np.float32(1e-20)


def test_mode_restored_when_run_throws() -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=0)
    model = make_model([node], [value_info("x", np.float32, [3]), value_info("i", np.int64, [1])],
                       [value_info("y", np.float32, None)])
    m = sofie_root.compile(model)
    before = mode()
    with pytest.raises(SofieError):
        m(np.ones(3, np.float32), np.array([7], np.int64))
    assert mode() == before
    assert m(np.ones(3, np.float32), np.array([1], np.int64)).tolist() == [1.0]


def test_mode_restored_after_rdataframe_functor_events(tmp_path) -> None:
    import ROOT

    path = tmp_path / "mul.onnx"
    path.write_bytes(_mul_model().SerializeToString())
    ROOT.gInterpreter.Declare("#include <cstdint>\n")
    before = mode()
    df = ROOT.RDataFrame(50).Define("a", "float(rdfentry_) * 1e-20f").Define("b", "1.0f").Define("c", "2.0f") \
        .Define("d", "-1e-20f")
    f = sofie_root.functor(str(path), ["a", "b", "c", "d"], df=df)
    df2 = df.Define("y", f, f.columns).Define("mode", "(void)y; return (unsigned long long)sofie_rt::fp_mode();")
    cols = df2.AsNumpy(["y", "mode"])
    modes = {int(v) & ~STATUS for v in cols["mode"]}
    assert modes == {before}
    assert mode() == before
    ys = np.stack([np.asarray(v) for v in cols["y"]])
    assert (ys[1:, 0] == 0.0).all() and (ys[:, 3] == 0.0).all()  # flushed inside each event


def _masked_softmax_attention(mask_value: float):
    """scores = q k^T + mask, softmax over keys, @ v: padding keys get mask_value (-inf or -1e9)."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Add", ["s", "mask"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    ins = [value_info(n, np.float32, ["N", 16, 8]) for n in ("q", "k", "v")]
    ins.append(value_info("mask", np.float32, ["N", 1, 16]))
    return make_model(nodes, ins, [value_info("y", np.float32, None)])


@pytest.mark.parametrize("mask_value", [-np.inf, -1e9, -100.0])
def test_masked_attention_matches_onnxruntime(mask_value) -> None:
    rng = np.random.default_rng(3)
    model = _masked_softmax_attention(mask_value)
    m = sofie_root.compile(model)
    for n in (1, 5):
        q, k, v = (rng.standard_normal((n, 16, 8)).astype(np.float32) * 3 for _ in range(3))
        mask = np.zeros((n, 1, 16), np.float32)
        for b in range(n):
            mask[b, 0, 16 - 3 * (b + 1) % 16:] = mask_value  # 3 to 15 padded keys
        (ref,) = run_ort(model, q, k, v, mask)
        np.testing.assert_allclose(m(q, k, v, mask), ref, rtol=1e-4, atol=1e-5)


def test_torch_multihead_attention_with_key_padding_mask() -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x, pad):
            return self.mha(x, x, x, key_padding_mask=pad, need_weights=False)[0]

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(3, 10, 16) * 4
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[0, 7:] = True
    pad[1, 2:] = True
    m = sofie_root.compile(net, example_inputs=(x, pad))
    with torch.no_grad():
        ref = net(x, pad).numpy()
    got = m(x.numpy(), pad.numpy())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
