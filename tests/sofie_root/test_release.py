"""What a compiled model holds, and what it gives back when deleted.

A model keeps its weights twice while alive (the graph's arrays, for saving and inspection, and the
Session's buffer the generated code reads); deleting it frees both and the arena. What cling has
compiled stays (cling cannot unload declared code): about 0.4 MB per model, see the README.
"""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest
from onnx import helper

import sofie_root
from tests.sofie_root.ort_check import make_model, value_info

MIB = 1 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _warm_blas() -> None:
    """One product through the BLAS the generated code calls (a non-constant B above the runtime's
    own kernel's size), so that the library's work buffers, which it allocates on first use and
    keeps for the process (OpenBLAS: tens of MiB, more on AVX-512 CPUs), are in the baseline."""
    proto = make_model([helper.make_node("MatMul", ["a", "b"], ["c"])],
                       [value_info("a", np.float32, [64, 256]), value_info("b", np.float32, [256, 256])],
                       [value_info("c", np.float32, None)])
    a, b = np.ones((64, 256), np.float32), np.ones((256, 256), np.float32)
    np.testing.assert_allclose(sofie_root.compile(proto)(a, b), a @ b)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def _weights_and_arena_rss() -> tuple[int, int, bool]:
    """RSS above the baseline while a model with 64 MiB of weights is alive and after ``del``, and
    whether a weak reference to it died; run in a fresh process (the suite's earlier tests leave
    heaps whose reuse moved the figures by 25 MiB: 143 MiB alone, 168 after the whole suite)."""
    n = 4096  # 64 MiB of weights: large blocks the allocator hands back to the system at once
    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                       [value_info("x", np.float32, ["N", n])], [value_info("y", np.float32, None)], {"w": w})
    x = np.ones((256, n), np.float32)
    ref = np.maximum(x @ w, 0)
    del w
    _warm_blas()
    gc.collect()
    base = _rss()
    model = sofie_root.compile(proto)
    np.testing.assert_allclose(model(x), ref, rtol=1e-4, atol=1e-3)
    alive = _rss() - base
    probe = weakref.ref(model)
    del model
    gc.collect()
    return alive, _rss() - base, probe() is None


def test_weights_and_arena_are_returned_after_del() -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        alive, after, died = pool.submit(_weights_and_arena_rss).result(timeout=600)
    assert died  # no reference cycle keeps a model alive
    # less than half the weights left: no copy of them (or of the 64 MiB outputs/arena) is kept
    assert alive < 2.6 * 64 * MIB, f"{alive / MIB:.0f} MiB while alive: more than two copies of the weights"
    assert after < 32 * MIB, f"{after / MIB:.0f} MiB still held after del (alive: {alive / MIB:.0f} MiB)"
