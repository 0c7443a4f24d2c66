"""The GPU backend's operator table: ``(domain, op_type) -> emitter``, one module per family.

An emitter has ``emit(view, e)`` (host code launching kernels, see
:class:`~sofie_root.gpu.codegen.GpuEmitter`), optionally ``check(view)`` (why this node cannot
run on the GPU, or None), ``workspace(view)`` (scratch buffers planned in the device arena) and
``inplace_safe`` (output 0 may overwrite a dying input: each work item reads its own element
before writing it). Operators missing here are refused at compile time with the list.
"""

from __future__ import annotations

from . import emit_conv, emit_elementwise, emit_linalg, emit_movement, emit_reduce, emit_rnn

GPU_EMITTERS: dict[tuple[str, str], object] = {}
for _family in (emit_elementwise, emit_linalg, emit_conv, emit_movement, emit_reduce, emit_rnn):
    GPU_EMITTERS.update(_family.emitters())


def gpu_ops() -> list[str]:
    """Sorted names of the operators the GPU backend runs (internal fused ones as ``sofie::Op``)."""
    return sorted(op if not dom else f"{dom}::{op}" for dom, op in GPU_EMITTERS)
