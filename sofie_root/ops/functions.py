"""Operators the ONNX spec defines as functions of other operators, compiled through that body.

``onnx.defs`` holds a function body for these operators (for some built for the node's
attributes and input types); the ONNX frontend replaces each such node by its body
(``frontends/functions.py``), so they are exactly as supported as the operators of their body,
and follow the spec by construction. A class here only declares the operator.
"""

from __future__ import annotations

from .base import NodeView, Operator, register


class _FunctionOp(Operator):
    """An operator compiled through its ONNX function body (never reaches code generation)."""

    expand_function = True

    def infer(self, v: NodeView):
        raise v.fail("is compiled through its ONNX function body; it cannot appear in a graph itself")


@register
class SwiGLU(_FunctionOp):
    """ONNX SwiGLU (opset 28): Swish(A, alpha) * B."""

    op_type = "SwiGLU"


@register
class CausalConvWithState(_FunctionOp):
    """ONNX CausalConvWithState (opset 27): causal depthwise 1-D convolution carrying its state."""

    op_type = "CausalConvWithState"



