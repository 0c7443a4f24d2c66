"""Shared fixtures of the serialization tests: the end-to-end HEP models exported once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hep_onnx(tmp_path_factory):
    """name -> path of the exported ONNX file of each end-to-end model (benchmarks/hep_models.py)."""
    from benchmarks import hep_models

    out = {}
    for name in sorted(hep_models.MODELS):
        path = tmp_path_factory.mktemp(f"onnx_{name}") / f"{name}.onnx"
        hep_models.export(name, path)
        out[name] = path
    return out
