"""Writes v1_gemm_relu.root: a tiny model in format version 1, the first on-disk layout, whose
document differs from version 2 in that every dimension is a string ("3", "N"), there are no
column hints and the document carries no checksum of itself. Committed as a fixture so that
reading old files stays tested; regenerate only if the fixture is lost:

    .venv/bin/python tests/serialization/data/make_v1_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import uproot
from onnx import TensorProto, helper, numpy_helper
from sofie_root.serialization import writer

import sofie_root

HERE = Path(__file__).resolve().parent
W = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)


def v1_document(doc: dict) -> str:
    def dims(g: dict) -> None:
        for key in ("tensors", "outer_scope"):
            for t in g.get(key, []):
                t["shape"] = [str(d) for d in t["shape"]]
        for n in g["nodes"]:
            for a in n["attrs"].values():
                if a["kind"] == "graph":
                    dims(a["value"])

    doc = {k: v for k, v in doc.items() if k != "sha256"}
    doc["format_version"] = 1
    dims(doc["graph"])
    doc["model"].pop("column_hints", None)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def main() -> None:
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "gemm_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    model = sofie_root.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                                 producer_name="sofie_root fixture"))
    text, blob = writer.build_document(model.graph, model._generated, "gemm_relu", model.hash)
    with uproot.recreate(HERE / "v1_gemm_relu.root", compression=uproot.ZSTD(5)) as f:
        writer.write_entry(f, "gemm_relu", v1_document(json.loads(text)), blob)


if __name__ == "__main__":
    main()
