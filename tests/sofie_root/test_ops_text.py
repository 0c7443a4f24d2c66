"""TfIdfVectorizer on integer token ids against onnxruntime and onnx.reference: random pools of
1- to 3-grams, every mode with and without weights, skips, permuted and sparse output columns,
[C] and [B, C] inputs (B symbolic, run at two sizes), int32 and int64; and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.errors import SofieError

from .ort_check import make_model, run_ort, run_reference, value_info


def _pool(rng, sizes=(1, 2, 3), per_size=(5, 6, 4), vocab=7):
    """(pool_int64s, ngram_counts, number of n-grams): distinct n-grams of each size."""
    pool, counts, total = [], [], 0
    for size, k in zip(sizes, per_size):
        counts.append(len(pool))
        seen = set()
        while len(seen) < k:
            seen.add(tuple(int(t) for t in rng.integers(0, vocab, size)))
        for g in sorted(seen, key=lambda _: rng.random()):
            pool += list(g)
        total += k
    return pool, counts, total


def _model(shape, dtype=np.int32, **attrs):
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], name="tfidf", **attrs)
    return make_model([node], [value_info("x", dtype, shape)], [value_info("y", np.float32, None)], opset=9)


def _check(model, x, ort=True, reference=True, compiled=None):
    m = compiled or sofie_root.compile(model)
    (got,) = m.infer(x)
    refs = ([run_reference(model, x)[0]] if reference else []) + ([run_ort(model, x)[0]] if ort else [])
    for r in refs:
        assert got.shape == r.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, r, rtol=1e-6, atol=0)
    return got


CONFIGS = [  # (min_gram_length, max_gram_length, max_skip_count)
    (1, 1, 0), (1, 2, 0), (1, 3, 2), (2, 2, 3), (2, 3, 1), (3, 3, 0), (1, 3, 5),
]


@pytest.mark.parametrize("mode,weighted", [("TF", False), ("IDF", False), ("IDF", True), ("TFIDF", False),
                                           ("TFIDF", True)])
@pytest.mark.parametrize("config", CONFIGS)
def test_tfidf_vs_ort_and_reference(config, mode, weighted) -> None:
    lo, hi, skip = config
    rng = np.random.default_rng(hash((config, mode, weighted)) % 2**32)
    pool, counts, total = _pool(rng)
    indexes = rng.permutation(total).tolist()
    attrs = {"mode": mode, "min_gram_length": lo, "max_gram_length": hi, "max_skip_count": skip,
             "ngram_counts": counts, "ngram_indexes": indexes, "pool_int64s": pool}
    if weighted:
        attrs["weights"] = rng.uniform(0.1, 3.0, total).astype(np.float32).tolist()
    model = _model(["B", 12], **attrs)
    m = None
    for b in (1, 5):
        x = rng.integers(0, 8, (b, 12)).astype(np.int32)  # token 7 is in no n-gram
        # onnxruntime always; onnx.reference fails on IDF/TFIDF without weights and reads the
        # weights by column, not by n-gram (see test_tfidf_weights_follow_the_ngrams)
        _check(model, x, reference=mode == "TF", compiled=m)
        m = m or sofie_root.compile(model)


def test_tfidf_rank1_int64_and_sparse_columns() -> None:
    rng = np.random.default_rng(4)
    pool, counts, total = _pool(rng, sizes=(1, 2), per_size=(4, 5))
    indexes = (rng.permutation(total) * 2 + 1).tolist()  # columns 1, 3, 5, ...: the others stay 0
    model = _model([20], np.int64, mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=1,
                   ngram_counts=counts, ngram_indexes=indexes, pool_int64s=pool)
    got = _check(model, rng.integers(0, 7, 20).astype(np.int64))
    assert got.shape == (2 * total,)


def test_tfidf_large_token_ids() -> None:
    big = [2**40 + 3, -(2**62), 5, 2**40 + 3, 5, -(2**62)]
    model = _model([8], np.int64, mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=0,
                   ngram_counts=[0, 2], ngram_indexes=[0, 1, 2, 3], pool_int64s=big)
    x = np.array([2**40 + 3, 5, -(2**62), 2**40 + 3, 5, 1, 5, -(2**62)], np.int64)
    got = _check(model, x)
    np.testing.assert_array_equal(got, [2, 2, 0, 2])


def test_tfidf_repeated_ngram_counts_in_its_last_column() -> None:
    """A repeated n-gram of the pool: the reference keeps the id of its last occurrence."""
    model = _model([6], mode="TF", min_gram_length=1, max_gram_length=1, max_skip_count=0,
                   ngram_counts=[0], ngram_indexes=[0, 1, 2], pool_int64s=[4, 5, 4])
    got = _check(model, np.array([4, 4, 5, 1, 4, 2], np.int32), ort=False)
    np.testing.assert_array_equal(got, [0, 1, 3])


def test_tfidf_short_rows() -> None:
    """Rows shorter than the shortest n-gram give zeros (and no read past the row)."""
    model = _model(["B", 2], mode="TF", min_gram_length=3, max_gram_length=3, max_skip_count=2,
                   ngram_counts=[0, 0, 0], ngram_indexes=[0], pool_int64s=[1, 1, 1])
    got = _check(model, np.ones((3, 2), np.int32))
    assert not got.any()


def test_tfidf_refusals() -> None:
    base = {"mode": "TF", "min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0, "ngram_counts": [0],
            "ngram_indexes": [0, 1], "pool_int64s": [3, 4]}
    cases = [
        (dict(base, pool_int64s=None, pool_strings=["a", "b"]), "string"),
        (dict(base, mode="BM25"), "mode"),
        (dict(base, min_gram_length=2), "min_gram_length"),
        (dict(base, ngram_indexes=[0]), "ngram_indexes"),
        (dict(base, max_gram_length=2, ngram_counts=[0, 1]), "whole number"),
        (dict(base, mode="IDF", weights=[1.0]), "weights has 1 entries"),
        (dict(base, ngram_counts=[0, 5]), "ngram_counts"),
    ]
    for attrs, match in cases:
        attrs = {k: v for k, v in attrs.items() if v is not None}
        with pytest.raises(SofieError, match=match):
            sofie_root.compile(_model([6], **attrs))
    with pytest.raises(SofieError, match="element type"):
        sofie_root.compile(_model([6], np.float32, **base))
    with pytest.raises(SofieError, match=r"\[C\] or \[B, C\]"):
        sofie_root.compile(_model([2, 3, 4], **base))


@pytest.mark.parametrize("mode", ["IDF", "TFIDF"])
def test_tfidf_weights_follow_the_ngrams(mode) -> None:
    """weights[i] is the weight of the pool's i-th n-gram, in its column ngram_indexes[i] (the
    specification and onnxruntime); onnx.reference reads weights[column], the same in pool order."""
    attrs = {"mode": mode, "min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0, "ngram_counts": [0],
             "pool_int64s": [1, 2, 3, 4], "weights": [10.0, 20.0, 30.0, 40.0]}
    x = np.array([1, 1, 2, 5], np.int32)
    permuted = _model([4], ngram_indexes=[3, 2, 1, 0], **attrs)
    got = _check(permuted, x, reference=False)
    np.testing.assert_array_equal(got, [0, 0, 20, 20] if mode == "TFIDF" else [0, 0, 20, 10])
    _check(_model([4], ngram_indexes=[0, 1, 2, 3], **attrs), x)  # in pool order: every runtime agrees


def test_tfidf_constant_input_is_not_folded_with_the_reference() -> None:
    """A constant input gives the answer of the run-time code (weights by n-gram), not the
    reference's (which constant folding would use)."""
    attrs = {"mode": "IDF", "min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0, "ngram_counts": [0],
             "pool_int64s": [1, 2, 3, 4], "weights": [10.0, 20.0, 30.0, 40.0], "ngram_indexes": [3, 2, 1, 0]}
    nodes = [helper.make_node("TfIdfVectorizer", ["c"], ["t"], **attrs), helper.make_node("Add", ["t", "z"], ["y"])]
    model = make_model(nodes, [value_info("z", np.float32, [4])], [value_info("y", np.float32, None)],
                       {"c": np.array([1, 1, 2, 5], np.int32)}, opset=9)
    z = np.zeros(4, np.float32)
    (got,) = sofie_root.compile(model).infer(z)
    np.testing.assert_array_equal(got, run_ort(model, z)[0])


@pytest.mark.parametrize("vocab", [1000, 10**9])
def test_tfidf_large_pool(vocab) -> None:
    """Hundreds of n-grams (the hash table's probing; a dense vocabulary also takes the direct
    table of first tokens, a sparse one not) on rows drawn from a small part of the vocabulary."""
    rng = np.random.default_rng(vocab % 97)
    words = rng.choice(vocab, 300, replace=False)
    pool, counts, total = _pool(rng, per_size=(200, 300, 100), vocab=300)  # distinct n-grams of word numbers
    attrs = {"mode": "TFIDF", "min_gram_length": 1, "max_gram_length": 3, "max_skip_count": 2,
             "ngram_counts": counts, "ngram_indexes": rng.permutation(total).tolist(),
             "pool_int64s": words[pool].tolist(), "weights": rng.uniform(0.1, 2.0, total).tolist()}
    model = _model(["B", 40], np.int64, **attrs)
    x = rng.choice(words, (16, 40)).astype(np.int64)
    got = _check(model, x, reference=False)
    assert got.sum() > 0


def test_tfidf_symbolic_row_length() -> None:
    """Rows of a length known at run time only ([B, T]), at two lengths and batch sizes."""
    rng = np.random.default_rng(12)
    pool, counts, total = _pool(rng, sizes=(1, 2), per_size=(4, 6))
    model = _model(["B", "T"], np.int64, mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=1,
                   ngram_counts=counts, ngram_indexes=list(range(total)), pool_int64s=pool)
    m = sofie_root.compile(model)
    for shape in ((2, 9), (5, 3), (1, 1)):
        _check(model, rng.integers(0, 7, shape).astype(np.int64), compiled=m)
