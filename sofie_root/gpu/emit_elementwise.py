"""GPU emission of the element-wise family: unary/binary/variadic operators, Where, Clip, Cast,
FusedElementwise, RoundFloat (half-precision rounding) and BatchNormalization (inference and
training mode).

The operators' own ``emit`` (``sofie_root/ops/elementwise.py``, ``fused.py``) runs unchanged
against :class:`~sofie_root.gpu.codegen.GpuEmitter`, whose ``broadcast`` turns the loop into a
kernel: the C++ expression of each operator exists once, for both backends.
"""

from __future__ import annotations

import numpy as np

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
        if isinstance(self.op, ew._ArrayUnary):
            # the CPU's float32 Sin/Cos/Tan and Exp call host loops over the array (vm::map_trig,
            # vm::exp_n); on the GPU each work item evaluates the per-element expression
            return ew._Unary.emit(self.op, v, e)
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
    """y = (x - mean) / sqrt(var + eps) * scale + B per channel (what the passes did not fold);
    in training mode with the batch's statistics (a block per channel)."""

    inplace_safe = True

    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        from ..ops.normalization import training_mode

        if training_mode(v):
            return self._emit_training(v, e)
        op = lookup("", "BatchNormalization")
        _, ch, inner = op._layout(v)  # type: ignore[union-attr]
        t = v.input(0).dtype.cpp
        eps = e.lit(v.attr("epsilon", 1e-5), FLOAT64)
        c = e.tmp("c")
        body = (f"const std::int64_t {c} = (i / {e.dim(inner)}) % {e.dim(ch)};\n"
                f"const {t} a_ = {t}(double({e.inp(1)}[{c}]) / std::sqrt(double({e.inp(4)}[{c}]) + {eps}));\n"
                f"{e.out()}[i] = ({e.inp(0)}[i] - {t}({e.inp(3)}[{c}])) * a_ + {t}({e.inp(2)}[{c}]);")
        return e.kernel(e.dim(numel(v.input(0).shape)), body)


    @staticmethod
    def _emit_training(v: NodeView, e) -> str:
        """training_mode=1: one block per channel; the batch mean, then the variance (sum of
        squared deviations), by tree reductions in double; then y and the running statistics."""
        from ..ops.normalization import _out_wanted
        from .emit_reduce import tree

        op = lookup("", "BatchNormalization")
        n, ch, inner = op._layout(v)  # type: ignore[union-attr]
        t = v.input(0).dtype.cpp
        eps = e.lit(v.attr("epsilon", 1e-5), FLOAT64)
        mom = float(np.float32(v.attr("momentum", 0.9)))
        cnt, inn, chs = e.dim(n * inner), e.dim(inner), e.dim(ch)
        at = f"{e.inp(0)}[(j_ / {inn} * {chs} + row) * {inn} + j_ % {inn}]"
        loop = f"for (std::int64_t j_ = t; j_ < {cnt}; j_ += SOFIE_BLOCK)"
        body = ["__shared__ double red_[SOFIE_BLOCK];",
                f"SOFIE_FOR_THREADS(t) {{ double s = 0; {loop} s += double({at}); red_[t] = s; }}",
                "SOFIE_BARRIER();", tree("red_", "{a} + {b}"),
                f"const double mu_ = red_[0] / double({cnt});",
                "SOFIE_BARRIER();",
                f"SOFIE_FOR_THREADS(t) {{ double q = 0; {loop} {{ const double c = double({at}) - mu_; q += c * c; }} "
                "red_[t] = q; }",
                "SOFIE_BARRIER();", tree("red_", "{a} + {b}"),
                f"const double var_ = red_[0] / double({cnt});",
                f"const {t} a_ = {t}(double({e.inp(1)}[row]) / std::sqrt(var_ + {eps}));",
                f"const {t} m_ = {t}(mu_), b_ = {t}({e.inp(2)}[row]);",
                f"SOFIE_FOR_THREADS(t) {{ {loop} {{ const std::int64_t k_ = (j_ / {inn} * {chs} + row) * {inn} "
                f"+ j_ % {inn}; {e.out()}[k_] = ({e.inp(0)}[k_] - m_) * a_ + b_; }} }}"]
        stats = [(k, stat, inp) for k, stat, inp in ((1, "mu_", 3), (2, "var_", 4)) if _out_wanted(v, k)]
        if stats:
            body.append("SOFIE_FOR_THREADS(t) { if (t == 0) {")
            for k, stat, inp in stats:
                ot = v.input(inp).dtype.cpp
                body.append(f"   {e.out(k)}[row] = {ot}(double({e.inp(inp)}[row]) * {e.lit(mom, FLOAT64)} "
                            f"+ {stat} * {e.lit(1.0 - mom, FLOAT64)});")
            body.append("} }")
        return e.block_kernel(chs, "\n".join(body))


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
