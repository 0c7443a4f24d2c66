"""The public entry points: ``compile`` and ``supported_ops``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager

from .errors import InvalidGraphError, ModelLoadError, ResourceLimitError, SofieError
from .ir.graph import Graph
from .model import Model, SpecializingModel


def compile(
    source: str | os.PathLike | bytes | object,
    *,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
    passes: Iterable[str] | None = None,
    example_inputs: Sequence[object] | None = None,
    dynamic_batch: bool = True,
    backend: str | None = None,
    **importer_options: object,
) -> Model:
    """Compile a model to C++ and JIT it; returns a callable :class:`Model`.

    Args:
        source: a path to an ``.onnx`` file (or a ``.root`` file, ``"file.root:name"``, written by
            :meth:`Model.save`), its bytes, an ``onnx.ModelProto`` or an IR ``Graph``.
        input_shapes: shapes for graph inputs that have none (or to override them); ``None`` or a
            name inside a shape is a symbolic dimension, e.g. ``{"x": ("N", 7)}``.
        passes: names of the optimisation passes to run (default: all; ``[]`` for none).
        backend: what compiles the generated C++: ``"cling"`` (ROOT's JIT, in memory) or
            ``"native"`` (the system C++ compiler, ``$CXX`` or ``c++``, at ``-O3 -march=native``;
            the shared library is cached in ``$SOFIE_ROOT_CACHE``, default ``~/.cache/sofie_root``).
            ``None``: ``$SOFIE_ROOT_BACKEND``, else ``"cling"``. Both give the same results and
            the same :class:`Model`; see :mod:`sofie_root.jit.native`.

    Models from other frameworks go through an importer first (the framework is imported only
    when such a model is given):

    - a PyTorch ``nn.Module`` with ``example_inputs=(x, ...)``, or a TorchScript ``.pt`` file with
      ``input_shapes``: exported to ONNX by ``torch.onnx.export`` (see
      :func:`sofie_root.frontends.torch.torch_to_onnx` for ``exporter=``, ``dynamic_dims=``,
      ``input_names=``, ``output_names=``, ``opset=``);
    - a Keras 3 model or a ``.keras`` file (see :func:`sofie_root.frontends.keras.keras_to_onnx`);
    - an XGBoost, LightGBM or scikit-learn tree ensemble (``xgboost.Booster``, ``XGBClassifier``,
      ``lightgbm.Booster``, ``LGBMRegressor``, ``GradientBoostingClassifier``, ...), converted by
      onnxmltools/skl2onnx (see :func:`sofie_root.frontends.trees.trees_to_onnx`, ``n_features=``);
    - a :class:`sofie_root.frontends.gnn.GraphNetwork`.

    ``dynamic_batch`` (default True) keeps the first dimension of every input symbolic (``N``).

    Raises:
        UnsupportedOperatorError: listing every node whose operator is not supported.
        ModelLoadError: the file is missing, malformed or not ONNX.
        InvalidGraphError / ShapeInferenceError: the model is malformed (naming the node).
        ResourceLimitError: the model asks for more memory than :func:`sofie_root.set_limits` allows.
        ValueError: ``backend`` is neither ``"cling"`` nor ``"native"``, or ``passes`` names an
            unknown pass.
        CompilationError: ``backend="native"`` and no working C++ compiler was found.

    >>> model = sofie_root.compile("higgs.onnx")    # doctest: +SKIP
    """
    backend = _check_backend(backend)
    passes = _check_passes(passes)
    with _as_sofie_errors(source):
        return _compile(source, input_shapes, passes, example_inputs, dynamic_batch, backend, importer_options)


@contextmanager
def _as_sofie_errors(source: object):
    """The last line of defence behind the per-node checks: whatever a malformed model makes a
    step raise leaves ``compile``/``load`` as a SofieError that names the model."""
    try:
        yield
    except SofieError:
        raise
    except MemoryError as e:
        raise ResourceLimitError(f"{_label(source)}: ran out of memory ({e}); the model asks for more than "
                                 "this machine has") from None
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, AttributeError, RecursionError) as e:
        raise InvalidGraphError(f"{_label(source)}: the model cannot be compiled ({type(e).__name__}: {e}); "
                                "if it is a valid model, this is a bug in sofie_root: please report it") from e


def _label(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"<{type(source).__name__}>"


def _compile(source, input_shapes, passes, example_inputs, dynamic_batch, backend, importer_options) -> Model:
    if isinstance(source, Graph):
        graph = source
    elif isinstance(source, (str, os.PathLike)) and _is_root_path(source):
        if input_shapes:
            raise ModelLoadError(f"{source}: input_shapes cannot be changed for a model stored in a .root file")
        return load(source, passes=passes, backend=backend)
    else:
        imported = _import_foreign(source, input_shapes, example_inputs, dynamic_batch, importer_options)
        if imported is not None:
            source, input_shapes = imported, None
        elif example_inputs is not None or importer_options:
            raise ModelLoadError(
                f"example_inputs= and importer options {sorted(importer_options)} only apply to PyTorch, "
                "Keras and graph-network models"
            )
        import onnx

        from .errors import DataDependentShapeError, SymbolicDimensionError
        from .frontends.onnx import convert_model, graph_input_ancestors, load_model

        if not isinstance(source, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
            raise ModelLoadError(
                f"cannot compile an object of type {type(source).__name__}; give a path, bytes, an "
                "onnx.ModelProto, a torch.nn.Module (with example_inputs=), a Keras model or a GraphNetwork"
            )
        proto, label = load_model(source)
        try:
            graph = convert_model(proto, label, input_shapes)
        except SymbolicDimensionError:
            return SpecializingModel(proto, label, input_shapes, [], passes, backend=backend, bind_shapes=True)
        except DataDependentShapeError as e:
            bound = graph_input_ancestors(proto, e.tensor)
            if not bound:
                raise
            return SpecializingModel(proto, label, input_shapes, bound, passes, backend=backend)
    return Model(graph, passes=passes, backend=backend)


def _check_backend(backend: str | None) -> str:
    """The backend to use, checked now (before any import or conversion work); for "native",
    also that a compiler exists, so a model compiled lazily does not fail at its first call."""
    from .jit import native

    backend = native.resolve_backend(backend)
    if backend == "native":
        native.compiler()
    elif backend in ("cuda", "hip", "gpu-emulated"):
        from .gpu.build import _command

        _command(backend)  # the toolchain (nvcc and cuBLAS, hipcc, or a C++ compiler), before any work
    return backend


def _check_passes(passes: Iterable[str] | None) -> list[str] | None:
    """The pass names as a list, checked now (a ValueError for an unknown one, as before any
    model is read)."""
    if passes is None:
        return None
    from .passes import PASSES

    passes = list(passes)
    for name in passes:
        if name not in PASSES:
            raise ValueError(f"unknown pass {name!r}; known: {sorted(PASSES)}")
    return passes


def _framework(obj: object) -> str | None:
    """'torch', 'keras' or 'gnn' when ``obj`` comes from that framework (checked without importing it)."""
    for cls in type(obj).__mro__:
        mod = cls.__module__ or ""
        if mod == "sofie_root.frontends.gnn":
            return "gnn"
        if mod == "torch" or mod.startswith("torch."):
            return "torch"
        if mod == "keras" or mod.startswith("keras."):
            return "keras"
        if mod.split(".", 1)[0] in ("xgboost", "lightgbm", "sklearn"):
            return "trees"
    return None


def _import_foreign(source, input_shapes, example_inputs, dynamic_batch, options):
    """The ONNX model of a PyTorch/Keras/graph-network source, or None for anything else."""
    kind = None
    if isinstance(source, (str, os.PathLike)):
        suffix = os.fspath(source).lower().rsplit(".", 1)[-1] if "." in os.fspath(source) else ""
        kind = {"pt": "torch", "pth": "torch", "ts": "torch", "keras": "keras"}.get(suffix)
    elif not isinstance(source, (bytes, bytearray)):
        kind = _framework(source)
    if kind is None:
        return None
    if kind == "torch":
        from .frontends.torch import torch_to_onnx

        return torch_to_onnx(source, example_inputs, input_shapes=input_shapes, dynamic_batch=dynamic_batch,
                             **options)
    if example_inputs is not None:
        raise ModelLoadError("example_inputs= is for PyTorch models; Keras, tree-ensemble and graph-network "
                             "models know their input shapes")
    if kind == "trees":
        from .frontends.trees import trees_to_onnx

        if input_shapes:
            raise ModelLoadError("input_shapes= does not apply to tree ensembles: their input is [N, n_features] "
                                 "(give n_features= if the model does not record it)")

        return trees_to_onnx(source, dynamic_batch=dynamic_batch, **options)
    if kind == "keras":
        from .frontends.keras import keras_to_onnx

        return keras_to_onnx(source, input_shapes=input_shapes, dynamic_batch=dynamic_batch, **options)
    from .frontends.gnn import gnn_to_onnx

    return gnn_to_onnx(source, **options)


def _is_root_path(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a model in a .root file. An existing file is that file, whatever
    its name (``a.root:mlp`` may be a real file name): a ROOT file by its magic bytes; the
    ``file.root:model`` syntax applies only when the whole path does not exist."""
    text = os.fspath(source)
    if os.path.isfile(text):
        try:
            with open(text, "rb") as f:
                return f.read(4) == b"root"
        except OSError:
            return False
    return text.endswith(".root") or (".root:" in text and not os.path.exists(text))


def load(source: str | os.PathLike, name: str | None = None, *,
         passes: Iterable[str] | None = None, backend: str | None = None) -> Model:
    """Load a model saved with :meth:`Model.save`: ``load("model.root")`` (the file's only model)
    or ``load("model.root:name")``. The C++ is regenerated from the stored IR; outputs are
    bit-for-bit those of the saved model. ``backend`` is as for :func:`compile`.

    Raises:
        ModelLoadError: (subclasses in ``sofie_root.serialization.errors``) the file is missing,
            truncated, corrupt, of an unreadable format version, or holds no such model.
    """
    from .serialization.reader import load as _load

    backend = _check_backend(backend)
    passes = _check_passes(passes)
    with _as_sofie_errors(source):
        return _load(source, name, passes=passes, backend=backend)


def supported_ops() -> list[str]:
    """Sorted names of the built-in operators (custom domains as ``domain::Op``); operators added
    with :func:`sofie_root.register_operator` are listed by ``sofie_root.registered_operators()``."""
    from .ops import REGISTRY

    return sorted(op if not dom else f"{dom}::{op}" for (dom, op), impl in REGISTRY.items()
                  if not getattr(impl, "internal", False) and not getattr(impl, "user_defined", False))
