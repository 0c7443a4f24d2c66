"""The per-operator benchmark's cases (benchmarks/ops.py) are valid single-node ONNX models whose
inputs have the declared shapes at both batch sizes; no timing and no compiling here (the
benchmark itself compares every case with onnxruntime before timing it)."""

from __future__ import annotations

import numpy as np
import onnx

from benchmarks import ops


def test_cases_are_valid_models() -> None:
    cases = ops.cases()
    assert len({c.label for c in cases}) == len(cases), "case labels are unique"
    for case in cases:
        proto = case.model()
        # strict inference checks the node against its schema: attributes, input count and types
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        for batch in case.batches:
            arrays = case.arrays(batch, np.random.default_rng(0))
            for a, (_, shape, _) in zip(arrays, case.inputs):
                assert a.shape == tuple(batch if d == "N" else d for d in shape)


def test_masked_softmax_input_has_a_padding_block() -> None:
    x = ops._values("masked", (2, 4, 40), np.random.default_rng(0))
    assert (x[..., 24:] == -1e9).all() and (x[..., :24] > -100).all()


def test_random_outputs_compared_by_distribution() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(4096).astype(np.float32), rng.standard_normal(4096).astype(np.float32)
    assert ops._same_distribution(a, b)
    assert not ops._same_distribution(a, b + 0.5)  # mean off by 32 standard errors
    assert not ops._same_distribution(a, 1.5 * b)  # deviation off
    assert not ops._same_distribution(a, b.astype(np.float64))  # dtype
    assert not ops._same_distribution(a, b[:100])  # shape


def test_every_float_operator_has_a_case_or_a_reason() -> None:
    """No registered operator is left as 'no case yet': each has a case (multi-node cases count
    every operator they run) or a reason in NOT_COVERED."""
    import sofie_root

    covered = ops._covered_ops(ops.cases())
    missing = sorted(set(sofie_root.supported_ops()) - covered - set(ops.NOT_COVERED))
    assert not missing, missing
