"""Einsum against onnxruntime (and numpy.einsum for the dtypes onnxruntime lacks)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.errors import SofieError, UnsupportedOperatorError

from .ort_check import assert_matches_ort, make_model, value_info

CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),                       # matmul
    ("ij,kj->ik", [(3, 4), (5, 4)]),                       # A B^T
    ("ji,jk->ik", [(4, 3), (4, 5)]),                       # A^T B
    ("ji,kj->ik", [(4, 3), (5, 4)]),                       # A^T B^T
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),              # batch matmul
    ("bij,bjk->bki", [(2, 3, 4), (2, 4, 5)]),              # batch matmul, transposed output
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),     # attention scores
    ("ij->ji", [(3, 4)]),                                  # transpose
    ("ijk->kji", [(2, 3, 4)]),
    ("ii->i", [(4, 4)]),                                   # diagonal
    ("ii", [(4, 4)]),                                      # trace (implicit output)
    ("iij->j", [(3, 3, 2)]),
    ("ij->", [(3, 4)]),                                    # full reduction
    ("ij->i", [(3, 4)]),                                   # row sums
    ("i,i", [(5,), (5,)]),                                 # dot product
    ("i,j->ij", [(3,), (4,)]),                             # outer product
    ("i,jk", [(2,), (3, 4)]),                              # implicit outer product
    ("ij,ij->ij", [(3, 4), (3, 4)]),                       # Hadamard
    ("bi,bi->b", [(3, 4), (3, 4)]),                        # batched dot
    ("ab,b", [(3, 4), (4,)]),                              # matrix-vector, implicit
    ("...ij,...jk->...ik", [(2, 3, 4), (1, 4, 5)]),        # ellipsis with broadcasting
    ("...ij,...jk", [(2, 2, 3, 4), (2, 2, 4, 5)]),         # ellipsis, implicit output
    ("a...,a...->...", [(3, 2, 2), (3, 2, 1)]),
    ("...ii->...i", [(2, 3, 3)]),                          # batched diagonal
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 2)]),       # three operands
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),        # bilinear
    ("ijkl,jl->ik", [(2, 3, 4, 5), (3, 5)]),
    ("BIJ,BJK->BIK", [(2, 3, 4), (2, 4, 5)]),              # upper-case labels
    (" ij , jk -> ik ", [(3, 4), (4, 5)]),                 # spaces
]


def _model(eq, shapes, dtype, opset=12):
    names = [f"x{k}" for k in range(len(shapes))]
    return make_model([helper.make_node("Einsum", names, ["y"], equation=eq)],
                      [value_info(n, dtype, s) for n, s in zip(names, shapes)], [value_info("y", dtype, None)],
                      opset=opset)


def _inputs(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 3).astype(dtype) for s in shapes]


@pytest.mark.parametrize("eq,shapes", CASES, ids=[c[0].replace(" ", "") for c in CASES])
def test_equations_float32(eq, shapes):
    xs = _inputs(shapes, np.float32)
    assert_matches_ort(_model(eq, shapes, np.float32), *xs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eq,shapes", CASES[::3], ids=[c[0].replace(" ", "") for c in CASES[::3]])
@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64])
def test_other_dtypes(eq, shapes, dtype):
    xs = _inputs(shapes, dtype)
    got = sofie_root.compile(_model(eq, shapes, dtype)).infer(*xs)[0]
    ref = np.einsum(eq.replace(" ", ""), *xs)
    assert got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_int64_matches_ort():
    xs = _inputs([(2, 3, 4), (2, 4, 5)], np.int64)
    assert_matches_ort(_model("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], np.int64), *xs)


@pytest.mark.parametrize("eq,a,b", [
    ("bij,jk->bik", ("N", 3, 4), (4, 5)),
    ("bij,bjk->bik", ("N", 3, 4), ("N", 4, 5)),
    ("bi,bi->b", ("N", 4), ("N", 4)),
    ("...ij->...ji", ("N", 3, 4), None),
])
def test_symbolic_batch(eq, a, b):
    shapes = [a] + ([b] if b else [])
    model = _model(eq, shapes, np.float32)
    m = sofie_root.compile(model)
    for n in (2, 5):
        concrete = [tuple(n if d == "N" else d for d in s) for s in shapes]
        assert_matches_ort(model, *_inputs(concrete, np.float32, seed=n), compiled=m, rtol=1e-5, atol=1e-5)


def test_mismatched_symbolic_dims_raise_at_run_time():
    model = _model("ij,jk->ik", [(3, "K"), ("K2", 5)], np.float32)
    m = sofie_root.compile(model)
    m.infer(*_inputs([(3, 4), (4, 5)], np.float32))
    with pytest.raises(Exception, match="dimensions"):
        m.infer(*_inputs([(3, 4), (6, 5)], np.float32))


def test_gemm_path_used_for_matmul_patterns():
    src = sofie_root.compile(_model("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)], np.float32)).source
    assert "sofie_rt::gemm" in src
    src = sofie_root.compile(_model("ii->i", [(4, 4)], np.float32)).source
    assert "sofie_rt::gemm" not in src


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(3, 4), (5, 6)]),      # size mismatch
    ("ij->ii", [(3, 3)]),                # repeated output label
    ("ij->k", [(3, 3)]),                 # unknown output label
    ("ijk", [(3, 3)]),                   # rank mismatch
    ("i1", [(3, 3)]),                    # bad character
])
def test_invalid_equations(eq, shapes):
    with pytest.raises((UnsupportedOperatorError, SofieError)):
        sofie_root.compile(_model(eq, shapes, np.float32))
