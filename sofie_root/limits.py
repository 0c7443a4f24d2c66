"""Resource limits: how many bytes a model may ask for, at compile time and at run time.

A model file is small but may describe tensors of any size (a 300-byte ``ConstantOfShape`` of
shape ``[30000, 30000]``, a ``Tile`` by 2^33). Every size is checked against these limits before
anything is allocated or written into C++, so such a model fails with a
:class:`~sofie_root.errors.ResourceLimitError` naming the node or tensor instead of exhausting the
machine's memory or overflowing a C++ integer.

- ``compile_bytes`` (default 2 GiB): any one tensor, the weights, and the arena the declared
  shapes need, each evaluated with every symbolic dimension at 1 (one event). The largest HEP
  models (ParticleNet, transformers for jet tagging) need well under 100 MB per event.
- ``run_bytes`` (default 16 GiB): the outputs plus the arena of one ``infer`` call, for the batch
  actually given.

Raise them with :func:`set_limits` or the environment variables ``SOFIE_ROOT_MAX_COMPILE_BYTES``
and ``SOFIE_ROOT_MAX_RUN_BYTES`` (read when sofie_root is imported; plain byte counts).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Mapping

from .errors import ResourceLimitError, SofieError
from .ir.dims import Dim, DimLike

DEFAULT_COMPILE_BYTES = 1 << 31
DEFAULT_RUN_BYTES = 1 << 34

#: C++ sizes are std::int64_t / std::size_t: no size or dimension may come near 2^63
_HARD_CAP = 1 << 62


def _from_env(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SofieError(f"${name} must be a number of bytes, got {text!r}") from None
    if not 0 < value < _HARD_CAP:
        raise SofieError(f"${name} must be between 1 and 2^62 bytes, got {value}")
    return value


_LIMITS = {"compile_bytes": _from_env("SOFIE_ROOT_MAX_COMPILE_BYTES", DEFAULT_COMPILE_BYTES),
           "run_bytes": _from_env("SOFIE_ROOT_MAX_RUN_BYTES", DEFAULT_RUN_BYTES)}


#: bound methods to call when the run-time limit changes (models forget the call sizes they checked)
_ON_RUN_LIMIT_CHANGE: list[weakref.WeakMethod] = []


def on_run_limit_change(method) -> None:
    """Call ``method()`` (a bound method, held weakly) whenever ``set_limits`` changes run_bytes."""
    _ON_RUN_LIMIT_CHANGE[:] = [m for m in _ON_RUN_LIMIT_CHANGE if m() is not None]
    _ON_RUN_LIMIT_CHANGE.append(weakref.WeakMethod(method))


def get_limits() -> dict[str, int]:
    """The current limits: ``{"compile_bytes": ..., "run_bytes": ...}``."""
    return dict(_LIMITS)


def set_limits(*, compile_bytes: int | None = None, run_bytes: int | None = None) -> dict[str, int]:
    """Change the limits (``None`` keeps one); returns the previous ones, so that
    ``old = set_limits(compile_bytes=8 << 30); ...; set_limits(**old)`` restores them.
    The compile-time limit applies to models compiled (or loaded) afterwards; the run-time limit
    is read at every call, so it also applies to models already compiled."""
    old = get_limits()
    for key, value in (("compile_bytes", compile_bytes), ("run_bytes", run_bytes)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _HARD_CAP:
            raise SofieError(f"set_limits: {key} must be an int between 1 and 2^62, got {value!r}")
        _LIMITS[key] = value
    if run_bytes is not None and run_bytes != old["run_bytes"]:
        for ref in list(_ON_RUN_LIMIT_CHANGE):
            method = ref()
            if method is not None:
                method()
    return old


def _fmt(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def at_one(d: DimLike) -> int:
    """A dimension's value for one event: every symbol set to 1."""
    if isinstance(d, Dim):
        return d.evaluate(dict.fromkeys(d.symbols, 1))
    return int(d)


def shape_bytes(shape: Iterable[DimLike], itemsize: int) -> int:
    """Bytes of a tensor of ``shape`` with every symbol at 1 (negative dims count as 0)."""
    n = itemsize
    for d in shape:
        n *= max(at_one(d), 0)
    return n


def check_compile_bytes(nbytes: int, what: str, per_event: bool = False) -> None:
    """Refuse ``what`` (a phrase naming the node or tensor) if it needs more than the
    compile-time limit (``per_event``: a size computed with every symbol at 1)."""
    limit = _LIMITS["compile_bytes"]
    if nbytes > limit:
        raise ResourceLimitError(
            f"{what} needs {_fmt(nbytes)}{' per event' if per_event else ''}, above the limit of "
            f"{_fmt(limit)}; raise it with sofie_root.set_limits(compile_bytes=...) or "
            "$SOFIE_ROOT_MAX_COMPILE_BYTES if the model really needs it")


def check_shape(shape: Iterable[DimLike], itemsize: int, what: str) -> None:
    """Refuse a tensor shape whose size (one event) is above the compile-time limit, or any of
    whose dimensions or coefficients could overflow C++ 64-bit sizes."""
    shape = tuple(shape)
    for d in shape:
        coefs = d.terms.values() if isinstance(d, Dim) else (d,)
        if any(abs(int(c)) >= _HARD_CAP for c in coefs):
            raise ResourceLimitError(f"{what}: dimension {d} is too large for 64-bit sizes")
    check_compile_bytes(shape_bytes(shape, itemsize), what, any(isinstance(d, Dim) for d in shape))


def check_run_bytes(nbytes: int, what: str) -> None:
    limit = _LIMITS["run_bytes"]
    if nbytes > limit:
        raise ResourceLimitError(
            f"{what} needs {_fmt(nbytes)}, above the run-time limit of {_fmt(limit)}; "
            "use smaller batches, or raise the limit with sofie_root.set_limits(run_bytes=...) or "
            "$SOFIE_ROOT_MAX_RUN_BYTES")


def run_bytes(shapes: Iterable[tuple[Iterable[DimLike], int]], values: Mapping[str, int]) -> int:
    """Total bytes of tensors ``(shape, itemsize)`` for the given symbol values."""
    total = 0
    for shape, itemsize in shapes:
        n = itemsize
        for d in shape:
            n *= max(d.evaluate(values) if isinstance(d, Dim) else int(d), 0)
        total += n
    return total
