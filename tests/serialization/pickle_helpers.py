"""Models and task functions for the pickling tests, importable by spawned processes and Dask
workers. Importing this module registers the user-defined operator its custom model needs, as a
user's worker code would before unpickling such a model."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import sofie_root

DOMAIN = "test.pickle"
SHIFT = 0.25


def register() -> None:
    """The receiving side's registration of ``test.pickle::Shift`` (y = x + shift, then squared)."""
    sofie_root.register_operator("Shift", domain=DOMAIN, attributes={"shift": SHIFT},
                                 elementwise="(x + shift) * (x + shift)", replace=True)


register()


def mlp(custom: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x[N, 7] -> Gemm -> Relu (-> Shift) -> Gemm -> Softmax -> y[N, 3]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (7, 16)), ("b1", (16,)), ("W2", (16, 3)), ("b2", (3,)))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
    if custom:
        nodes.append(helper.make_node("Shift", ["r"], ["s"], domain=DOMAIN))
    nodes += [helper.make_node("Gemm", ["s" if custom else "r", "W2", "b2"], ["z"]),
              helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(DOMAIN, 1)] if custom else [])
    return helper.make_model(g, opset_imports=opsets)


def reference(x: np.ndarray, custom: bool = False, seed: int = 0) -> np.ndarray:
    """numpy forward pass of :func:`mlp` (independent of the compiled code)."""
    rng = np.random.default_rng(seed)
    W1, b1, W2, b2 = (rng.standard_normal(s).astype(np.float32) for s in ((7, 16), (16,), (16, 3), (3,)))
    h = np.maximum(x.astype(np.float64) @ W1 + b1, 0)
    if custom:
        h = (h + SHIFT) ** 2
    z = h @ W2 + b2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run(model, x: np.ndarray) -> tuple[int, np.ndarray, dict]:
    """A task: the model's output on ``x``, with this process's id and unpickling counters."""
    from sofie_root.serialization import pickling

    return os.getpid(), np.asarray(model(x)), dict(pickling.stats)


FUNCTOR_COLUMNS = [f"f{i}" for i in range(7)]


def functor_inputs(n: int) -> np.ndarray:
    """The values of the columns :func:`run_functor` defines, as the model's [n, 7] input."""
    return np.stack([np.arange(n) * (i + 1) / 10 - i for i in range(7)], axis=1).astype(np.float32)


def run_functor(functor, n: int = 6) -> tuple[int, np.ndarray]:
    """A task: an (unpickled) RDataFrame functor defining a column on an n-entry dataframe."""
    import ROOT

    df = ROOT.RDataFrame(n)
    for i, c in enumerate(FUNCTOR_COLUMNS):
        df = df.Define(c, f"float(rdfentry_ * {i + 1}) / 10 - {i}")
    df = df.Define("y", functor, list(functor.columns))
    return os.getpid(), np.array([list(v) for v in df.AsNumpy(["y"])["y"]], dtype=np.float32)
