"""Graph passes: pure functions Graph -> Graph, each switchable (see ``run_passes``)."""

from __future__ import annotations

from collections.abc import Iterable

from ..ir.graph import Graph
from .dce import eliminate_dead_code
from .layout import pretranspose_gemm_weights

PASSES = {
    "dce": eliminate_dead_code,
    "gemm_pretranspose": pretranspose_gemm_weights,
}

DEFAULT = ("dce", "gemm_pretranspose")


def run_passes(graph: Graph, names: Iterable[str] | None = None) -> Graph:
    """Apply the named passes in order (the default pipeline when ``names`` is None)."""
    for name in DEFAULT if names is None else names:
        try:
            fn = PASSES[name]
        except KeyError:
            raise ValueError(f"unknown pass {name!r}; known: {sorted(PASSES)}") from None
        graph = fn(graph)
    return graph
