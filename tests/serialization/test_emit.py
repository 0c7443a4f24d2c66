"""Standalone headers of several models, compiled together by ROOT in a process without
sofie_root, each Session reading its weights from the .root file: same outputs as Python."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from sofie_root.serialization.emit import emit

import sofie_root
from benchmarks import hep_models

from .models import compile_every_kind, every_kind_inputs

RUNNER = textwrap.dedent("""
    import sys
    import numpy as np
    import ROOT
    ROOT.gROOT.SetBatch(True)
    work = sys.argv[1]
    data = dict(np.load(work + "/inputs.npz"))
    for name in ("dense", "jet", "cnn", "every", "dense"):  # twice: the include guards hold
        assert ROOT.gInterpreter.Declare('#include "{}/include/{}.hxx"'.format(work, name)), name
    out = {}
    for name in ("dense", "jet", "cnn"):
        s = getattr(ROOT, "sofie_" + name).Session(work + "/models.root", name)
        xs = [data["{}_{}".format(name, k)] for k in range(3) if "{}_{}".format(name, k) in data]
        y = np.zeros(data[name + "_out_shape"], dtype=np.float32)
        s.infer(len(xs[0]), *xs, y)
        out[name] = y
    s = ROOT.sofie_every.Session(work + "/models.root", "every")
    x, c = data["every_0"], data["every_1"]
    ys = [np.zeros(shape, dtype) for shape, dtype in zip(data["every_shapes"], data["every_dtypes"])]
    # the generic entry point (void pointers): cppyy does not pass uint64 numpy arrays as uint64_t*
    ROOT.gInterpreter.Declare('''
        void run_every(sofie_every::Session &s, long long n, const std::vector<long long> &in,
                       const std::vector<long long> &out) {
           std::vector<const void *> ip; std::vector<void *> op;
           for (auto a : in) ip.push_back(reinterpret_cast<const void *>(a));
           for (auto a : out) op.push_back(reinterpret_cast<void *>(a));
           std::int64_t sym[1] = {n};
           s.run(sym, ip.data(), op.data());
        }''')
    ROOT.run_every(s, len(x), [x.ctypes.data, c.ctypes.data], [y.ctypes.data for y in ys])
    for k, y in enumerate(ys):
        out["every_{}".format(k)] = y
    try:
        ROOT.sofie_dense.Session(work + "/models.root", "jet")
        raise SystemExit("a session accepted the weights of another model")
    except Exception as e:
        assert "not the one this header was generated from" in str(e), e
    np.savez(work + "/outputs.npz", **out)
    assert "sofie_root" not in sys.modules
""")


def test_emitted_headers_match_python(tmp_path, hep_onnx) -> None:
    models, inputs, expected = {}, {}, {}
    for name in ("dense", "jet", "cnn"):
        models[name] = sofie_root.compile(hep_onnx[name])
        models[name].save(tmp_path / "models.root", name)
        xs = hep_models.inputs(name, 3, np.random.default_rng(2))
        for k, x in enumerate(xs):
            inputs[f"{name}_{k}"] = x
        expected[name] = models[name].infer(*xs)[0]
        inputs[f"{name}_out_shape"] = np.array(expected[name].shape)
    every = compile_every_kind()
    every.save(tmp_path / "models.root", "every")
    x, c = every_kind_inputs(4, True)
    inputs["every_0"], inputs["every_1"] = x, c.reshape(1)
    outs = every.infer(x, c)
    inputs["every_shapes"] = np.array([o.shape for o in outs], dtype=object)
    inputs["every_dtypes"] = np.array([o.dtype.str for o in outs])
    for name in ("dense", "jet", "cnn", "every"):
        emit(f"{tmp_path / 'models.root'}:{name}", tmp_path / "include")
    np.savez(tmp_path / "inputs.npz", **inputs)
    r = subprocess.run([sys.executable, "-c", RUNNER.replace("np.load(", "np.load(allow_pickle=True, file="),
                        str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = dict(np.load(tmp_path / "outputs.npz"))
    for name in ("dense", "jet", "cnn"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for k, o in enumerate(outs):
        g = got[f"every_{k}"]
        assert g.dtype == o.dtype and g.shape == o.shape
        if o.dtype.kind == "f":
            np.testing.assert_allclose(g, o, rtol=1e-5, atol=1e-6, err_msg=f"every output {k}")
        else:
            np.testing.assert_array_equal(g, o, err_msg=f"every output {k}")
