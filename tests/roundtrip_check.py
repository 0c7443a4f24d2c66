"""Every model the test suite compiles goes through the .root format.

``tests/conftest.py`` wraps :class:`sofie_root.Model` construction with :func:`check_model`: once a
model has compiled, its optimised graph is encoded exactly as :meth:`Model.save` would store it,
decoded with every check the reader makes (``serialization.reader.check_document``), and the
decoded graph must be the same graph (names, nodes, attributes, shapes, compile-time values), with
bit-identical weights, the same weight blob and the same generated C++ source text. Nothing is
recompiled, so the check costs milliseconds per model; ``tests/serialization/test_roundtrip_all.py``
compiles a representative subset twice (saved to a file and loaded back) and compares outputs bit
for bit.

``SOFIE_ROUNDTRIP_CHECK=0`` turns the wrapper off (to time a test without it).
"""

from __future__ import annotations

import os

import numpy as np

#: models checked and the time spent, reported at the end of the session
STATS = {"checked": 0, "seconds": 0.0}


def enabled() -> bool:
    return os.environ.get("SOFIE_ROUNDTRIP_CHECK", "1") != "0"


def check_model(model) -> None:
    """Raise AssertionError if ``model`` (compiled without profiling code) does not survive an
    in-memory save/load of its IR."""
    import time

    from sofie_root.serialization.reader import check_document
    from sofie_root.serialization.writer import build_document

    from sofie_root.codegen.emitter import generate
    from tests.serialization.helpers import assert_graphs_equal

    t0 = time.perf_counter()
    graph = model.graph
    gen = model._generated
    text, blob = build_document(graph, gen, "roundtrip_check", model.hash)
    back = check_document(text, blob, "<round-trip check>")
    assert_graphs_equal(graph, back, f"graph {graph.name!r} after a round trip through the .root format")
    again = generate(back, gen.namespace)
    assert again.source == gen.source, (f"graph {graph.name!r}: the C++ regenerated from the stored IR "
                                        "differs from the original")
    blob_back = again.weight_blob(back)
    assert np.asarray(blob_back).tobytes() == np.asarray(model._blob).tobytes(), \
        f"graph {graph.name!r}: the session's weight blob differs after a round trip"
    STATS["checked"] += 1
    STATS["seconds"] += time.perf_counter() - t0
