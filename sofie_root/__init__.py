"""sofie_root: compile trained neural networks (ONNX) to fast C++ and run them in ROOT analyses.

>>> import sofie_root
>>> model = sofie_root.compile("model.onnx")   # doctest: +SKIP
>>> outputs = model.infer(x)                    # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import compile, load, supported_ops
from .errors import (
    CompilationError,
    ExportError,
    FunctorError,
    InputError,
    InvalidGraphError,
    ModelLoadError,
    ResourceLimitError,
    ShapeInferenceError,
    SofieError,
    SofieWarning,
    UnsupportedOperatorError,
)
from .gpu import gpu_available
from .limits import get_limits, set_limits
from .model import Model, TensorSpec
from .ops.custom import register_operator, registered_operators, unregister_operator


def _preload_root() -> None:
    """Start ROOT and cling when the package is imported, so the first compile is quick and
    processes forked afterwards inherit a ready interpreter. ``SOFIE_ROOT_LAZY=1`` defers it to
    the first compile; without ROOT installed everything but the JIT still works."""
    import os

    if os.environ.get("SOFIE_ROOT_LAZY") or os.environ.get("SOFIE_ROOT_BACKEND") in ("cuda", "hip", "gpu-emulated"):
        return
    try:
        from .jit import cling

        cling.root()
    except Exception:  # no ROOT, or a broken one: only the cling paths need it
        pass


_preload_root()

from .rdf.functor import functor  # noqa: E402  (RDataFrame functors; ROOT is needed only when called)


def __getattr__(name: str):
    """``sofie_root.GraphNetwork`` / ``graph_independent`` and ``sofie_root.awkward``, imported on first use."""
    if name == "awkward":
        import importlib

        return importlib.import_module(".awkward", __name__)
    if name in ("GraphNetwork", "graph_independent"):
        from .frontends import gnn

        return getattr(gnn, name)
    raise AttributeError(f"module 'sofie_root' has no attribute {name!r}")


__all__ = [
    "CompilationError", "ExportError", "FunctorError", "GraphNetwork", "InputError", "InvalidGraphError", "Model", "ModelLoadError",
    "ResourceLimitError", "ShapeInferenceError", "SofieError", "SofieWarning", "TensorSpec", "UnsupportedOperatorError",
    "__version__", "compile", "functor", "get_limits", "gpu_available", "graph_independent", "load", "register_operator",
    "registered_operators", "set_limits", "supported_ops", "unregister_operator",
]
