"""GPU emission of the element-wise family: unary/binary/variadic operators, Where, Clip, Cast,
FusedElementwise, RoundFloat (half-precision rounding) and BatchNormalization (inference).

The operators' own ``emit`` (``sofie_root/ops/elementwise.py``, ``fused.py``) runs unchanged
against :class:`~sofie_root.gpu.codegen.GpuEmitter`, whose ``broadcast`` turns the loop into a
kernel: the C++ expression of each operator exists once, for both backends.
"""

from __future__ import annotations

from ..ir.dims import numel
from ..ir.dtypes import FLOAT64
from ..ops import elementwise as ew
from ..ops.base import NodeView, Operator, lookup
from ..ops.fused import FusedElementwise


class ReuseBroadcast:
    """A GPU emitter running the operator's CPU ``emit``, which only calls ``e.broadcast``."""

    inplace_safe = True  # work item i reads the inputs at i's (broadcast) index, then writes y[i]

    def __init__(self, op: Operator):
        self.op = op

    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        if isinstance(self.op, ew.Clip) and v.opset >= 11 and any(
                v.has_input(k) and v.const(k) is None for k in (1, 2)):
            return _clip_runtime(v, e)
        return self.op.emit(v, e)


def _clip_runtime(v: NodeView, e) -> str:
    """Clip with bounds computed at run time: the kernel reads them from the device (the CPU
    emission reads them on the host, which device memory does not allow)."""
    dt = v.input(0).dtype
    r = f"{e.inp(0)}[i]"
    lines = [f"{dt.cpp} r_ = {r};"]
    for k, cmp in ((1, "<"), (2, ">")):
        if not v.has_input(k):
            continue
        c = v.const(k)
        bound = e.lit(c.reshape(-1)[0].item(), dt) if c is not None else f"{e.inp(k)}[0]"
        lines.append(f"{{ const {dt.cpp} b_ = {bound}; r_ = r_ {cmp} b_ ? b_ : r_; }}")
    lines.append(f"{e.out()}[i] = r_;")
    return e.kernel(e.size_out(0), "\n".join(lines))


def _fused_steps(v: NodeView) -> list:
    if v.node.op_type != "FusedElementwise":
        return []
    from ..ops.fused import decode_steps

    return decode_steps(v)


class BatchNormalization:
    """y = (x - mean) / sqrt(var + eps) * scale + B per channel (what the passes did not fold)."""

    inplace_safe = True

    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        op = lookup("", "BatchNormalization")
        _, ch, inner = op._layout(v)  # type: ignore[union-attr]
        t = v.input(0).dtype.cpp
        eps = e.lit(v.attr("epsilon", 1e-5), FLOAT64)
        c = e.tmp("c")
        body = (f"const std::int64_t {c} = (i / {e.dim(inner)}) % {e.dim(ch)};\n"
                f"const {t} a_ = {t}(double({e.inp(1)}[{c}]) / std::sqrt(double({e.inp(4)}[{c}]) + {eps}));\n"
                f"{e.out()}[i] = ({e.inp(0)}[i] - {t}({e.inp(3)}[{c}])) * a_ + {t}({e.inp(2)}[{c}]);")
        return e.kernel(e.dim(numel(v.input(0).shape)), body)


def emitters() -> dict:
    out: dict = {}
    from ..ops.base import REGISTRY

    for (dom, name), op in REGISTRY.items():
        if dom:
            continue
        if isinstance(op, (ew._Unary, ew._Binary, ew._Variadic, ew.Where, ew.Clip)) or type(op) in (ew.Cast,
                                                                                                 ew.CastLike):
            out[("", name)] = ReuseBroadcast(op)
    out[("sofie", "FusedElementwise")] = ReuseBroadcast(lookup("sofie", "FusedElementwise") or FusedElementwise())
    # float16/bfloat16 models run in float32 and round where the model casts to a half type
    out[("sofie", "RoundFloat")] = ReuseBroadcast(lookup("sofie", "RoundFloat") or ew.RoundFloat())
    out[("", "BatchNormalization")] = BatchNormalization()
    return out
