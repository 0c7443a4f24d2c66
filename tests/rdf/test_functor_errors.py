"""Errors of RDataFrame functors are SofieErrors naming the model (issue 11): Python errors while
a functor is made (MemoryError included), RDataFrame refusing the column, and C++ errors of the
event loop (a column length mismatch, std::bad_alloc of a Session's arena under a memory limit,
with and without implicit multi-threading), which RDataFrame rethrows from GetValue()."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import ROOT
import sofie_root.rdf as srdf
from onnx import helper

import sofie_root
from sofie_root import FunctorError, SofieError
from tests.sofie_root.ort_check import make_model, value_info

functor_module = importlib.import_module("sofie_root.rdf.functor")  # the attribute is the function


def _small_model():
    # y[N] = max over the row of Relu(x): the functor returns a float
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("ReduceMax", ["r"], ["y"], axes=[1], keepdims=0)]
    return make_model(nodes, [value_info("x", np.float32, ["N", 2])], [value_info("y", np.float32, None)],
                      name="tiny_tagger")


def test_a_python_error_while_making_the_functor_is_a_functor_error(monkeypatch):
    model = sofie_root.compile(_small_model())

    def no_memory(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(functor_module, "make_plan", no_memory)
    with pytest.raises(FunctorError, match=r"model 'tiny_tagger'.*MemoryError: simulated") as info:
        srdf.functor(model, ["a", "b"])
    assert isinstance(info.value, SofieError) and isinstance(info.value.__cause__, MemoryError)


def test_a_column_rdataframe_refuses_is_a_functor_error():
    model = sofie_root.compile(_small_model())
    df = ROOT.RDataFrame(4).Define("a", "1.f").Define("b", "2.f")
    with pytest.raises(FunctorError, match="defining column 'a' from model 'tiny_tagger' failed"):
        srdf.define(df, "a", model, ["a", "b"])  # 'a' exists already


def test_an_event_loop_error_is_a_functor_error_naming_the_model():
    model = sofie_root.compile(_small_model())
    df = ROOT.RDataFrame(3).Define("x", "ROOT::RVecF(rdfentry_ + 1, 1.f)").Define("y", "ROOT::RVecF(2, 1.f)")
    # a [1, P, F] input from two collection columns of different lengths in event 0
    proto = make_model([helper.make_node("ReduceMax", ["p"], ["s"], axes=[1, 2], keepdims=0)],
                       [value_info("p", np.float32, ["N", 4, 2])], [value_info("s", np.float32, None)],
                       name="tiny_pf")
    d = srdf.define(df, "s", sofie_root.compile(proto), ["x", "y"])
    with pytest.raises(SofieError) as info:
        d.Sum("s").GetValue()
    assert isinstance(info.value, FunctorError)
    assert "sofie_root functor (model 'tiny_pf')" in str(info.value)
    assert "column 'y'" in str(info.value) and "has 2 elements where the first has 1" in str(info.value)
    del model


_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import ROOT
    from onnx import helper
    import sofie_root, sofie_root.rdf as srdf
    from tests.sofie_root.ort_check import make_model, value_info

    mt = sys.argv[1] == "mt"
    if mt:
        ROOT.EnableImplicitMT(2)
    # Tile makes a [1, 2**26] intermediate per event (256 MiB of arena), the output is one float
    nodes = [helper.make_node("Tile", ["x", "reps"], ["t"]),
             helper.make_node("ReduceMax", ["t"], ["y"], axes=[1], keepdims=0)]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 1])], [value_info("y", np.float32, None)],
                       {"reps": np.array([1, 2**26], np.int64)}, name="big_arena")
    model = sofie_root.compile(proto)
    df = ROOT.RDataFrame(4).Define("a", "float(rdfentry_)")
    total = srdf.define(df, "y", model, ["a"]).Sum["float"]("y")  # instantiated now, not in the loop
    x = np.ones((1, 1), np.float32)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), hard))
    out = {}
    for what, run in (("functor", lambda: total.GetValue()), ("infer", lambda: model(x))):
        try:
            run()
            out[what] = ["ok", ""]
        except sofie_root.SofieError as e:
            out[what] = [type(e).__name__, str(e)]
        except BaseException as e:
            out[what] = ["not a SofieError: " + type(e).__name__, str(e)]
    print("RESULT " + json.dumps(out), flush=True)
""")


@pytest.mark.parametrize("threads", ["st", "mt"])
def test_out_of_memory_in_an_event_is_a_functor_error(threads):
    # a child process under RLIMIT_AS: the Session's arena cannot be allocated in the event loop
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([sys.executable, "-c", _CHILD, threads], capture_output=True, text=True, timeout=600,
                       cwd=root, env={**os.environ, "PYTHONWARNINGS": "ignore", "SOFIE_ROUNDTRIP_CHECK": "0"})
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"child failed (exit {p.returncode}): {p.stderr[-2000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    kind, message = out["functor"]
    assert kind == "Error", out  # the Python class of sofie_rdf::Error, a FunctorError
    assert "sofie_root functor (model 'big_arena')" in message and "out of memory" in message, message
    assert "the arena of intermediate tensors" in message, message
    kind, message = out["infer"]
    assert kind == "SofieError" and "out of memory: the arena of intermediate tensors" in message, out
