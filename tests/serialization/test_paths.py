"""Paths and files: names with ':', non-regular files, and the 64-byte alignment rule of SCHEMA.md."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading

import numpy as np
import pytest
from onnx import helper
from sofie_root.serialization import reader, writer
from sofie_root.serialization.errors import InvalidModelFileError, ModelNotFoundError

import sofie_root
from tests.sofie_root.ort_check import make_model, value_info


@pytest.fixture(scope="module")
def small():
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                       [value_info("x", np.float32, ["N", 3])], [value_info("y", np.float32, None)],
                       {"w": np.arange(6, dtype=np.float32).reshape(3, 2) - 2})
    return proto, sofie_root.compile(proto)


def test_an_existing_file_with_a_colon_in_its_name(small, tmp_path) -> None:
    proto, model = small
    path = tmp_path / "a.root:mlp"  # a real file name, not file:object
    model.save(tmp_path / "plain.root", "mlp")
    shutil.copy(tmp_path / "plain.root", path)
    x = np.ones((2, 3), np.float32)
    for loaded in (sofie_root.load(path), sofie_root.compile(path), sofie_root.load(str(path))):
        np.testing.assert_array_equal(loaded(x), model(x))
    # an ONNX file whose name contains ".root:" is an ONNX file
    onnx_path = tmp_path / "x.root:y.onnx"
    onnx_path.write_bytes(proto.SerializeToString())
    np.testing.assert_array_equal(sofie_root.compile(onnx_path)(x), model(x))
    # the file:object syntax still works when the whole path does not exist
    np.testing.assert_array_equal(sofie_root.load(f"{tmp_path / 'plain.root'}:mlp")(x), model(x))


def _returns_within(fn, seconds: float):
    """Run ``fn`` in a thread; the exception it raised (or None), failing if it blocks."""
    box: list = []

    def target():
        try:
            fn()
            box.append(None)
        except BaseException as e:
            box.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the call blocked"
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path) -> None:
    for name in ("m.root", "m.onnx"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        err = _returns_within(lambda f=fifo: sofie_root.load(f) if f.suffix == ".root" else sofie_root.compile(f), 60)
        assert isinstance(err, sofie_root.ModelLoadError) and "not a regular file" in str(err), err


def test_unaligned_weight_offset_is_refused(small, tmp_path) -> None:
    _, model = small
    path = tmp_path / "ok.root"
    model.save(path, "m")
    stored = reader.read(path)
    doc = dict(stored.doc)
    blob = stored.blob + b"\0" * 64
    graph = dict(doc["graph"])
    graph["initializers"] = [dict(i, offset=i["offset"] + 4) for i in graph["initializers"]]
    doc["graph"] = graph
    doc["blob"] = dict(doc["blob"], nbytes=len(blob), chunks=1, sha256=hashlib.sha256(blob).hexdigest())
    text = writer.document_text(doc)  # checksums recomputed: only the alignment is wrong
    import uproot

    bad = tmp_path / "unaligned.root"
    with uproot.recreate(str(bad)) as f:
        writer.write_entry(f, "m", text, blob)
    with pytest.raises(InvalidModelFileError, match="not a multiple of 64"):
        sofie_root.load(bad)
    # the same edit with an aligned shift is read (the check is about alignment only)
    graph["initializers"] = [dict(i, offset=i["offset"] + 60) for i in graph["initializers"]]
    good = tmp_path / "aligned.root"
    with uproot.recreate(str(good)) as f:
        writer.write_entry(f, "m", writer.document_text(doc), blob)
    w = reader.read(good).graph.initializers["w"]
    assert w.shape == (3, 2) and not w.any()  # the zero padding it now points at


def test_missing_and_directory(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such file"):
        sofie_root.load(tmp_path / "nope.root")
    with pytest.raises(ModelNotFoundError, match="directory"):
        reader.read(tmp_path)
