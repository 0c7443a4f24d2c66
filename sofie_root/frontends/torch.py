"""PyTorch importer: an ``nn.Module`` (with example inputs) or a TorchScript ``.pt`` file (with
input shapes) to ONNX, through ``torch.onnx.export``; the ONNX frontend then makes the IR.

The dynamo exporter (``torch.export``) is tried first; the legacy TorchScript exporter is used when
asked for (``exporter="torchscript"``), for TorchScript modules, and when dynamo fails. Symbolic
dimensions (the batch dimension ``N`` by default, or any axis named in ``dynamic_dims``) stay
symbolic in the exported graph, so one compiled model runs any batch size (or any number of graph
nodes and edges). Every exporter failure is re-raised as :class:`~sofie_root.ExportError` with
what to try next. ``torch`` is imported only when this module is used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import ExportError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

EXPORTERS = ("auto", "dynamo", "torchscript")

_ADVICE = {
    "dynamo": (
        "What to try: compile(..., exporter='torchscript') to use the legacy exporter; make sure the module "
        "runs on the example inputs (module(*example_inputs)); replace Python control flow on tensor values "
        "(`if x.sum() > 0:`) by torch.where; give example inputs whose symbolic axes are at least 2 long; "
        "or export to ONNX yourself and compile the .onnx file."),
    "both": (
        "What to try: make sure the module runs on the example inputs; rewrite the operators the messages "
        "name (aten::...) with torch functions that have ONNX equivalents; replace Python control flow on "
        "tensor values by torch.where; or export to ONNX yourself and compile the .onnx file."),
    "torchscript": (
        "What to try: compile(..., exporter='dynamo'); make sure the module runs on the example inputs; "
        "a module using operators the ONNX exporter does not know needs them rewritten with supported torch "
        "functions (the message names the aten operator); or export to ONNX yourself and compile the file."),
}


def torch_to_onnx(
    source: Any,
    example_inputs: Sequence[Any] | Any | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int | str | None]] | Sequence[Sequence[int | str | None]] | None = None,
    input_dtypes: Sequence[Any] | None = None,
    dynamic_batch: bool = True,
    dynamic_dims: Mapping[int | str, Mapping[int, str]] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    exporter: str = "auto",
    opset: int | None = None,
) -> onnx.ModelProto:
    """Export a PyTorch model to an ONNX ``ModelProto`` that the ONNX frontend compiles.

    Args:
        source: an ``nn.Module`` (exported in eval mode; its mode is restored afterwards), a
            ``torch.jit.ScriptModule``, or the path of a TorchScript file (``torch.jit.save``).
        example_inputs: tensors (or numpy arrays) the module is called with, one per input. For a
            TorchScript file they may be left out when ``input_shapes`` are given.
        input_shapes: for a TorchScript file without example inputs, the shape of each input (a
            list, or a dict input name -> shape); ``None`` or a name in a shape is a symbolic axis.
            Random float32 inputs of those shapes (``input_dtypes`` to change) are used for export.
        dynamic_batch: make axis 0 of every input symbolic, named ``N``.
        dynamic_dims: further symbolic axes, ``{input index or name: {axis: symbol name}}``; the same
            name on several inputs means the same size (``{"x": {0: "nodes"}, "edges": {1: "E"}}``).
        input_names, output_names: names of the graph inputs and outputs (default ``x``/``x0, x1...``
            and ``y``/``y0, y1...``).
        exporter: ``"auto"`` (dynamo, then the TorchScript exporter if dynamo fails), ``"dynamo"``
            or ``"torchscript"``.
        opset: the ONNX opset to export to (default: the exporter's).

    Raises:
        ExportError: the model could not be loaded or exported; the message says what to try.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise ExportError("compiling a PyTorch model needs torch: pip install torch") from e
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter={exporter!r}; choose one of {EXPORTERS}")

    shapes_by_pos: list[Sequence[int | str | None]] | None = None
    if input_shapes is not None:
        if isinstance(input_shapes, Mapping):
            if input_names is None:
                input_names = list(input_shapes)
            shapes_by_pos = [input_shapes[n] for n in input_names]
        else:
            shapes_by_pos = list(input_shapes)

    module = _load_module(source, torch)
    scripted = isinstance(module, torch.jit.ScriptModule)
    if example_inputs is None:
        if shapes_by_pos is None:
            raise ExportError("compiling a PyTorch model needs example_inputs=(x, ...) (tensors the module is "
                              "called with) or input_shapes=[(N, 7), ...]")
        example_inputs = _random_inputs(shapes_by_pos, input_dtypes, torch)
    elif not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    args = tuple(_as_tensor(x, torch) for x in example_inputs)
    n_in = len(args)
    names = list(input_names) if input_names is not None else (["x"] if n_in == 1 else [f"x{k}" for k in range(n_in)])
    if len(names) != n_in:
        raise ExportError(f"{len(names)} input names for {n_in} example inputs")

    dyn: dict[int, dict[int, str]] = {}
    if dynamic_batch:
        for k, a in enumerate(args):
            if a.dim() >= 1:
                dyn.setdefault(k, {})[0] = "N"
    if shapes_by_pos is not None:
        for k, shape in enumerate(shapes_by_pos):
            for axis, d in enumerate(shape):
                if d is None or isinstance(d, str):
                    dyn.setdefault(k, {})[axis] = d if isinstance(d, str) else f"{names[k]}_{axis}"
    for key, axes in (dynamic_dims or {}).items():
        k = names.index(key) if isinstance(key, str) and key in names else key
        if not isinstance(k, int) or not 0 <= k < n_in:
            raise ExportError(f"dynamic_dims names input {key!r}, which is not one of {names}")
        for axis, sym in axes.items():
            if not isinstance(sym, str) or not _IDENT.match(sym):
                raise ExportError(f"dynamic_dims: symbol {sym!r} must be an identifier")
            if not -args[k].dim() <= axis < args[k].dim():
                raise ExportError(f"dynamic_dims: input {names[k]!r} has no axis {axis}")
            dyn.setdefault(k, {})[axis % args[k].dim()] = sym

    n_out = _count_outputs(module, args, torch)
    outs = list(output_names) if output_names is not None else (["y"] if n_out == 1 else [f"y{k}" for k in range(n_out)])

    order = {"auto": ["torchscript"] if scripted else ["dynamo", "torchscript"],
             "dynamo": ["dynamo"], "torchscript": ["torchscript"]}[exporter]
    errors: list[tuple[str, BaseException]] = []
    was_training = getattr(module, "training", False)
    if isinstance(module, torch.nn.Module):
        module.eval()
    try:
        for which in order:
            try:
                if which == "dynamo":
                    proto = _export_dynamo(module, args, names, outs, dyn, opset, torch)
                else:
                    proto = _export_torchscript(module, args, names, outs, dyn, opset, torch)
                break
            except ExportError:
                raise
            except Exception as e:
                errors.append((which, e))
        else:
            parts = [f"torch.onnx.export ({w} exporter) failed: {type(e).__name__}: {_first_lines(e)}"
                     for w, e in errors]
            advice = _ADVICE["both"] if len(errors) > 1 else _ADVICE[errors[-1][0]]
            raise ExportError("\n".join(parts) + "\n" + advice) from errors[-1][1]
    finally:
        if isinstance(module, torch.nn.Module) and was_training:
            module.train()
    proto = _finish(proto, names, dyn)
    proto.producer_name = proto.producer_name or "pytorch"
    return proto


def _load_module(source: Any, torch: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ExportError(f"{path}: no such file")
        try:
            with _quiet():
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            hint = ""
            if zipfile_like(path):
                hint = (" If it holds a state_dict or a pickled module (torch.save), build the module in Python, "
                        "load the weights and compile the module itself with example_inputs=.")
            raise ExportError(f"{path}: cannot be read as a TorchScript file ({type(e).__name__}: "
                              f"{_first_lines(e)}). Save the model with "
                              f"torch.jit.save(torch.jit.trace(model, x), path).{hint}") from e
    if not isinstance(source, torch.nn.Module):
        raise ExportError(f"cannot export a {type(source).__name__}; give a torch.nn.Module or a TorchScript file")
    return source


def zipfile_like(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"PK"
    except OSError:
        return False


def _as_tensor(x: Any, torch: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ExportError(f"example inputs must be torch tensors or numpy arrays, got {type(x).__name__}")


def _random_inputs(shapes: Sequence[Sequence[int | str | None]], dtypes: Sequence[Any] | None, torch: Any):
    gen = torch.Generator().manual_seed(0)
    out = []
    for k, shape in enumerate(shapes):
        dims = [2 if (d is None or isinstance(d, str)) else int(d) for d in shape]
        dt = np.dtype(dtypes[k]) if dtypes is not None else np.dtype("float32")
        if dt.kind == "f":
            out.append(torch.randn(*dims, generator=gen).to(getattr(torch, dt.name)))
        else:
            out.append(torch.zeros(*dims, dtype=getattr(torch, dt.name)))
    return out


def _count_outputs(module: Any, args: tuple, torch: Any) -> int:
    try:
        with torch.no_grad():
            was = getattr(module, "training", False)
            module.eval()
            try:
                out = module(*args)
            finally:
                if was:
                    module.train()
    except Exception as e:
        raise ExportError(f"the module fails on the example inputs ({type(e).__name__}: {_first_lines(e)}); "
                          "give example_inputs it accepts") from e
    if isinstance(out, torch.Tensor):
        return 1
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return len(out)
    raise ExportError(f"the module returns a {type(out).__name__}; only a tensor or a tuple of tensors can "
                      "be compiled (return a tuple instead of a dict or a nested structure)")


def _grow(args: tuple, dyn: Mapping[int, Mapping[int, str]], torch: Any) -> tuple:
    """torch.export treats axes of length 0 or 1 as constants: repeat such symbolic axes to length 2."""
    out = list(args)
    for k, axes in dyn.items():
        for axis in axes:
            if out[k].shape[axis] < 2:
                if out[k].shape[axis] == 0:
                    raise ExportError(f"example input {k} has length 0 along symbolic axis {axis}; give a "
                                      "non-empty example")
                out[k] = torch.cat([out[k]] * 2, dim=axis)
    return tuple(out)


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings; a compile call should not."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript",
                                              "torch.fx.experimental.symbolic_shapes", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export_dynamo(module, args, names, outs, dyn, opset, torch) -> onnx.ModelProto:
    grown = _grow(args, dyn, torch) if dyn else args
    shapes = tuple(dict.fromkeys(dyn.get(k, {}), torch.export.Dim.AUTO) or None for k in range(len(args)))
    kwargs: dict[str, Any] = {"dynamo": True, "input_names": names, "output_names": outs, "verbose": False}
    if dyn:
        kwargs["dynamic_shapes"] = shapes
    if opset is not None:
        kwargs["opset_version"] = opset
    with _quiet():
        prog = torch.onnx.export(module, grown, **kwargs)
    if prog is None:  # pragma: no cover
        raise RuntimeError("the exporter returned nothing")
    return prog.model_proto


def _export_torchscript(module, args, names, outs, dyn, opset, torch) -> onnx.ModelProto:
    buf = io.BytesIO()
    axes = {names[k]: dict(ax.items()) for k, ax in dyn.items()}
    with _quiet():
        torch.onnx.export(module, args, buf, dynamo=False, input_names=names, output_names=outs,
                          dynamic_axes=axes or None, opset_version=opset or 17, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _finish(proto: onnx.ModelProto, names: Sequence[str], dyn: Mapping[int, Mapping[int, str]]) -> onnx.ModelProto:
    """Inline local functions and give the symbolic axes of the inputs the requested names."""
    if proto.functions:
        from onnx import inliner

        proto = inliner.inline_local_functions(proto)
    inputs = {vi.name: vi for vi in proto.graph.input}
    rename: dict[str, str] = {}
    for k, axes in dyn.items():
        vi = inputs.get(names[k])
        if vi is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, sym in axes.items():
            if axis < len(dims) and dims[axis].HasField("dim_param") and dims[axis].dim_param:
                rename.setdefault(dims[axis].dim_param, sym)
    if rename:
        for vi in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
            if vi.type.HasField("tensor_type"):
                for d in vi.type.tensor_type.shape.dim:
                    if d.HasField("dim_param") and d.dim_param in rename:
                        d.dim_param = rename[d.dim_param]
    return proto


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KEY = re.compile(r"aten::|not supported|No decomposition|Unsupported|unsupported|Constraint|guard", re.I)


def _first_lines(e: BaseException, n: int = 3) -> str:
    """The head of an exporter message, plus the lines naming the culprit (aten operator, guard)."""
    text = [ln.rstrip() for ln in _ANSI.sub("", str(e)).strip().splitlines() if ln.strip()]
    keep = text[:n]
    keep += [ln.strip() for ln in text[n:] if _KEY.search(ln) and len(ln) < 300][:4]
    return "\n".join(keep) + (" ..." if len(text) > len(keep) else "")


__all__ = ["EXPORTERS", "torch_to_onnx"]
