"""The intermediate representation: a typed dataflow graph with symbolic dimensions."""

from __future__ import annotations

from .dims import Dim, DimLike, Shape, broadcast_shapes, is_static, numel, parse_dim
from .dtypes import DType, dtype_by_name, dtype_from_numpy, dtype_from_onnx
from .graph import Graph, Node, TensorInfo

__all__ = [
    "DType", "Dim", "DimLike", "Graph", "Node", "Shape", "TensorInfo", "broadcast_shapes",
    "dtype_by_name", "dtype_from_numpy", "dtype_from_onnx", "is_static", "numel", "parse_dim",
]
