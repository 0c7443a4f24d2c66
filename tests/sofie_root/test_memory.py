"""Arena planning: live tensors never overlap, for any symbol value, and memory is reused."""

from __future__ import annotations

import numpy as np
import pytest

from sofie_root.codegen import memory
from sofie_root.ir import Dim

N = Dim.symbol("N")


def _check_no_overlap(requests, groups, values) -> None:
    spans = {}
    base = 0
    for g in groups:
        scale = g.scale.evaluate(values) if isinstance(g.scale, Dim) else g.scale
        for b in g.blocks:
            start = base + b.offset * scale
            assert start % memory.ALIGN == 0
            spans[b.name] = (start, start + b.units * scale, b.start, b.end)
        base += (g.units * scale + memory.ALIGN - 1) // memory.ALIGN * memory.ALIGN
    for name, nbytes, _, _ in requests:
        n = nbytes.evaluate(values) if isinstance(nbytes, Dim) else nbytes
        s, e, _, _ = spans[name]
        assert e - s >= n
    items = list(spans.items())
    for i, (na, (sa, ea, ta0, ta1)) in enumerate(items):
        for nb, (sb, eb, tb0, tb1) in items[i + 1:]:
            if ta0 <= tb1 and tb0 <= ta1:  # lifetimes overlap
                assert ea <= sb or eb <= sa, f"{na} and {nb} overlap"


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_have_no_overlap(seed: int) -> None:
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(30):
        start = int(rng.integers(0, 20))
        end = start + int(rng.integers(0, 6))
        size = int(rng.integers(1, 5000))
        kind = rng.integers(0, 3)
        nbytes = size if kind == 0 else (size * N if kind == 1 else size * N + 4)
        requests.append((f"t{i}", nbytes, start, end))
    groups = memory.plan(requests)
    for n in (1, 3, 64):
        _check_no_overlap(requests, groups, {"N": n})


def test_chain_reuses_memory() -> None:
    # a chain of equal-size tensors, each live for two steps, needs two slots, not ten
    requests = [(f"t{i}", 1024 * N, i, i + 1) for i in range(10)]
    groups = memory.plan(requests)
    assert len(groups) == 1 and groups[0].units == 2 * 1024
