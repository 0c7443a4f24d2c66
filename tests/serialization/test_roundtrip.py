"""ONNX -> .root -> load: the graph comes back identical, the weights and outputs bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
from sofie_root.serialization import reader, schema, writer

import sofie_root
from benchmarks import hep_models
from sofie_root.ir.graph import Graph

from .helpers import assert_bits_equal, assert_graphs_equal
from .models import DTYPES, compile_every_kind, every_kind_inputs, special_arrays


def _same_outputs(a, b, *arrays) -> None:
    outs_a, outs_b = a.infer(*arrays), b.infer(*arrays)
    assert len(outs_a) == len(outs_b)
    for k, (x, y) in enumerate(zip(outs_a, outs_b)):
        assert_bits_equal(x, y, f"output {k}")


@pytest.mark.parametrize("name", sorted(hep_models.MODELS))
def test_end_to_end_models_round_trip(name, hep_onnx, tmp_path) -> None:
    model = sofie_root.compile(hep_onnx[name])
    path = tmp_path / "m.root"
    assert model.save(path) == name  # the ONNX file's stem by default
    loaded = sofie_root.load(path)
    assert_graphs_equal(model.graph, loaded.graph)
    assert loaded.hash == model.hash and loaded.source == model.source
    assert [str(s) for s in loaded.inputs] == [str(s) for s in model.inputs]
    for batch in (1, 17):
        _same_outputs(model, loaded, *hep_models.inputs(name, batch, np.random.default_rng(batch)))
    # compile() takes .root paths too, with or without the model name
    again = sofie_root.compile(f"{path}:{name}")
    assert again.hash == model.hash


def test_every_dtype_and_attribute_kind(tmp_path) -> None:
    model = compile_every_kind()
    path = tmp_path / "every.root"
    model.save(path, "every")
    loaded = sofie_root.load(f"{path}:every")
    assert_graphs_equal(model.graph, loaded.graph)
    g = loaded.graph
    for name, arr in special_arrays().items():
        assert_bits_equal(g.initializers[f"w_{name}"], arr, name)
    kinds = set()
    for node in g.walk():
        for v in node.attrs.values():
            kinds.add(type(v).__name__ if not isinstance(v, list) else f"list[{type(v[0]).__name__}]")
    assert {"int", "float", "str", "ndarray", "Graph", "list[int]", "list[float]", "list[str]",
            "list[ndarray]"} <= kinds
    assert g.value_tensors() and g.info(g.value_tensors()[0]).value is not None  # a symbolic (N, 4)
    assert {t.dtype.name for t in g.tensors.values()} == set(DTYPES)
    for batch in (1, 5):
        for cond in (True, False):
            _same_outputs(model, loaded, *every_kind_inputs(batch, cond))


def test_graph_list_attributes_and_encoding_round_trip() -> None:
    """The 'graphs' attribute kind (no built-in operator uses it) at the schema level."""
    model = compile_every_kind()
    g = model.graph
    node = next(n for n in g.nodes if n.op_type == "If")
    branches = [node.attrs["then_branch"], node.attrs["else_branch"]]
    leaky = next(n for n in g.nodes if n.op_type == "LeakyRelu")
    leaky.attrs["extra_graphs"] = branches
    try:
        blob = schema.BlobBuilder()
        doc = schema.encode_graph(g, blob)
        back = schema.Decoder("<test>", blob.bytes()).graph(doc, "graph")
    finally:
        del leaky.attrs["extra_graphs"]
    got = next(n for n in back.nodes if n.op_type == "LeakyRelu").attrs["extra_graphs"]
    assert isinstance(got, list) and all(isinstance(x, Graph) for x in got)
    for a, b in zip(branches, got):
        assert_graphs_equal(a, b)


def test_blob_starts_with_the_session_weights(tmp_path, hep_onnx) -> None:
    model = sofie_root.compile(hep_onnx["dense"])
    model.save(tmp_path / "d.root")
    stored = reader.read(tmp_path / "d.root")
    session = model._generated.weight_blob(model.graph).tobytes()
    assert stored.doc["blob"]["session_nbytes"] == len(session)
    assert stored.blob[:len(session)] == session


def test_column_hints_and_metadata(tmp_path, hep_onnx) -> None:
    model = sofie_root.compile(hep_onnx["dense"])
    cols = ["m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb"]
    model.save(tmp_path / "d.root", compression="lzma:6", columns=cols)
    loaded = sofie_root.load(tmp_path / "d.root")
    assert loaded.column_hints == {"x": cols}
    doc = reader.read(tmp_path / "d.root").doc
    assert next(iter(doc)) == "format_version" and doc["format_version"] == schema.FORMAT_VERSION
    assert doc["sofie_root_version"] == sofie_root.__version__
    assert doc["model"]["model_hash"] == model.hash
    assert doc["model"]["onnx"]["producer_name"] == "pytorch" and doc["model"]["onnx"]["opset"] > 0
    assert [t["name"] for t in doc["model"]["inputs"]] == ["x"]
    assert doc["model"]["inputs"][0]["shape"] == ["N", 7]
    assert doc["model"]["onnx_bytes"] > doc["blob"]["session_nbytes"] // 2  # ONNX file + external data
    # the hints travel on when the loaded model is saved again
    loaded.save(tmp_path / "d.root", "again")
    assert sofie_root.load(f"{tmp_path / 'd.root'}:again").column_hints == {"x": cols}
    with pytest.raises(sofie_root.SofieError, match="not inputs"):
        model.save(tmp_path / "e.root", columns={"nope": ["a"]})


@pytest.mark.parametrize("compression", ["ZSTD:1", "lzma", "LZ4:4", "zlib:9", "none"])
def test_every_compression_reads_back(compression, tmp_path, hep_onnx) -> None:
    model = sofie_root.compile(hep_onnx["jet"])
    model.save(tmp_path / "j.root", compression=compression)
    stored = reader.read(tmp_path / "j.root")
    assert_graphs_equal(model.graph, stored.graph)


def test_bad_compression_and_name(tmp_path, hep_onnx) -> None:
    model = sofie_root.compile(hep_onnx["jet"])
    for bad in ("brotli", "zstd:99", "ZSTD:x"):
        with pytest.raises(sofie_root.SofieError, match="compression"):
            model.save(tmp_path / "j.root", compression=bad)
    for bad in ("a/b", "x:y", "", 'q"', ".hidden", "a" * 200):
        with pytest.raises(sofie_root.SofieError, match="invalid model name"):
            model.save(tmp_path / "j.root", bad)
    assert writer.DEFAULT_COMPRESSION.startswith("ZSTD")
