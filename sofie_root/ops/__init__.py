"""Operators, one module per family; importing this package fills the registry."""

from __future__ import annotations

from . import (  # noqa: F401  (imported for registration)
    attention,
    control,
    conv,
    einsum,
    elementwise,
    functions,
    fused,
    image,
    linalg,
    loss,
    ml,
    movement,
    normalization,
    quantize,
    random,
    reduce,
    rnn,
    rotary,
    sequence,
    shape,
    signal,
    text,
    training,
)
from .base import REGISTRY, NodeView, Operator, OutInfo, lookup, register

__all__ = ["REGISTRY", "NodeView", "Operator", "OutInfo", "lookup", "register"]
