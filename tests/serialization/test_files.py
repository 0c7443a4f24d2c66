"""The file layout (as SCHEMA.md documents it) seen through uproot and through ROOT's TFile;
several models per file; an older format version still loads; the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot
from sofie_root.serialization import reader, schema

import sofie_root
from benchmarks import hep_models
from sofie_root import cli

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, hep_onnx):
    path = tmp_path_factory.mktemp("two") / "models.root"
    models = {}
    for name in ("dense", "jet"):
        models[name] = sofie_root.compile(hep_onnx[name])
        models[name].save(path)
    return path, models


def test_uproot_sees_the_documented_objects(two_models) -> None:
    path, models = two_models
    with uproot.open(path) as f:
        assert f.classnames() == {
            "dense;1": "TDirectory", "dense/ir;1": "TObjString", "dense/weights;1": "TTree",
            "jet;1": "TDirectory", "jet/ir;1": "TObjString", "jet/weights;1": "TTree"}
        text = str(f["dense/ir"])
        assert text.startswith('{"format_version":2,')
        doc = json.loads(text)
        tree = f["dense/weights"]
        assert tree.keys() == ["nchunk", "chunk"] and tree["chunk"].typename == "uint8_t[]"
        blob = np.concatenate(list(tree["chunk"].array(library="np"))).tobytes()
    assert len(blob) == doc["blob"]["nbytes"] and tree.num_entries == doc["blob"]["chunks"] >= 1
    session = models["dense"]._generated.weight_blob(models["dense"].graph).tobytes()
    assert blob[:len(session)] == session  # the chunks concatenated are the Session's weight blob
    for init in doc["graph"]["initializers"]:
        arr = np.frombuffer(blob, init["dtype"], int(np.prod(init["shape"])), init["offset"])
        np.testing.assert_array_equal(arr.reshape(init["shape"]), models["dense"].graph.initializers[init["name"]])


def test_root_tfile_sees_the_documented_objects(two_models) -> None:
    import ROOT

    path, _ = two_models
    f = ROOT.TFile.Open(str(path))
    try:
        names = sorted((k.GetName(), k.GetClassName()) for k in f.GetListOfKeys())
        assert names == [("dense", "TDirectoryFile"), ("jet", "TDirectoryFile")]
        d = f.Get("jet")
        assert sorted((k.GetName(), k.GetClassName()) for k in d.GetListOfKeys()) == \
            [("ir", "TObjString"), ("weights", "TTree")]
        text = str(f.Get("jet/ir").GetString())
        doc = json.loads(text)
        assert doc["model"]["name"] == "jet"
        tree = f.Get("jet/weights")
        assert tree.GetEntries() == doc["blob"]["chunks"]
        total = 0
        for entry in tree:
            total += entry.nchunk
        assert total == doc["blob"]["nbytes"]
    finally:
        f.Close()


def test_several_models_per_file(two_models) -> None:
    path, models = two_models
    assert reader.list_models(path) == ["dense", "jet"]
    for name, model in models.items():
        loaded = sofie_root.load(f"{path}:{name}")
        assert loaded.hash == model.hash
        arrays = hep_models.inputs(name, 3, np.random.default_rng(1))
        for a, b in zip(loaded.infer(*arrays), model.infer(*arrays)):
            assert a.tobytes() == b.tobytes()


def test_format_version_1_fixture_loads() -> None:
    path = DATA / "v1_gemm_relu.root"
    assert path.stat().st_size < 64 * 1024
    assert json.loads(str(uproot.open(path)["gemm_relu/ir"]))["format_version"] == 1
    model = sofie_root.load(path)
    assert [str(s) for s in model.inputs] == ["x: float32[N, 3]"]
    w = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=np.float32)
    b = np.array([0.1, -0.2], dtype=np.float32)
    x = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    np.testing.assert_allclose(model(x), np.maximum(x @ w.T + b, 0), rtol=1e-6)
    assert model.column_hints == {}
    assert reader.read(path).format_version == 1
    assert "format version 1" in cli_report(path)
    assert schema.FORMAT_VERSION > 1 and 1 in schema.READABLE_VERSIONS


def cli_report(path) -> str:
    from sofie_root.serialization.inspect import report

    return report(path)


def test_cli_compile_inspect_emit(tmp_path, hep_onnx, capsys) -> None:
    out = tmp_path / "cli.root"
    assert cli.main(["compile", str(hep_onnx["dense"]), "-o", str(out), "--compression", "LZ4:4"]) == 0
    assert cli.main(["compile", str(hep_onnx["jet"]), "-o", str(out), "--name", "tagger"]) == 0
    assert cli.main(["compile", str(hep_onnx["jet"]), "-o", str(out), "--name", "tagger"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["compile", str(hep_onnx["jet"]), "-o", str(out), "--name", "tagger", "--overwrite"]) == 0
    assert cli.main(["compile", str(hep_onnx["jet"]), "-o", str(out), "--compression", "gzip"]) == 1
    capsys.readouterr()
    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 model(s): dense, tagger" in text
    assert "input   x: float32[N, 7]" in text and "output  softmax: float32[N, 4]" in text
    assert "Gemm x4" in text and "LSTM x1" in text
    assert "parameters: 183,301" in text and "bytes on disk" in text and "ONNX file" in text
    assert cli.main(["inspect", f"{out}:tagger"]) == 0
    assert "model 'dense'" not in capsys.readouterr().out
    assert cli.main(["inspect", str(tmp_path / "missing.root")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["emit", f"{out}:tagger", "-o", str(tmp_path / "hdr")]) == 0
    header = (tmp_path / "hdr" / "tagger.hxx").read_text()
    assert "namespace sofie_tagger" in header and "sofie_rt_io::read_blob" in header
    assert cli.main(["emit", str(out), "-o", str(tmp_path / "hdr")]) == 1  # two models: which one?
    assert "several models" in capsys.readouterr().err
    assert cli.main(["emit", f"{out}:dense", "-o", str(tmp_path), "--namespace", "bad name"]) == 1
    exe = Path(sys.executable).parent / "sofie-root"
    for sub in ("compile", "inspect", "emit"):
        r = subprocess.run([str(exe), sub, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and sub in r.stdout
    r = subprocess.run([str(exe), "compile", str(hep_onnx["dense"])], capture_output=True, text=True)
    assert r.returncode == 2 and "-o" in r.stderr
