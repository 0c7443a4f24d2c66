"""The public entry points: ``compile`` and ``supported_ops``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from .errors import ModelLoadError
from .ir.graph import Graph
from .model import Model, SpecializingModel


def compile(
    source: str | os.PathLike | bytes | object,
    *,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
    passes: Iterable[str] | None = None,
) -> Model:
    """Compile a model to C++ and JIT it; returns a callable :class:`Model`.

    Args:
        source: a path to an ``.onnx`` file (or a ``.root`` file, ``"file.root:name"``, written by
            :meth:`Model.save`), its bytes, an ``onnx.ModelProto`` or an IR ``Graph``.
        input_shapes: shapes for graph inputs that have none (or to override them); ``None`` or a
            name inside a shape is a symbolic dimension, e.g. ``{"x": ("N", 7)}``.
        passes: names of the optimisation passes to run (default: all; ``[]`` for none).

    Raises:
        UnsupportedOperatorError: listing every node whose operator is not supported.
        ModelLoadError: the file is missing, malformed or not ONNX.

    >>> model = sofie_root.compile("higgs.onnx")    # doctest: +SKIP
    """
    if isinstance(source, Graph):
        graph = source
    elif isinstance(source, (str, os.PathLike)) and _is_root_path(source):
        if input_shapes:
            raise ModelLoadError(f"{source}: input_shapes cannot be changed for a model stored in a .root file")
        return load(source, passes=passes)
    else:
        import onnx

        from .errors import DataDependentShapeError
        from .frontends.onnx import convert_model, graph_input_ancestors, load_model

        if not isinstance(source, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
            raise ModelLoadError(
                f"cannot compile an object of type {type(source).__name__}; give a path, bytes or onnx.ModelProto"
            )
        proto, label = load_model(source)
        try:
            graph = convert_model(proto, label, input_shapes)
        except DataDependentShapeError as e:
            bound = graph_input_ancestors(proto, e.tensor)
            if not bound:
                raise
            return SpecializingModel(proto, label, input_shapes, bound, passes)
    return Model(graph, passes=passes)


def _is_root_path(source: str | os.PathLike) -> bool:
    text = os.fspath(source)
    return text.endswith(".root") or (".root:" in text and not os.path.exists(text))


def load(source: str | os.PathLike, name: str | None = None, *,
         passes: Iterable[str] | None = None) -> Model:
    """Load a model saved with :meth:`Model.save`: ``load("model.root")`` (the file's only model)
    or ``load("model.root:name")``. The C++ is regenerated from the stored IR; outputs are
    bit-for-bit those of the saved model.

    Raises:
        ModelLoadError: (subclasses in ``sofie_root.serialization.errors``) the file is missing,
            truncated, corrupt, of an unreadable format version, or holds no such model.
    """
    from .serialization.reader import load as _load

    return _load(source, name, passes=passes)


def supported_ops() -> list[str]:
    """Sorted names of the supported operators (custom domains as ``domain::Op``)."""
    from .ops import REGISTRY

    return sorted(op if not dom else f"{dom}::{op}" for (dom, op), impl in REGISTRY.items()
                  if not getattr(impl, "internal", False))
