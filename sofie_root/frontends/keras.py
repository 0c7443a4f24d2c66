"""Keras 3 importer: a Keras model (in memory or a ``.keras`` file) mapped layer by layer to ONNX
operators, without TensorFlow or tf2onnx; the ONNX frontend then makes the IR (shape inference,
folding and the checks come for free).

The model's graph is walked in Keras' own order (Sequential and Functional models, nested models).
Each layer becomes a few ONNX nodes; weights are read from the layer variables. Keras keeps
image-like tensors channels-last while ONNX convolutions and pools want channels-first: a tensor
is converted (one Transpose) only where a layer needs the other layout, so a chain of Conv, pooling,
BatchNormalization, activations, Dropout, merge layers and channel Concatenate runs channels-first
with one Transpose in and one out; a Flatten followed by Dense needs no Transpose out (the Dense
kernel rows are permuted instead). An unsupported layer or option raises
:class:`~sofie_root.ExportError` naming the layer.

Supported layers: see :data:`SUPPORTED_LAYERS`; activations: :data:`SUPPORTED_ACTIVATIONS`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError

OPSET = 20
_IDENT = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class _T:
    """The ONNX counterpart of a Keras tensor: its name, its Keras shape and whether the ONNX
    tensor is stored channels-first (Keras (N, ..., C) held as (N, C, ...))."""

    name: str
    shape: tuple
    cf: bool = False
    dtype: int = TensorProto.FLOAT

    @property
    def rank(self) -> int:
        return len(self.shape)


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._used: set[str] = set()
        self._layout_cache: dict[tuple[str, bool], str] = {}
        self.layer = ""  # the layer being converted, for node names

    def fresh(self, hint: str) -> str:
        base = _IDENT.sub("_", hint) or "t"
        name, k = base, 0
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def const(self, arr: Any, hint: str, dtype: Any = np.float32) -> str:
        name = self.fresh(f"{self.layer}/{hint}")
        self.inits.append(numpy_helper.from_array(np.require(np.asarray(arr, dtype=dtype), requirements="C"), name))
        return name

    def ints(self, values: Sequence[int], hint: str = "axes") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        outs = [self.fresh(f"{self.layer}/{op_type}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{self.layer}/{op_type}_node"),
                                           **attrs))
        return outs[0] if n_out == 1 else outs

    # -- layouts --------------------------------------------------------------------------------
    def native(self, t: _T) -> str:
        """The tensor in Keras' own layout."""
        if not t.cf:
            return t.name
        key = (t.name, False)
        if key not in self._layout_cache:
            r = t.rank
            self._layout_cache[key] = self.op("Transpose", [t.name], perm=[0, *range(2, r), 1])
        return self._layout_cache[key]

    def channels_first(self, t: _T) -> str:
        if t.cf or t.rank < 3:
            return t.name
        key = (t.name, True)
        if key not in self._layout_cache:
            r = t.rank
            self._layout_cache[key] = self.op("Transpose", [t.name], perm=[0, r - 1, *range(1, r - 1)])
        return self._layout_cache[key]


class _Converter:
    def __init__(self, keras: Any):
        self.keras = keras
        self.b = _Builder()
        #: Flatten outputs of channels-first tensors: name -> (channels-first input, Keras input shape),
        #: so that a Dense reading them can permute its kernel rows instead of needing the Transpose
        self.flat_cf: dict[str, tuple[str, tuple]] = {}

    # -- helpers --------------------------------------------------------------------------------
    def np(self, var: Any) -> np.ndarray:
        v = getattr(var, "value", var)
        if hasattr(v, "detach"):  # torch backend
            return np.array(v.detach().cpu().numpy(), dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.array(self.keras.ops.convert_to_numpy(var), dtype=np.float32)

    def fail(self, layer: Any, what: str) -> ExportError:
        return ExportError(f"Keras layer {layer.name!r} ({type(layer).__name__}): {what}")

    # -- graph walk ------------------------------------------------------------------------------
    def run_model(self, model: Any, inputs: list[_T]) -> list[_T]:
        fn = _functional(model)
        if fn is None:
            raise ExportError(f"Keras model {model.name!r} is not built: give it an Input (keras.Input(shape=...)) "
                              "or call it once on data before compiling")
        if len(fn.inputs) != len(inputs):
            raise ExportError(f"Keras model {model.name!r} takes {len(fn.inputs)} inputs, got {len(inputs)}")
        values: dict[int, _T] = {id(k): v for k, v in zip(fn.inputs, inputs)}
        for depth in sorted(fn._nodes_by_depth, reverse=True):
            for node in fn._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in values for x in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(values)
                layer = node.operation
                outs = self.convert_layer(layer, args, kwargs, list(node.outputs))
                for kt, t in zip(node.outputs, outs):
                    values[id(kt)] = t
        missing = [o for o in fn.outputs if id(o) not in values]
        if missing:
            raise ExportError(f"Keras model {model.name!r}: outputs {[o.name for o in missing]} cannot be computed")
        return [values[id(o)] for o in fn.outputs]

    def convert_layer(self, layer: Any, args: tuple, kwargs: dict, outputs: list[Any]) -> list[_T]:
        if kwargs.get("mask") is not None:
            raise self.fail(layer, "masking (mask_zero=True or Masking layers) is not supported")
        if isinstance(layer, self.keras.Model):
            ins = [a for a in _flatten(args) if isinstance(a, _T)]
            return self.run_model(layer, ins)
        kind = type(layer).__name__
        fn = _LAYERS.get(kind)
        if fn is None:
            raise self.fail(layer, f"this layer type is not supported by the Keras importer (supported: "
                                   f"{', '.join(SUPPORTED_LAYERS)}); export the model to ONNX or register the "
                                   "missing piece with sofie_root.register_operator")
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and getattr(policy, "compute_dtype", "float32") not in ("float32", "int32", "int64"):
            raise self.fail(layer, f"compute dtype {policy.compute_dtype} is not supported (use float32)")
        self.b.layer = layer.name
        ins = [a for a in _flatten(args) if isinstance(a, _T)]
        result = fn(self, layer, ins, [tuple(o.shape) for o in outputs])
        res = result if isinstance(result, list) else [result]
        if len(res) != len(outputs):
            raise self.fail(layer, f"produced {len(res)} outputs where Keras has {len(outputs)}")
        return res

    # -- activations ------------------------------------------------------------------------------
    def activation(self, layer: Any, fn: Any, t: _T) -> _T:
        name = _activation_name(fn)
        if name is None:
            raise self.fail(layer, f"activation {fn!r} is not a built-in Keras activation")
        if name == "linear":
            return t
        impl = _ACTIVATIONS.get(name)
        if impl is None:
            raise self.fail(layer, f"activation {name!r} is not supported (supported: "
                                   f"{', '.join(SUPPORTED_ACTIVATIONS)})")
        elementwise, f = impl
        if name == "sparsemax":
            size = t.shape[-1]
            if size is None:
                raise self.fail(layer, "sparsemax needs a fixed size of the last axis")
            return _T(_sparsemax(self, self.b.native(t), t.rank, int(size)), t.shape, False)
        if elementwise:
            return _T(f(self, t.name), t.shape, t.cf)
        return _T(f(self, self.b.native(t), t.rank), t.shape, False)


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flatten(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in _flatten(item)]
    return [x]


def _functional(model: Any) -> Any:
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None) is not None:
        return model
    fn = getattr(model, "_functional", None)
    return fn


def _activation_name(fn: Any) -> str | None:
    if fn is None:
        return "linear"
    if isinstance(fn, str):
        return fn
    name = getattr(fn, "__name__", None)
    aliases = {"swish": "silu", "hard_swish": "hard_silu"}
    return aliases.get(name, name)


# -- activations --------------------------------------------------------------------------------

def _unary(op: str, **attrs: Any) -> Callable[[_Converter, str], str]:
    return lambda c, x: c.b.op(op, [x], **attrs)


def _clip(lo: float | None, hi: float | None) -> Callable[[_Converter, str], str]:
    def f(c: _Converter, x: str) -> str:
        ins = [x, c.b.const(lo if lo is not None else -np.inf, "min"), c.b.const(hi if hi is not None else np.inf, "max")]
        return c.b.op("Clip", ins)
    return f


def _silu(c: _Converter, x: str) -> str:
    return c.b.op("Mul", [x, c.b.op("Sigmoid", [x])])


def _log_sigmoid(c: _Converter, x: str) -> str:
    return c.b.op("Neg", [c.b.op("Softplus", [c.b.op("Neg", [x])])])


def _tanh_shrink(c: _Converter, x: str) -> str:
    return c.b.op("Sub", [x, c.b.op("Tanh", [x])])


def _squareplus(c: _Converter, x: str, b: float = 4.0) -> str:
    root = c.b.op("Sqrt", [c.b.op("Add", [c.b.op("Mul", [x, x]), c.b.const(b, "b")])])
    return c.b.op("Mul", [c.b.op("Add", [x, root]), c.b.const(0.5, "half")])


def _sparse_plus(c: _Converter, x: str) -> str:
    # 0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1
    one = c.b.const(1.0, "one")
    xp1 = c.b.op("Add", [x, one])
    mid = c.b.op("Mul", [c.b.op("Mul", [xp1, xp1]), c.b.const(0.25, "quarter")])
    low = c.b.op("Where", [c.b.op("LessOrEqual", [x, c.b.const(-1.0, "m1")]), c.b.const(0.0, "zero"), mid])
    return c.b.op("Where", [c.b.op("GreaterOrEqual", [x, one]), x, low])


def _sparse_sigmoid(c: _Converter, x: str) -> str:
    y = c.b.op("Mul", [c.b.op("Add", [x, c.b.const(1.0, "one")]), c.b.const(0.5, "half")])
    return _clip(0.0, 1.0)(c, y)


def _softmax_like(op: str) -> Callable[[_Converter, str, int], str]:
    return lambda c, x, rank: c.b.op(op, [x], axis=-1)


def _glu(c: _Converter, x: str, rank: int) -> str:
    a, b = c.b.op("Split", [x], n_out=2, axis=-1, num_outputs=2)
    return c.b.op("Mul", [a, c.b.op("Sigmoid", [b])])


def _sparsemax(c: _Converter, x: str, rank: int, size: int | None = None) -> str:
    """Sparsemax over the last axis exactly as ``keras.activations.sparsemax`` computes it (Keras 3
    takes tau = (sum of the cumulative sums over the support - 1) / k, which differs from the
    published sparsemax when the support has more than one element; a trained model expects Keras')."""
    if size is None:
        raise ExportError("sparsemax needs a known size of the last axis")
    b = c.b
    srt, _ = b.op("TopK", [x, b.ints([size], "k")], n_out=2, axis=-1, largest=1, sorted=1)
    csum = b.op("CumSum", [srt, b.const(np.array(-1, np.int64), "axis", np.int64)])
    r = b.const(np.arange(1, size + 1, dtype=np.float32), "r")
    one = b.const(1.0, "one")
    support = b.op("Greater", [b.op("Sub", [srt, b.op("Div", [b.op("Sub", [csum, one]), r])]),
                               b.const(0.0, "zero")])
    k = b.op("ReduceSum", [b.op("Cast", [support], to=TensorProto.FLOAT), b.ints([-1])], keepdims=1)
    safe = b.op("Where", [support, csum, b.const(0.0, "zero")])
    tau = b.op("Div", [b.op("Sub", [b.op("ReduceSum", [safe, b.ints([-1])], keepdims=1), one]), k])
    return b.op("Relu", [b.op("Sub", [x, tau])])


#: name -> (element-wise?, builder). Element-wise ones work in either layout.
_ACTIVATIONS: dict[str, tuple[bool, Callable[..., str]]] = {
    "relu": (True, _unary("Relu")),
    "relu6": (True, _clip(0.0, 6.0)),
    "sigmoid": (True, _unary("Sigmoid")),
    "tanh": (True, _unary("Tanh")),
    "softplus": (True, _unary("Softplus")),
    "softsign": (True, _unary("Softsign")),
    "selu": (True, _unary("Selu")),
    "elu": (True, _unary("Elu", alpha=1.0)),
    "celu": (True, _unary("Celu", alpha=1.0)),
    "exponential": (True, _unary("Exp")),
    "gelu": (True, _unary("Gelu")),
    "hard_sigmoid": (True, _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5)),
    "hard_silu": (True, _unary("HardSwish")),
    "silu": (True, _silu),
    "mish": (True, _unary("Mish")),
    "leaky_relu": (True, _unary("LeakyRelu", alpha=0.2)),
    "hard_tanh": (True, _clip(-1.0, 1.0)),
    "hard_shrink": (True, _unary("Shrink", lambd=0.5, bias=0.0)),
    "soft_shrink": (True, _unary("Shrink", lambd=0.5, bias=0.5)),
    "tanh_shrink": (True, _tanh_shrink),
    "log_sigmoid": (True, _log_sigmoid),
    "squareplus": (True, _squareplus),
    "sparse_plus": (True, _sparse_plus),
    "sparse_sigmoid": (True, _sparse_sigmoid),
    "softmax": (False, _softmax_like("Softmax")),
    "log_softmax": (False, _softmax_like("LogSoftmax")),
    "glu": (False, _glu),
    "sparsemax": (False, _sparsemax),
}

SUPPORTED_ACTIVATIONS = ("linear", *sorted(_ACTIVATIONS))


# -- layers ---------------------------------------------------------------------------------------

def _out(t_name: str, shapes: list[tuple], cf: bool = False, k: int = 0) -> _T:
    return _T(t_name, shapes[k], cf)


def _identity(c: _Converter, layer: Any, ins: list[_T], shapes: list[tuple]) -> _T:
    return _T(ins[0].name, shapes[0], ins[0].cf)


def _input_layer(c, layer, ins, shapes):
    return _identity(c, layer, ins, shapes)


def _activation_layer(c, layer, ins, shapes):
    return c.activation(layer, layer.activation, ins[0])


def _relu_layer(c, layer, ins, shapes):
    t = ins[0]
    slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
    maxv = getattr(layer, "max_value", None)
    thr = float(getattr(layer, "threshold", 0.0) or 0.0)
    b = c.b
    if slope == 0 and maxv is None and thr == 0:
        return _T(b.op("Relu", [t.name]), shapes[0], t.cf)
    if maxv is None and thr == 0:
        return _T(b.op("LeakyRelu", [t.name], alpha=slope), shapes[0], t.cf)
    x = t.name
    if thr != 0:
        pos = b.op("Mul", [x, b.op("Cast", [b.op("Greater", [x, b.const(thr, "thr")])], to=TensorProto.FLOAT)])
    else:
        pos = b.op("Relu", [x])
    if maxv is not None:
        pos = _clip(0.0, float(maxv))(c, pos)
    if slope != 0:
        neg = b.op("Relu", [b.op("Sub", [b.const(thr, "thr"), x])])
        pos = b.op("Sub", [pos, b.op("Mul", [neg, b.const(slope, "slope")])])
    return _T(pos, shapes[0], t.cf)


def _leaky_relu_layer(c, layer, ins, shapes):
    slope = float(getattr(layer, "negative_slope", None) or getattr(layer, "alpha", 0.3))
    return _T(c.b.op("LeakyRelu", [ins[0].name], alpha=slope), shapes[0], ins[0].cf)


def _elu_layer(c, layer, ins, shapes):
    return _T(c.b.op("Elu", [ins[0].name], alpha=float(layer.alpha)), shapes[0], ins[0].cf)


def _softmax_layer(c, layer, ins, shapes):
    t = ins[0]
    axis = layer.axis
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) != 1:
        raise c.fail(layer, "softmax over several axes is not supported")
    return _T(c.b.op("Softmax", [c.b.native(t)], axis=int(axes[0])), shapes[0])


def _prelu_layer(c, layer, ins, shapes):
    t = ins[0]
    alpha = c.np(layer.alpha)  # shape of the input without batch (shared axes have size 1)
    return _T(c.b.op("PRelu", [c.b.native(t), c.b.const(alpha, "alpha")]), shapes[0])


def _dense(c, layer, ins, shapes):
    t = ins[0]
    b = c.b
    w = c.np(layer.kernel)
    flat = c.flat_cf.get(t.name)
    if flat is not None and all(isinstance(d, int) for d in flat[1][1:]):
        # Dense after Flatten of a channels-first tensor: flatten that tensor as it is and permute
        # the kernel rows (Keras' row (s..., ch) is row (ch, s...) here); the Transpose goes away
        src, kshape = flat
        keras_index = np.arange(int(np.prod(kshape[1:]))).reshape(kshape[1:])
        perm = np.moveaxis(keras_index, -1, 0).reshape(-1)
        x = b.op("Flatten", [src], axis=1)
        w = w[perm]
    else:
        x = b.native(t)
    y = b.op("MatMul", [x, b.const(w, "kernel")])
    if layer.use_bias:
        y = b.op("Add", [y, b.const(c.np(layer.bias), "bias")])
    return c.activation(layer, layer.activation, _T(y, shapes[0]))


def _spatial_layout(c: _Converter, layer: Any, t: _T) -> tuple[str, bool]:
    """The input of a conv/pool layer in channels-first layout, and whether the output is stored
    channels-first for a channels-last layer (False for channels_first layers: Keras' own layout)."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return c.b.native(t), False
    return c.b.channels_first(t), True


def _pads(layer: Any, nsp: int, kernel: Sequence[int], dil: Sequence[int]) -> dict[str, Any]:
    padding = layer.padding
    if padding == "valid":
        return {"pads": [0] * (2 * nsp)}
    if padding == "same":
        return {"auto_pad": "SAME_UPPER"}
    if padding == "causal":
        return {"pads": [(kernel[0] - 1) * dil[0], 0]}
    raise ExportError(f"Keras layer {layer.name!r}: padding={padding!r} is not supported")


def _conv(c, layer, ins, shapes):
    t = ins[0]
    b = c.b
    x, cf = _spatial_layout(c, layer, t)
    kernel = c.np(layer.kernel)  # (k..., Cin/groups, Cout)
    nsp = kernel.ndim - 2
    w = np.transpose(kernel, (nsp + 1, nsp, *range(nsp)))
    ks = list(w.shape[2:])
    strides = list(layer.strides)
    dil = list(layer.dilation_rate)
    attrs = {"kernel_shape": ks, "strides": strides, "dilations": dil, "group": int(getattr(layer, "groups", 1))}
    attrs.update(_pads(layer, nsp, ks, dil))
    inputs = [x, b.const(w, "kernel")]
    if layer.use_bias:
        inputs.append(b.const(c.np(layer.bias), "bias"))
    y = b.op("Conv", inputs, **attrs)
    return c.activation(layer, layer.activation, _T(y, shapes[0], cf))


def _pool(op: str) -> Callable:
    def f(c, layer, ins, shapes):
        x, cf = _spatial_layout(c, layer, ins[0])
        ks = list(layer.pool_size)
        attrs = {"kernel_shape": ks, "strides": list(layer.strides)}
        attrs.update(_pads(layer, len(ks), ks, [1] * len(ks)))
        if op == "AveragePool":
            attrs["count_include_pad"] = 0
        return _T(c.b.op(op, [x], **attrs), shapes[0], cf)
    return f


def _global_pool(op: str) -> Callable:
    def f(c, layer, ins, shapes):
        t = ins[0]
        x, cf = _spatial_layout(c, layer, t)
        keep = bool(getattr(layer, "keepdims", False))
        y = c.b.op(op, [x, c.b.ints(range(2, t.rank))], keepdims=int(keep))
        return _T(y, shapes[0], cf and keep)
    return f


def _channel_shape(t: _T, axis: int, size: int) -> tuple[list[int], bool]:
    """Broadcast shape of a per-channel vector along Keras axis ``axis``, and the layout to use."""
    r = t.rank
    if t.cf and axis == r - 1:
        return [size] + [1] * (r - 2), True
    shape = [1] * (r - 1)
    shape[axis - 1] = size
    return shape, False


def _batchnorm(c, layer, ins, shapes):
    t = ins[0]
    b = c.b
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise c.fail(layer, "normalization over several axes is not supported")
        axis = axis[0]
    axis = int(axis) % t.rank
    if axis == 0:
        raise c.fail(layer, "normalization along the batch axis is not supported")
    mean, var = c.np(layer.moving_mean), c.np(layer.moving_variance)
    gamma = c.np(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = c.np(layer.beta) if layer.center else np.zeros_like(mean)
    inv = (1.0 / np.sqrt(var.astype(np.float64) + layer.epsilon)).astype(np.float32)
    s = (gamma * inv).astype(np.float32)
    shift = (beta - mean * s).astype(np.float32)
    shape, cf = _channel_shape(t, axis, s.size)
    x = t.name if cf else b.native(t)
    y = b.op("Add", [b.op("Mul", [x, b.const(s.reshape(shape), "scale")]), b.const(shift.reshape(shape), "shift")])
    return _T(y, shapes[0], cf)


def _layernorm(c, layer, ins, shapes):
    t = ins[0]
    b = c.b
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    axes = sorted(int(a) % t.rank for a in axes)
    if axes != list(range(axes[0], t.rank)) or axes[0] == 0:
        raise c.fail(layer, f"normalization axes {layer.axis} must be the trailing axes (not the batch axis)")
    if getattr(layer, "rms_scaling", False):
        raise c.fail(layer, "rms_scaling=True is not supported")
    norm_shape = [int(d) for d in t.shape[axes[0]:]]
    gamma = c.np(layer.gamma) if layer.scale else np.ones(norm_shape, np.float32)
    beta = c.np(layer.beta) if layer.center else np.zeros(norm_shape, np.float32)
    gamma = np.broadcast_to(gamma.reshape([*([1] * (len(norm_shape) - gamma.ndim)), *gamma.shape]),
                            norm_shape)
    beta = np.broadcast_to(beta.reshape([*([1] * (len(norm_shape) - beta.ndim)), *beta.shape]), norm_shape)
    y = b.op("LayerNormalization", [b.native(t), b.const(gamma, "gamma"), b.const(beta, "beta")],
             axis=axes[0], epsilon=float(layer.epsilon))
    return _T(y, shapes[0])


def _flatten_layer(c, layer, ins, shapes):
    t = ins[0]
    if getattr(layer, "data_format", "channels_last") == "channels_first" and t.rank > 2:
        x = c.b.op("Transpose", [c.b.native(t)], perm=[0, *range(2, t.rank), 1])
    else:
        x = c.b.native(t)
    y = c.b.op("Flatten", [x], axis=1)
    if t.cf and t.rank > 2:
        c.flat_cf[y] = (t.name, tuple(t.shape))
    return _T(y, shapes[0])


def _reshape(c, layer, ins, shapes):
    t = ins[0]
    target = [int(d) if d is not None else -1 for d in layer.target_shape]
    return _T(c.b.op("Reshape", [c.b.native(t), c.b.ints([0, *target], "shape")]), shapes[0])


def _permute(c, layer, ins, shapes):
    return _T(c.b.op("Transpose", [c.b.native(ins[0])], perm=[0, *[int(d) for d in layer.dims]]), shapes[0])


def _concat(c, layer, ins, shapes):
    r = ins[0].rank
    axis = int(layer.axis) % r
    if all(t.cf for t in ins) and axis == r - 1:
        return _T(c.b.op("Concat", [t.name for t in ins], axis=1), shapes[0], True)
    return _T(c.b.op("Concat", [c.b.native(t) for t in ins], axis=axis), shapes[0])


def _merge(op: str) -> Callable:
    def f(c, layer, ins, shapes):
        cf = all(t.cf for t in ins) and len({t.rank for t in ins}) == 1
        names = [t.name if cf else c.b.native(t) for t in ins]
        if op in ("Add", "Mul", "Sub"):
            y = names[0]
            for other in names[1:]:
                y = c.b.op(op, [y, other])
        elif op == "Mean":
            y = c.b.op("Mean", names)
        else:
            y = c.b.op(op, names)
        return _T(y, shapes[0], cf)
    return f


def _embedding(c, layer, ins, shapes):
    t = ins[0]
    if getattr(layer, "mask_zero", False):
        raise c.fail(layer, "mask_zero=True is not supported")
    ids = c.b.op("Cast", [c.b.native(t)], to=TensorProto.INT64)
    table = c.np(layer.embeddings)
    return _T(c.b.op("Gather", [c.b.const(table, "embeddings"), ids], axis=0), shapes[0])


# -- recurrent layers -----------------------------------------------------------------------------

_RNN_ACTS = {"tanh": ("Tanh", None, None), "sigmoid": ("Sigmoid", None, None), "relu": ("Relu", None, None),
             "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5), "linear": ("Affine", 1.0, 0.0),
             "softsign": ("Softsign", None, None), "softplus": ("Softplus", None, None), "elu": ("Elu", 1.0, None)}


def _rnn_weights(c: _Converter, kind: str, layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """ONNX W, R, B (one direction) and attributes for a Keras SimpleRNN/GRU/LSTM layer."""
    cell = layer.cell
    units = int(cell.units)
    k = c.np(cell.kernel)
    rk = c.np(cell.recurrent_kernel)
    gates = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[kind]
    if cell.use_bias:
        bias = c.np(cell.bias)
    else:
        bias = np.zeros((2 * gates * units,) if kind == "GRU" and getattr(cell, "reset_after", False)
                        else (gates * units,), np.float32)
    attrs: dict[str, Any] = {}
    if kind == "LSTM":
        order = [0, 3, 1, 2]  # Keras i, f, c, o -> ONNX i, o, f, c

        def reorder(m: np.ndarray) -> np.ndarray:
            parts = np.split(m, 4, axis=-1)
            return np.concatenate([parts[j] for j in order], axis=-1)

        w, r = reorder(k).T, reorder(rk).T
        b = np.concatenate([reorder(bias), np.zeros_like(bias)])
        acts = [cell.recurrent_activation, cell.activation, cell.activation]
    elif kind == "GRU":
        w, r = k.T, rk.T
        if getattr(cell, "reset_after", False):
            bias = bias.reshape(2, -1)
            b = np.concatenate([bias[0], bias[1]])
            attrs["linear_before_reset"] = 1
        else:
            b = np.concatenate([bias.reshape(-1), np.zeros(3 * units, np.float32)])
        acts = [cell.recurrent_activation, cell.activation]
    else:
        w, r = k.T, rk.T
        b = np.concatenate([bias, np.zeros_like(bias)])
        acts = [cell.activation]
    names, alphas, betas = [], [], []
    for fn in acts:
        nm = _activation_name(fn)
        if nm not in _RNN_ACTS:
            raise ExportError(f"Keras layer {layer.name!r} ({kind}): activation {nm!r} is not supported in "
                              f"recurrent layers (supported: {', '.join(sorted(_RNN_ACTS))})")
        onnx_name, a, bb = _RNN_ACTS[nm]
        names.append(onnx_name)
        if a is not None:
            alphas.append(a)
        if bb is not None:
            betas.append(bb)
    attrs["activations"] = names
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    attrs["hidden_size"] = units
    return w.astype(np.float32), r.astype(np.float32), b.astype(np.float32), attrs


def _check_rnn(c: _Converter, layer: Any) -> None:
    if getattr(layer, "stateful", False):
        raise c.fail(layer, "stateful=True is not supported")


def _run_rnn(c: _Converter, layer: Any, kind: str, x: _T, directions: list[Any]) -> tuple[str, list[str], list[str]]:
    """Run an ONNX RNN/GRU/LSTM in batch-first layout; returns (Y [N, T, dirs, U], Y_h list, Y_c list)."""
    b = c.b
    ws, rs, bs = [], [], []
    attrs: dict[str, Any] = {}
    for lyr in directions:
        w, r, bias, attrs_d = _rnn_weights(c, kind, lyr)
        ws.append(w)
        rs.append(r)
        bs.append(bias)
        if attrs and attrs_d["activations"] != attrs["activations"][:len(attrs_d["activations"])]:
            attrs["activations"] = attrs["activations"] + attrs_d["activations"]
            attrs["activation_alpha"] = attrs.get("activation_alpha", []) + attrs_d.get("activation_alpha", [])
            attrs["activation_beta"] = attrs.get("activation_beta", []) + attrs_d.get("activation_beta", [])
        elif attrs:
            attrs["activations"] = attrs["activations"] + attrs_d["activations"]
            for key in ("activation_alpha", "activation_beta"):
                if key in attrs_d:
                    attrs[key] = attrs[key] + attrs_d[key]
        else:
            attrs = dict(attrs_d)
    if len(directions) == 2:
        attrs["direction"] = "bidirectional"
    elif getattr(directions[0], "go_backwards", False):
        attrs["direction"] = "reverse"
    op = {"SimpleRNN": "RNN", "GRU": "GRU", "LSTM": "LSTM"}[kind]
    inputs = [b.native(x), b.const(np.stack(ws), "W"), b.const(np.stack(rs), "R"), b.const(np.stack(bs), "B")]
    n_out = 3 if kind == "LSTM" else 2
    outs = b.op(op, inputs, n_out=n_out, layout=1, **attrs)
    y, yh = outs[0], outs[1]
    yc = outs[2] if kind == "LSTM" else None
    nd = len(directions)
    hs = [b.op("Gather", [yh, b.const(np.array(d, np.int64), "dir", np.int64)], axis=1) for d in range(nd)]
    cs = [b.op("Gather", [yc, b.const(np.array(d, np.int64), "dir", np.int64)], axis=1) for d in range(nd)] \
        if yc is not None else []
    return y, hs, cs


def _recurrent(kind: str) -> Callable:
    def f(c, layer, ins, shapes):
        _check_rnn(c, layer)
        x = ins[0]
        b = c.b
        y, hs, cs = _run_rnn(c, layer, kind, x, [layer])
        if layer.return_sequences:
            seq = b.op("Squeeze", [y, b.ints([2])])
            if getattr(layer, "go_backwards", False):  # Keras returns the reversed-time sequence
                seq = b.op("Slice", [seq, b.ints([-1], "start"), b.ints([-(2**62)], "end"), b.ints([1]),
                                     b.ints([-1], "step")])
            out = _T(seq, shapes[0])
        else:
            out = _T(hs[0], shapes[0])
        if not getattr(layer, "return_state", False):
            return out
        states = [hs[0]] + (cs[:1] if kind == "LSTM" else [])
        return [out] + [_T(s, shapes[1 + k]) for k, s in enumerate(states)]
    return f


def _bidirectional(c, layer, ins, shapes):
    fw, bw = layer.forward_layer, layer.backward_layer
    kind = type(fw).__name__
    if kind not in ("SimpleRNN", "GRU", "LSTM") or type(bw).__name__ != kind:
        raise c.fail(layer, f"only SimpleRNN, GRU and LSTM can be wrapped, got {kind}/{type(bw).__name__}")
    if getattr(layer, "return_state", False) or layer.merge_mode not in ("concat", "sum", "mul", "ave"):
        raise c.fail(layer, f"merge_mode={layer.merge_mode!r} / return_state=True are not supported")
    if getattr(fw, "go_backwards", False) or not getattr(bw, "go_backwards", True):
        raise c.fail(layer, "the wrapped layers must run forward (and backward for the backward layer)")
    _check_rnn(c, fw)
    b = c.b
    y, hs, _ = _run_rnn(c, layer, kind, ins[0], [fw, bw])
    if fw.return_sequences:
        a, z = (b.op("Squeeze", [y_d, b.ints([2])]) for y_d in b.op("Split", [y], n_out=2, axis=2, num_outputs=2))
    else:
        a, z = hs
    mode = layer.merge_mode
    if mode == "concat":
        out = b.op("Concat", [a, z], axis=-1)
    elif mode == "sum":
        out = b.op("Add", [a, z])
    elif mode == "mul":
        out = b.op("Mul", [a, z])
    else:
        out = b.op("Mul", [b.op("Add", [a, z]), b.const(0.5, "half")])
    return _T(out, shapes[0])


_LAYERS: dict[str, Callable] = {
    "InputLayer": _input_layer,
    "Dense": _dense,
    "Activation": _activation_layer,
    "ReLU": _relu_layer,
    "LeakyReLU": _leaky_relu_layer,
    "ELU": _elu_layer,
    "PReLU": _prelu_layer,
    "Softmax": _softmax_layer,
    "Conv1D": _conv,
    "Conv2D": _conv,
    "Conv3D": _conv,
    "MaxPooling1D": _pool("MaxPool"),
    "MaxPooling2D": _pool("MaxPool"),
    "AveragePooling1D": _pool("AveragePool"),
    "AveragePooling2D": _pool("AveragePool"),
    "GlobalAveragePooling1D": _global_pool("ReduceMean"),
    "GlobalAveragePooling2D": _global_pool("ReduceMean"),
    "GlobalMaxPooling1D": _global_pool("ReduceMax"),
    "GlobalMaxPooling2D": _global_pool("ReduceMax"),
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Dropout": _identity,
    "SpatialDropout1D": _identity,
    "SpatialDropout2D": _identity,
    "GaussianDropout": _identity,
    "GaussianNoise": _identity,
    "AlphaDropout": _identity,
    "ActivityRegularization": _identity,
    "Identity": _identity,
    "Flatten": _flatten_layer,
    "Reshape": _reshape,
    "Permute": _permute,
    "Concatenate": _concat,
    "Add": _merge("Add"),
    "Subtract": _merge("Sub"),
    "Multiply": _merge("Mul"),
    "Average": _merge("Mean"),
    "Maximum": _merge("Max"),
    "Minimum": _merge("Min"),
    "Embedding": _embedding,
    "SimpleRNN": _recurrent("SimpleRNN"),
    "GRU": _recurrent("GRU"),
    "LSTM": _recurrent("LSTM"),
    "Bidirectional": _bidirectional,
}

SUPPORTED_LAYERS = tuple(sorted(_LAYERS))

_KERAS_DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "int32": TensorProto.INT32,
                 "int64": TensorProto.INT64, "float16": None, "bfloat16": None}


def _import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as e:  # pragma: no cover
        raise ExportError("compiling a Keras model needs keras 3: pip install keras") from e
    if not str(getattr(keras, "__version__", "0")).startswith("3"):
        raise ExportError(f"the Keras importer supports Keras 3, found {keras.__version__}")
    return keras


def load_keras(source: Any) -> Any:
    keras = _import_keras()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ExportError(f"{path}: no such file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return keras.saving.load_model(str(path), compile=False)
        except Exception as e:
            raise ExportError(f"{path}: cannot be loaded as a Keras model ({type(e).__name__}: {e}); a model with "
                              "custom layers must be loaded by you (keras.saving.load_model with custom_objects) "
                              "and passed to compile") from e
    if not isinstance(source, keras.Model):
        raise ExportError(f"cannot import a {type(source).__name__} as a Keras model")
    return source


def keras_to_onnx(source: Any, *, input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
                  dynamic_batch: bool = True) -> onnx.ModelProto:
    """Map a Keras 3 model (or ``.keras`` file) to an ONNX ``ModelProto`` (opset 20).

    Args:
        source: a ``keras.Model`` (Sequential, Functional or a subclass with a functional graph)
            or the path of a ``.keras`` file.
        input_shapes: shapes overriding the Keras input shapes (``None`` entries are symbolic).
        dynamic_batch: keep the batch dimension symbolic (``N``); otherwise it is 1.

    Raises:
        ExportError: naming the first unsupported layer or option.
    """
    keras = _import_keras()
    model = load_keras(source)
    fn = _functional(model)
    if fn is None:
        raise ExportError(f"Keras model {model.name!r} has no functional graph: give it an Input "
                          "(keras.Input(shape=...) as its first layer) or build it, then compile it")
    conv = _Converter(keras)
    inputs_vi = []
    ins: list[_T] = []
    shapes = dict(input_shapes or {})
    for k, kt in enumerate(fn.inputs):
        name = conv.b.fresh(getattr(kt, "name", None) or f"input_{k}")
        shape = list(shapes.pop(name, kt.shape))
        dims: list[Any] = []
        for axis, d in enumerate(shape):
            if d is None or isinstance(d, str):
                if axis == 0 and d is None:
                    dims.append("N" if dynamic_batch else 1)
                else:
                    dims.append(d if isinstance(d, str) else f"{name}_{axis}")
            else:
                dims.append(int(d))
        dt = _KERAS_DTYPES.get(str(kt.dtype))
        if dt is None:
            raise ExportError(f"Keras input {name!r} has dtype {kt.dtype}, which is not supported")
        inputs_vi.append(helper.make_tensor_value_info(name, dt, dims))
        ins.append(_T(name, tuple(kt.shape), False, dt))
    if shapes:
        raise ExportError(f"input_shapes names {sorted(shapes)}, which are not inputs of the Keras model "
                          f"({[vi.name for vi in inputs_vi]})")
    outs = conv.run_model(model, ins)
    b = conv.b
    out_names = list(getattr(model, "output_names", None) or [])
    if len(out_names) != len(outs):
        out_names = [f"output_{k}" for k in range(len(outs))]
    outputs_vi = []
    seen: set[str] = {vi.name for vi in inputs_vi}
    b.layer = "output"
    for name, t in zip(out_names, outs):
        name = _IDENT.sub("_", name) or "output"
        while name in seen:
            name += "_"
        seen.add(name)
        b.nodes.append(helper.make_node("Identity", [b.native(t)], [name], name=b.fresh(f"output/{name}")))
        outputs_vi.append(helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None))
    graph = helper.make_graph(b.nodes, _IDENT.sub("_", model.name) or "keras_model", inputs_vi, outputs_vi,
                              b.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sofie_root.keras", producer_version=str(keras.__version__))
    return proto


__all__ = ["SUPPORTED_ACTIVATIONS", "SUPPORTED_LAYERS", "keras_to_onnx", "load_keras"]
