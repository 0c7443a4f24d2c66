"""Element types: the single table mapping ONNX, numpy and C++ names of each supported dtype."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeInferenceError


@dataclass(frozen=True)
class DType:
    name: str          # numpy name, also the IR/serialised name
    onnx: int          # onnx.TensorProto elem type
    cpp: str           # C++ element type in generated code

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.name)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self.name in ("float32", "float64")

    @property
    def is_int(self) -> bool:
        return self.name.startswith(("int", "uint"))

    @property
    def is_signed(self) -> bool:
        return self.is_float or self.name.startswith("int")

    def __str__(self) -> str:
        return self.name


# onnx.TensorProto: FLOAT=1 UINT8=2 INT8=3 UINT16=4 INT16=5 INT32=6 INT64=7 BOOL=9 DOUBLE=11
# UINT32=12 UINT64=13
_ALL = [
    DType("float32", 1, "float"),
    DType("float64", 11, "double"),
    DType("int64", 7, "int64_t"),
    DType("int32", 6, "int32_t"),
    DType("int16", 5, "int16_t"),
    DType("int8", 3, "int8_t"),
    DType("uint64", 13, "uint64_t"),
    DType("uint32", 12, "uint32_t"),
    DType("uint16", 4, "uint16_t"),
    DType("uint8", 2, "uint8_t"),
    DType("bool", 9, "bool"),
]
BY_NAME = {d.name: d for d in _ALL}
BY_ONNX = {d.onnx: d for d in _ALL}

FLOAT32 = BY_NAME["float32"]
FLOAT64 = BY_NAME["float64"]
INT64 = BY_NAME["int64"]
INT32 = BY_NAME["int32"]
BOOL = BY_NAME["bool"]
UINT8 = BY_NAME["uint8"]

_ONNX_NAMES = {
    0: "UNDEFINED", 10: "FLOAT16", 8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16",
}


def dtype_from_onnx(elem_type: int, where: str = "") -> DType:
    try:
        return BY_ONNX[int(elem_type)]
    except KeyError:
        name = _ONNX_NAMES.get(int(elem_type), f"elem_type {elem_type}")
        raise ShapeInferenceError(f"{where}element type {name} is not supported") from None


def dtype_from_numpy(dt: object, where: str = "") -> DType:
    try:
        return BY_NAME[np.dtype(dt).name]
    except (KeyError, TypeError):
        raise ShapeInferenceError(f"{where}element type {dt} is not supported") from None


def dtype_by_name(name: str) -> DType:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ShapeInferenceError(f"unknown element type name {name!r}") from None
