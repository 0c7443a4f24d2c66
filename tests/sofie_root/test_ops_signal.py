"""Signal processing: DFT (opset 17 and 20), STFT, windows and MelWeightMatrix against numpy.fft,
numpy's windows, onnxruntime and onnx.reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import sofie_root

from .ort_check import make_model, run_ort, run_reference, value_info


def _dft_model(shape, out_shape, *, opset, axis, inverse=0, onesided=0, length=None, dtype=np.float32):
    inits = {}
    ins = ["x", ""]
    if length is not None:
        inits["len"] = np.array(length, np.int64)
        ins[1] = "len"
    attrs = {"inverse": inverse, "onesided": onesided}
    if opset >= 20:
        inits["axis"] = np.array(axis, np.int64)
        ins.append("axis")
    else:
        attrs["axis"] = axis
    node = helper.make_node("DFT", ins, ["y"], **attrs)
    return make_model([node], [value_info("x", dtype, shape)], [value_info("y", dtype, out_shape)], inits, opset=opset)


def _complex(x):
    return x[..., 0] + 1j * x[..., 1] if x.shape[-1] == 2 else x[..., 0]


def _pack(z):
    return np.stack([z.real, z.imag], axis=-1)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("onesided,length", [(0, None), (1, 16), (1, 6), (0, 13), (0, 8)])
def test_dft_forward_vs_numpy(opset, channels, onesided, length):
    rng = np.random.default_rng(channels + 2 * onesided)
    x = rng.normal(size=(2, 9, 3, channels))
    n = length or 9
    bins = n // 2 + 1 if onesided else n
    model = _dft_model([2, 9, 3, channels], [2, bins, 3, 2], opset=opset, axis=1, onesided=onesided,
                       length=length, dtype=np.float64)
    (got,) = sofie_root.compile(model).infer(x)
    ref = np.fft.fft(_complex(x), n=n, axis=1)[:, :bins]
    np.testing.assert_allclose(got, _pack(ref), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("axis", [0, 2, -2])
def test_dft_axes_and_inverse_vs_ort(axis):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 5, 6, 2)).astype(np.float32)
    shape = [4, 5, 6, 2]
    for inverse in (0, 1):
        model = _dft_model(shape, None, opset=20, axis=axis, inverse=inverse)
        (got,) = sofie_root.compile(model).infer(x)
        (ref,) = run_ort(model, x)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        fn = np.fft.ifft if inverse else np.fft.fft
        np.testing.assert_allclose(got, _pack(fn(_complex(x.astype(np.float64)), axis=axis % 4)), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("length", [None, 16, 7])
def test_dft_irfft_vs_numpy(length):
    rng = np.random.default_rng(5)
    spec = _pack(np.fft.rfft(rng.normal(size=(3, 10)), axis=1))  # [3, 6, 2]
    n = length or 10
    model = _dft_model([3, 6, 2], [3, n, 1], opset=20, axis=1, inverse=1, onesided=1, length=length,
                       dtype=np.float64)
    (got,) = sofie_root.compile(model).infer(spec)
    np.testing.assert_allclose(got[..., 0], np.fft.irfft(_complex(spec), n=n, axis=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [4096, 1000])
def test_long_dft_fft_and_direct_vs_numpy(n):
    # 4096: the radix-2 FFT path; 1000: the direct sum
    x = np.random.default_rng(n).normal(size=(2, n, 2))
    for inverse in (0, 1):
        model = _dft_model([2, n, 2], [2, n, 2], opset=20, axis=1, inverse=inverse, dtype=np.float64)
        fn = np.fft.ifft if inverse else np.fft.fft
        np.testing.assert_allclose(sofie_root.compile(model).infer(x)[0], _pack(fn(_complex(x), axis=1)),
                                   rtol=1e-9, atol=1e-9 * (1 if inverse else n))


def test_dft_symbolic_batch():
    model = _dft_model(["N", 8, 1], ["N", 5, 2], opset=20, axis=1, onesided=1)
    m = sofie_root.compile(model)
    for n in (1, 4):
        x = np.random.default_rng(n).normal(size=(n, 8, 1)).astype(np.float32)
        np.testing.assert_allclose(m.infer(x)[0], _pack(np.fft.rfft(x[..., 0], axis=1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [False, True])
@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("channels", [1, 2])
def test_stft_vs_numpy(window, onesided, channels):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 40, channels)).astype(np.float32)
    step, length = 6, 16
    inits = {"step": np.array(step, np.int64), "len": np.array(length, np.int64)}
    w = np.hanning(length).astype(np.float32)
    if window:
        inits["w"] = w
    node = helper.make_node("STFT", ["x", "step", "w" if window else "", "len"], ["y"], onesided=onesided)
    frames = (40 - length) // step + 1
    bins = length // 2 + 1 if onesided else length
    model = make_model([node], [value_info("x", np.float32, [2, 40, channels])],
                       [value_info("y", np.float32, [2, frames, bins, 2])], inits)
    (got,) = sofie_root.compile(model).infer(x)
    sig = _complex(x.astype(np.float64))
    frames_ = np.stack([sig[:, f * step:f * step + length] for f in range(frames)], axis=1)
    if window:
        frames_ = frames_ * w
    ref = np.fft.fft(frames_, axis=-1)[..., :bins]
    np.testing.assert_allclose(got, _pack(ref), rtol=1e-4, atol=1e-4)
    if channels == 1:  # onnxruntime implements the real-signal STFT
        np.testing.assert_allclose(got, run_ort(model, x)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op,np_fn", [("HannWindow", np.hanning), ("HammingWindow", None),
                                      ("BlackmanWindow", np.blackman)])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows_vs_numpy(op, np_fn, periodic):
    # 1.2M samples: too big to fold at compile time, so the generated loop computes it
    n = 1_200_000
    node = helper.make_node(op, ["n"], ["w"], periodic=periodic, output_datatype=TensorProto.DOUBLE)
    model = make_model([node], [], [value_info("w", np.float64, [n])], {"n": np.array(n, np.int64)})
    (got,) = sofie_root.compile(model).infer()
    np.testing.assert_allclose(got, run_reference(model)[0], rtol=1e-9, atol=1e-9)
    if np_fn is not None:  # ONNX's Hamming window is alpha = 25/46, numpy's 0.54
        np.testing.assert_allclose(got, np_fn(n + 1)[:-1] if periodic else np_fn(n), rtol=1e-9, atol=1e-9)
    small = make_model([helper.make_node(op, ["n"], ["w"], periodic=periodic)], [], [value_info("w", np.float32, [9])],
                       {"n": np.array(9, np.int64)})
    np.testing.assert_allclose(sofie_root.compile(small).infer()[0], run_ort(small)[0], rtol=1e-6, atol=1e-7)


def test_mel_weight_matrix_vs_reference():
    # 8193 x 130 floats: above the folding limit, so the generated code builds it
    args = {"mel": np.array(130, np.int64), "dft": np.array(16384, np.int64), "rate": np.array(44100, np.int64),
            "lo": np.array(30.0, np.float32), "hi": np.array(16000.0, np.float32)}
    node = helper.make_node("MelWeightMatrix", list(args), ["m"])
    model = make_model([node], [], [value_info("m", np.float32, [8193, 130])], args)
    (got,) = sofie_root.compile(model).infer()
    (ref,) = run_reference(model)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_dft_refuses_the_complex_axis():
    model = _dft_model([2, 8, 2], None, opset=20, axis=-1)
    with pytest.raises(sofie_root.SofieError, match="trailing"):
        sofie_root.compile(model)
