"""Graph passes: pure functions Graph -> Graph, each switchable (see ``run_passes``)."""

from __future__ import annotations

from collections.abc import Iterable

from ..ir.graph import Graph
from .batchnorm import fold_batchnorm
from .constant_folding import fold_constants
from .dce import eliminate_dead_code
from .fuse_activation import fuse_conv_activation, fuse_gemm_activation
from .fuse_attention import fuse_attention
from .fuse_elementwise import fuse_elementwise
from .layout import pack_dense_weights, pretranspose_gemm_weights
from .sequences import resolve_sequences
from .transpose import eliminate_transposes

PASSES = {
    "fold_constants": fold_constants,
    "resolve_sequences": resolve_sequences,
    "eliminate_transposes": eliminate_transposes,
    "fold_batchnorm": fold_batchnorm,
    "dce": eliminate_dead_code,
    "gemm_pretranspose": pretranspose_gemm_weights,
    "fuse_gemm_activation": fuse_gemm_activation,
    "fuse_conv_activation": fuse_conv_activation,
    "fuse_elementwise": fuse_elementwise,
    "fuse_attention": fuse_attention,
    "pack_dense_weights": pack_dense_weights,
}

#: passes whose fused nodes only the CPU code generator runs (the GPU backend skips them)
CPU_ONLY = frozenset({"fuse_attention", "pack_dense_weights"})

# Sequence positions are constants once folded; BatchNorm folds before the activation fusions
# look at what follows a product; weights are pre-transposed before FusedGemm hides the Gemm
# from that pass; weights are packed for the dense kernel last, on the fused nodes; the attention block is matched on plain MatMul/Mul/Add nodes, before the other
# fusions take them
DEFAULT = ("fold_constants", "resolve_sequences", "eliminate_transposes", "fold_batchnorm", "dce", "gemm_pretranspose",
           "fuse_attention", "fuse_gemm_activation", "fuse_conv_activation", "fuse_elementwise", "dce",
           "pack_dense_weights")


def run_passes(graph: Graph, names: Iterable[str] | None = None) -> Graph:
    """Apply the named passes in order (the default pipeline when ``names`` is None)."""
    for name in DEFAULT if names is None else names:
        try:
            fn = PASSES[name]
        except KeyError:
            raise ValueError(f"unknown pass {name!r}; known: {sorted(PASSES)}") from None
        graph = fn(graph)
    return graph
