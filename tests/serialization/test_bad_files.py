"""Bad and hostile files: each gives a clear SofieError naming the file and the problem; nothing
from a file ever runs, and nothing crashes."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper
from sofie_root.serialization import reader, writer
from sofie_root.serialization.errors import (
    CorruptFileError,
    FormatVersionError,
    InvalidModelFileError,
    ModelExistsError,
    ModelNotFoundError,
)

import sofie_root

from .helpers import assert_graphs_equal


@pytest.fixture(scope="module")
def good(tmp_path_factory, hep_onnx):
    """A file with the dense model (about 0.7 MB of weights) and its compiled model."""
    path = tmp_path_factory.mktemp("good") / "good.root"
    model = sofie_root.compile(hep_onnx["dense"])
    model.save(path, "dense")
    return path, model


def _rewrite(good, dst, mutate=None, blob=None, name="dense", raw_text=None):
    """A copy of the good model with its document (or blob) changed; checksums recomputed."""
    stored = reader.read(good[0])
    doc = copy.deepcopy(stored.doc)
    if mutate:
        mutate(doc)
    text = raw_text if raw_text is not None else writer.document_text(doc)
    with uproot.recreate(dst) as f:
        writer.write_entry(f, name, text, stored.blob if blob is None else blob)
    return dst


def _raises(exc, spec, *words):
    with pytest.raises(exc) as info:
        sofie_root.load(spec)
    msg = str(info.value)
    assert isinstance(info.value, sofie_root.SofieError)
    assert str(spec).split(":")[0] in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


# -- files that are not (good) model files --------------------------------------------------------
def test_missing_path(tmp_path) -> None:
    _raises(ModelNotFoundError, tmp_path / "nope.root", "no such file")
    _raises(ModelNotFoundError, f"{tmp_path / 'nope.root'}:model", "no such file")
    _raises(ModelNotFoundError, tmp_path, "directory")


def test_not_a_root_file(tmp_path) -> None:
    p = tmp_path / "text.root"
    p.write_text("hello, I am not a ROOT file\n" * 10)
    _raises(CorruptFileError, p, "not a readable ROOT file")


def test_truncated(good, tmp_path) -> None:
    data = good[0].read_bytes()
    for frac in (0.02, 0.5, 0.97):
        p = tmp_path / f"cut{frac}.root"
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(sofie_root.ModelLoadError) as info:
            sofie_root.load(p)
        assert str(p) in str(info.value)


def test_bit_flips(good, tmp_path) -> None:
    """Flip bytes all over the file: either a clear error, or (a byte nobody reads) the same model."""
    data = bytearray(good[0].read_bytes())
    rng = np.random.default_rng(7)
    positions = sorted({*rng.integers(0, len(data), 40).tolist(), *range(0, 400, 37), len(data) - 30})
    errors = 0
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 0x5A
        p = tmp_path / "flip.root"
        p.write_bytes(bytes(flipped))
        try:
            stored = reader.read(p)
        except sofie_root.ModelLoadError as e:
            assert str(p) in str(e)
            errors += 1
            continue
        assert_graphs_equal(stored.graph, good[1].graph)
    assert errors >= len(positions) // 2


def test_checksum_mismatch(good, tmp_path) -> None:
    stored = reader.read(good[0])
    text = writer.document_text(stored.doc).replace('"name":"x"', '"name":"y"', 1)
    _raises(CorruptFileError, _rewrite(good, tmp_path / "t.root", raw_text=text), "checksum")
    blob = bytearray(stored.blob)
    blob[100] ^= 1
    _raises(CorruptFileError, _rewrite(good, tmp_path / "b.root", blob=bytes(blob)), "checksum", "weights")


def test_wrong_schema_version(good, tmp_path) -> None:
    def newer(doc):
        doc["format_version"] = 99

    msg = _raises(FormatVersionError, _rewrite(good, tmp_path / "v99.root", newer), "99", "upgrade")
    assert "reads versions up to 2" in msg

    def bogus(doc):
        doc["format_version"] = 0

    _raises(FormatVersionError, _rewrite(good, tmp_path / "v0.root", bogus), "format version 0")


def test_histograms_only(tmp_path) -> None:
    p = tmp_path / "hists.root"
    with uproot.recreate(p) as f:
        f["h_pt"] = np.histogram(np.arange(10.0), bins=5)
        f["sub/h_eta"] = np.histogram(np.arange(10.0), bins=5)
    _raises(ModelNotFoundError, p, "holds no sofie_root model", "h_pt")
    _raises(ModelNotFoundError, f"{p}:h_pt", "no model named 'h_pt'")


def test_missing_and_ambiguous_model_names(good, tmp_path) -> None:
    p = tmp_path / "two.root"
    shutil.copy(good[0], p)
    good[1].save(p, "other")
    _raises(ModelNotFoundError, f"{p}:nope", "no model named 'nope'", "dense, other")
    _raises(ModelNotFoundError, p, "several models", "dense, other")
    assert reader.list_models(p) == ["dense", "other"]
    with pytest.raises(ModelExistsError, match=r"already holds a model .* 'other'"):
        good[1].save(p, "other")
    good[1].save(p, "other", overwrite=True)
    assert reader.list_models(p) == ["dense", "other"]
    assert sofie_root.load(f"{p}:other").hash == good[1].hash
    junk = tmp_path / "junk.onnx"
    junk.write_text("not ROOT")
    with pytest.raises(CorruptFileError, match="refusing to overwrite"):
        good[1].save(junk)
    assert junk.read_text() == "not ROOT"


# -- hostile content ------------------------------------------------------------------------------
def test_names_cannot_inject_code(tmp_path) -> None:
    evil_in = 'x"); std::system("touch PWNED"); //\n*/'
    evil_out = "y */ #define float int \\"
    nodes = [helper.make_node("Relu", [evil_in], ["h"], name='n"; abort();'),
             helper.make_node("Add", ["h", "b\n#include <cstdlib>"], [evil_out])]
    graph = helper.make_graph(
        nodes, 'g"; abort(); //', [helper.make_tensor_value_info(evil_in, TensorProto.FLOAT, ["N; system()", 3])],
        [helper.make_tensor_value_info(evil_out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "b\n#include <cstdlib>")])
    model = sofie_root.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    p = tmp_path / "evil.root"
    model.save(p, "evil")
    loaded = sofie_root.load(p)
    code = _code(loaded.source)  # names survive only in comments, filtered to a safe character set
    for bad in ("system(", "abort(", "<cstdlib>", "#define", "\"touch"):
        assert bad not in code
    assert all(line.count('"') % 2 == 0 and not line.rstrip().endswith("\\")
               for line in loaded.source.splitlines() if "//" in line)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    np.testing.assert_array_equal(loaded(x), np.maximum(x, 0) + [1, 2, 3])
    assert not (tmp_path / "PWNED").exists()
    from sofie_root.serialization.emit import header_source

    _, text = header_source(p)
    code = _code(text.split("namespace sofie_evil", 1)[1])
    for bad in ("system(", "abort(", "#define"):
        assert bad not in code


def _code(source: str) -> str:
    return "\n".join(line.split("//", 1)[0] for line in source.splitlines())


def test_hostile_model_directory_name(good, tmp_path) -> None:
    p = _rewrite(good, tmp_path / "n.root", name='a"b')
    with pytest.raises(InvalidModelFileError, match="not a valid sofie_root model name"):
        sofie_root.load(p)


def _reseal(text: str) -> str:
    """Recompute the document checksum after editing its text."""
    import hashlib

    head = text[: text.rfind(',"sha256":"')]
    return head + ',"sha256":"' + hashlib.sha256(head.encode()).hexdigest() + '"}'


def _tensor(doc, name):
    return next(t for t in doc["graph"]["tensors"] if t["name"] == name)


@pytest.mark.parametrize("case", [
    "overflow_dim", "negative_dim", "overflow_product", "bad_symbol", "huge_coefficient", "shape_lie",
    "init_beyond_blob", "init_size_mismatch", "absurd_blob", "wrong_types", "unknown_dtype",
    "deep_nesting", "bad_attr_kind", "dangling_input", "value_lie",
])
def test_hostile_documents_are_rejected(case, good, tmp_path) -> None:
    def mutate(doc):
        g = doc["graph"]
        # the dense model's first hidden layer: a Relu, or a FusedGemm once the passes fused it
        relu = next(n for n in g["nodes"] if n["op_type"] in ("Relu", "FusedGemm"))
        if case == "overflow_dim":
            _tensor(doc, relu["outputs"][0])["shape"] = ["N", 2**62]
        elif case == "negative_dim":
            _tensor(doc, relu["outputs"][0])["shape"] = ["N", -300]
        elif case == "overflow_product":
            _tensor(doc, relu["outputs"][0])["shape"] = [2**30, 2**30, 2**30, "N"]
        elif case == "bad_symbol":
            _tensor(doc, "x")["shape"] = ['N"; system("x")', 7]
        elif case == "huge_coefficient":
            _tensor(doc, "x")["shape"] = ["99999999999999*N", 7]
        elif case == "shape_lie":
            _tensor(doc, relu["outputs"][0])["shape"] = ["N", 3000]
        elif case == "init_beyond_blob":
            g["initializers"][0]["offset"] = doc["blob"]["nbytes"] - 4
        elif case == "init_size_mismatch":
            g["initializers"][0]["nbytes"] += 4
        elif case == "absurd_blob":
            doc["blob"]["nbytes"] = 2**37
            doc["blob"]["chunks"] = 2**37 // doc["blob"]["chunk_bytes"]
        elif case == "wrong_types":
            g["nodes"] = "rm -rf /"
        elif case == "unknown_dtype":
            _tensor(doc, "x")["dtype"] = "object"
        elif case == "deep_nesting":
            relu["attrs"]["deep"] = "__DEEP__"
        elif case == "bad_attr_kind":
            relu["attrs"]["x"] = {"kind": "pickle", "value": "cos\nsystem\n(S'ls'\ntR."}
        elif case == "dangling_input":
            relu["inputs"] = ["does_not_exist"]
        elif case == "value_lie":
            _tensor(doc, "x")["value"] = [1, 2]

    if case == "deep_nesting":
        stored = reader.read(good[0])
        doc = copy.deepcopy(stored.doc)
        mutate(doc)
        deep = '{"kind":"graph","value":' * 5000 + "1" + "}" * 5000
        p = _rewrite(good, tmp_path / f"{case}.root",
                     raw_text=_reseal(writer.document_text(doc).replace('"__DEEP__"', deep)))
    else:
        p = _rewrite(good, tmp_path / f"{case}.root", mutate)
    with pytest.raises(sofie_root.ModelLoadError) as info:
        sofie_root.load(p)
    assert str(p) in str(info.value)
    assert isinstance(info.value, (InvalidModelFileError, CorruptFileError))


def test_unsupported_operator_in_file(good, tmp_path) -> None:
    def mutate(doc):
        next(n for n in doc["graph"]["nodes"] if n["op_type"] in ("Relu", "FusedGemm"))["op_type"] = "NoSuchOp"

    with pytest.raises(sofie_root.UnsupportedOperatorError, match="NoSuchOp"):
        sofie_root.load(_rewrite(good, tmp_path / "op.root", mutate))


def test_specialising_models_cannot_be_saved(tmp_path) -> None:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = sofie_root.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(sofie_root.SofieError, match="cannot be saved"):
        model.save(tmp_path / "s.root")
    assert not (tmp_path / "s.root").exists()
