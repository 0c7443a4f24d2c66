"""sofie_root: compile trained neural networks (ONNX) to fast C++ and run them in ROOT analyses.

>>> import sofie_root
>>> model = sofie_root.compile("model.onnx")   # doctest: +SKIP
>>> outputs = model.infer(x)                    # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import compile, supported_ops
from .errors import (
    CompilationError,
    InputError,
    InvalidGraphError,
    ModelLoadError,
    ShapeInferenceError,
    SofieError,
    UnsupportedOperatorError,
)
from .model import Model, TensorSpec

__all__ = [
    "CompilationError", "InputError", "InvalidGraphError", "Model", "ModelLoadError",
    "ShapeInferenceError", "SofieError", "TensorSpec", "UnsupportedOperatorError", "__version__",
    "compile", "supported_ops",
]
