"""Optimizer update rules of the ONNX training domain (``ai.onnx.preview.training``, version 1):
Adagrad, Adam and Momentum (standard and Nesterov).

Each node updates any number of tensors at once: inputs ``R`` (learning rate, a float scalar),
``T`` (the update count, an int64 scalar), then per optimized tensor ``X``, its gradient ``G`` and
its state (``H`` for Adagrad, ``V`` for Momentum, ``V`` and ``H`` for Adam), each group listed
tensor by tensor (``X1, X2, G1, G2, ...``); outputs are the new tensors in the same order. Every
tensor of a group has the shape of its ``X`` (no broadcasting).

The scalar factors (the decayed learning rate, Adam's bias correction ``sqrt(1 - beta^T) /
(1 - alpha^T)``) are computed once per run in double; the element-wise updates follow
``onnx.reference`` (the state in the tensor's type, the final step of ``X`` in double, as the
reference's float64 learning-rate factor makes it).
"""

from __future__ import annotations

from ..ir.dtypes import FLOAT64
from .base import NodeView, Operator, OutInfo, register

DOMAIN = "ai.onnx.preview.training"
_FLOATS = ("float32", "float64")


class _Optimizer(Operator):
    """Common part: input layout (R, T, then ``groups`` lists of n tensors), checks, shapes."""

    domain = DOMAIN
    dtypes = _FLOATS
    #: per optimized tensor: how many inputs (X, G and its states) and outputs (X and its states)
    n_in = 3
    n_out = 2

    def _n(self, v: NodeView) -> int:
        k = len(v.node.inputs) - 2
        if k < self.n_in or k % self.n_in:
            raise v.fail(f"takes R, T and {self.n_in} inputs per optimized tensor, got {len(v.node.inputs)} inputs")
        return k // self.n_in

    def check(self, v: NodeView) -> str | None:
        if len(v.node.inputs) < 2 + self.n_in:
            return f"needs R, T and {self.n_in} inputs per optimized tensor"
        if not (v.has_input(0) and v.has_input(1)):
            return "inputs R and T are required"
        if v.input(0).dtype.name not in _FLOATS:
            return f"R must be float or double, got {v.input(0).dtype.name}"
        if v.input(1).dtype.name != "int64":
            return f"T must be int64, got {v.input(1).dtype.name}"
        data = [v.inputs[k] for k in range(2, len(v.inputs))]
        if any(d is None for d in data):
            return "every optimized tensor, gradient and state input is required"
        kinds = {d.dtype.name for d in data}
        if not kinds <= set(_FLOATS) or len(kinds) != 1:
            return f"X, G and the states must all be float or all double, got {sorted(kinds)}"
        return None

    def _groups(self, v: NodeView) -> list[list[int]]:
        """Input indices per optimized tensor: [X, G, states...]."""
        n = self._n(v)
        for i, what in ((0, "R"), (1, "T")):
            size = v.input(i).size
            if isinstance(size, int) and size != 1:
                raise v.fail(f"{what} must be a scalar, got {v.input(i)}")
        if len(v.node.outputs) != self.n_out * n:
            raise v.fail(f"{n} optimized tensor(s) give {self.n_out * n} outputs, the node has {len(v.node.outputs)}")
        groups = [[2 + j * n + i for j in range(self.n_in)] for i in range(n)]
        for g in groups:
            x = v.input(g[0])
            for k in g[1:]:
                if tuple(v.input(k).shape) != tuple(x.shape):
                    raise v.fail(f"input {k} {v.input(k)} must have the shape of X {x}")
        return groups

    def infer(self, v: NodeView) -> list[OutInfo]:
        groups = self._groups(v)
        n = len(groups)
        outs: list[OutInfo] = [None] * (self.n_out * n)  # type: ignore[list-item]
        for i, g in enumerate(groups):
            x = v.input(g[0])
            for j in range(self.n_out):
                outs[j * n + i] = OutInfo(x.dtype, x.shape)
        return outs

    def _loops(self, v: NodeView, e, pre: list[str], body) -> str:
        """``pre`` (scalar set-up) then one loop per optimized tensor; ``body(t, ins, outs, k)``
        gives the loop body from the element type, the input and output element expressions."""
        groups = self._groups(v)
        n = len(groups)
        lines = list(pre)
        for i, g in enumerate(groups):
            t = v.input(g[0]).dtype.cpp
            k = e.tmp("k")
            ins = [f"{e.inp(j)}[{k}]" for j in g]
            outs = [f"{e.out(j * n + i)}[{k}]" if v.node.outputs[j * n + i] else None for j in range(self.n_out)]
            lines.append(f"for (std::int64_t {k} = 0; {k} < {e.size_in(g[0])}; ++{k}) {{")
            lines.extend("   " + s for s in body(t, ins, outs, e.tmp))
            lines.append("}")
        return "\n".join(lines)


def _store(out: str | None, value: str) -> list[str]:
    return [f"{out} = {value};"] if out else []


@register
class Adagrad(_Optimizer):
    """ai.onnx.preview.training Adagrad: ``X -= r / (1 + T * decay_factor) * G' / (sqrt(H') +
    epsilon)`` with ``G' = norm_coefficient * X + G`` and ``H' = H + G'^2``; outputs X', H'."""

    op_type = "Adagrad"

    def emit(self, v: NodeView, e) -> str:
        def d(name: str, default: float) -> str:
            return e.lit(float(v.attr(name, default)), FLOAT64)

        r = e.tmp("r")
        pre = [f"const double {r} = double({e.inp(0)}[0]) / (1.0 + double({e.inp(1)}[0]) * {d('decay_factor', 0.0)});"]
        norm, eps = d("norm_coefficient", 0.0), d("epsilon", 1e-6)

        def body(t, ins, outs, tmp):
            x, g, h = ins
            gr, hn = tmp("g"), tmp("h")
            return [f"const {t} {gr} = {t}({norm}) * {x} + {g};",
                    f"const {t} {hn} = {h} + {gr} * {gr};",
                    *_store(outs[0], f"{t}(double({x}) - {r} * double({gr}) / double(std::sqrt({hn}) + {t}({eps})))"),
                    *_store(outs[1], hn)]

        return self._loops(v, e, pre, body)


@register
class Momentum(_Optimizer):
    """ai.onnx.preview.training Momentum: ``V' = alpha * V + beta' * G'`` (``beta' = 1`` at T = 0,
    ``G' = norm_coefficient * X + G``); ``X' = X - r * V'`` (mode "standard") or ``X - r * (G' +
    alpha * V')`` (mode "nesterov"); outputs X', V'."""

    op_type = "Momentum"

    def check(self, v: NodeView) -> str | None:
        missing = [a for a in ("alpha", "beta", "mode", "norm_coefficient") if v.attr(a) is None]
        if missing:
            return f"the required attribute(s) {', '.join(missing)} are missing"
        mode = v.attr("mode")
        if mode not in ("standard", "nesterov"):
            return f"mode must be 'standard' or 'nesterov', got {mode!r}"
        return super().check(v)

    def emit(self, v: NodeView, e) -> str:
        alpha, beta = float(v.attr("alpha")), float(v.attr("beta"))
        nesterov = v.attr("mode") == "nesterov"
        r, b = e.tmp("r"), e.tmp("beta")
        pre = [f"const double {r} = double({e.inp(0)}[0]);",
               f"const double {b} = {e.inp(1)}[0] > 0 ? {e.lit(beta, FLOAT64)} : 1.0;"]
        norm = e.lit(float(v.attr("norm_coefficient")), FLOAT64)

        def body(t, ins, outs, tmp):
            x, g, vv = ins
            gr, vn = tmp("g"), tmp("v")
            step = f"(double({gr}) + {e.lit(alpha, FLOAT64)} * double({vn}))" if nesterov else f"double({vn})"
            return [f"const {t} {gr} = {t}({norm}) * {x} + {g};",
                    f"const {t} {vn} = {t}({e.lit(alpha, FLOAT64)}) * {vv} + {t}({b}) * {gr};",
                    *_store(outs[0], f"{t}(double({x}) - {r} * {step})"),
                    *_store(outs[1], vn)]

        return self._loops(v, e, pre, body)


@register
class Adam(_Optimizer):
    """ai.onnx.preview.training Adam: ``V' = alpha * V + (1 - alpha) * G'``, ``H' = beta * H +
    (1 - beta) * G'^2``, ``X' = (1 - norm_coefficient_post) * (X - r' * V' / (sqrt(H') +
    epsilon))`` with ``r' = r * sqrt(1 - beta^T) / (1 - alpha^T)`` for T > 0 (``r`` at T = 0);
    outputs X', V', H'."""

    op_type = "Adam"
    n_in = 4
    n_out = 3

    def emit(self, v: NodeView, e) -> str:
        alpha, beta = float(v.attr("alpha", 0.9)), float(v.attr("beta", 0.999))
        la, lb = e.lit(alpha, FLOAT64), e.lit(beta, FLOAT64)
        r, tt = e.tmp("r"), e.tmp("t")
        pre = [f"const double {tt} = double({e.inp(1)}[0]);",
               f"const double {r} = {tt} > 0 ? double({e.inp(0)}[0]) * std::sqrt(1.0 - sofie_rt::vm::pow({lb}, {tt})) "
               f"/ (1.0 - sofie_rt::vm::pow({la}, {tt})) : double({e.inp(0)}[0]);"]
        norm = e.lit(float(v.attr("norm_coefficient", 0.0)), FLOAT64)
        post = e.lit(1.0 - float(v.attr("norm_coefficient_post", 0.0)), FLOAT64)
        eps = e.lit(float(v.attr("epsilon", 1e-6)), FLOAT64)

        def body(t, ins, outs, tmp):
            x, g, vv, h = ins
            gr, vn, hn = tmp("g"), tmp("v"), tmp("h")
            return [f"const {t} {gr} = {t}({norm}) * {x} + {g};",
                    f"const {t} {vn} = {t}({la}) * {vv} + {t}(1.0 - {la}) * {gr};",
                    f"const {t} {hn} = {t}({lb}) * {h} + {t}(1.0 - {lb}) * ({gr} * {gr});",
                    *_store(outs[0], f"{t}({post} * (double({x}) - {r} * double({vn} / (std::sqrt({hn}) + {t}({eps})))))"),
                    *_store(outs[1], vn),
                    *_store(outs[2], hn)]

        return self._loops(v, e, pre, body)
