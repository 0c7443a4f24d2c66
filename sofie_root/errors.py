"""The exception hierarchy: every error sofie_root raises on purpose derives from SofieError."""

from __future__ import annotations


class SofieError(Exception):
    """Base class of every error raised by sofie_root."""


class ModelLoadError(SofieError):
    """A model file or object could not be read (missing, malformed, corrupt, foreign)."""


class ExportError(ModelLoadError):
    """A PyTorch, Keras or graph-network model could not be turned into ONNX/IR (the message says
    which layer or exporter step failed and what to do about it)."""


class InvalidGraphError(SofieError):
    """The graph is structurally wrong (dangling tensor, cycle, duplicate output, bad attribute)."""


class ShapeInferenceError(SofieError):
    """Shapes or dtypes do not fit together, or a shape is not known where it must be."""


class DataDependentShapeError(ShapeInferenceError):
    """A shape (or axis, or count) depends on tensor values unknown at compile time.

    ``tensor`` names the tensor whose value is needed. When that value comes from graph inputs,
    ``sofie_root.compile`` specialises the model on those inputs at the first call instead.
    """

    def __init__(self, message: str, tensor: str):
        super().__init__(message)
        self.tensor = tensor


class SymbolicDimensionError(ShapeInferenceError):
    """An operator needs as a number a dimension that is symbolic at compile time (the length of a
    convolution's input). ``sofie_root.compile`` then binds the symbolic dimensions of the graph
    inputs at each call instead (one compiled variant per distinct shape, cached)."""


class UnsupportedOperatorError(SofieError):
    """One or more nodes use operators (or operator variants) this version cannot compile.

    ``nodes`` lists ``(op_type, node_name, domain, opset, reason)`` for every offending node.
    """

    def __init__(self, nodes: list[tuple[str, str, str, int, str]]):
        self.nodes = list(nodes)
        lines = []
        for op_type, name, domain, opset, reason in self.nodes:
            qual = f"{domain}::{op_type}" if domain not in ("", "ai.onnx") else op_type
            lines.append(f"  - {qual} (node {name!r}, opset {opset}){': ' + reason if reason else ''}")
        super().__init__(
            f"{len(self.nodes)} node(s) use unsupported operators:\n" + "\n".join(lines)
            + "\nsofie_root.supported_ops() lists what is supported."
        )


class ResourceLimitError(SofieError):
    """A model asks for more memory than the limits allow (a tensor, the weights, the arena, the
    outputs of a call), or for sizes that would overflow 64-bit C++ integers. The message names the
    node or tensor and how to raise the limit (:func:`sofie_root.set_limits`)."""


class CompilationError(SofieError):
    """The generated C++ failed to compile (a bug in sofie_root: please report it)."""


class FunctorError(SofieError):
    """An RDataFrame functor failed: while it was made (a Python error other than a SofieError,
    MemoryError included, is wrapped in this) or during an event loop (the C++ error of an event,
    ``std::bad_alloc`` included, reaches Python as this class: RDataFrame's ``GetValue()`` and
    friends raise it). The message names the model."""


class InputError(SofieError, ValueError):
    """Arrays passed to ``infer`` do not match the model's inputs (count, shape or dtype)."""


class SofieWarning(UserWarning):
    """A model is compiled with a reading of it that the user should know about (an attribute its
    opset no longer has honoured as the input it became, a degenerate value normalised); the
    message names the file, the node and the attribute."""
