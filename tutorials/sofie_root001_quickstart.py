## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## Quick start: train a small Higgs-style dense classifier on toy events with PyTorch, export
## it to ONNX, compile it to C++ with sofie_root, and compare its outputs with ONNX Runtime.
## This is what `make demo` runs. No download: the events are generated here.
##
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import sofie_root


def toy_events(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seven kinematic features (m_jj, m_jjj, m_lv, m_jlv, m_bb, m_wbb, m_wwbb style) for signal
    (label 1, a resonance near 1.0 in two of them) and background (label 0, falling spectra)."""
    label = rng.integers(0, 2, n)
    x = rng.exponential(0.6, size=(n, 7)) + 0.2
    sig = label == 1
    x[sig, 4] = rng.normal(1.0, 0.08, sig.sum())
    x[sig, 6] = rng.normal(1.2, 0.15, sig.sum())
    return x.astype(np.float32), label.astype(np.float32)


def train(x: np.ndarray, y: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(7, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 1), torch.nn.Sigmoid(),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
    for _ in range(60):
        for i in range(0, len(xt), 512):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy(net(xt[i:i + 512]), yt[i:i + 512])
            loss.backward()
            opt.step()
    return net.eval()


def main(outdir: Path) -> float:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # exporter chatter about torchvision
    rng = np.random.default_rng(42)
    x_train, y_train = toy_events(8192, rng)
    net = train(x_train, y_train)
    onnx_path = outdir / "higgs_classifier.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(net, (torch.from_numpy(x_train[:4]),), str(onnx_path), dynamo=True,
                          input_names=["features"], output_names=["score"],
                          dynamic_shapes=({0: torch.export.Dim("N")},), verbose=False)

    t0 = time.perf_counter()
    model = sofie_root.compile(onnx_path)
    t_compile = time.perf_counter() - t0
    print(model)

    x_test, y_test = toy_events(1000, rng)
    ours = model(x_test)

    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x_test})[0]

    print("\n  event   sofie_root   onnxruntime   label")
    for i in range(8):
        print(f"  {i:5d}   {ours[i, 0]:10.6f}   {ref[i, 0]:11.6f}   {int(y_test[i])}")
    diff = float(np.max(np.abs(ours - ref)))
    accuracy = float(np.mean((ours[:, 0] > 0.5) == (y_test > 0.5)))
    print(f"\n  batch of {len(x_test)} events: max |sofie_root - onnxruntime| = {diff:.3g}")
    print(f"  classifier accuracy on the toy events: {accuracy:.3f}")
    print(f"  compile time (ONNX -> C++ -> cling -> callable): {t_compile:.2f} s")
    return diff


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        diff = main(Path(d))
    sys.exit(0 if diff < 1e-4 else 1)
