"""Symbolic tensor dimensions.

A dimension in the IR is either a plain ``int`` or a :class:`Dim`: a polynomial with integer
coefficients over named symbols (``N``, ``N*3``, ``2*N + 1``). Shape-inference code written with
ordinary arithmetic (``(h + pad - k) // s + 1``) works unchanged on both, which is what keeps a
symbolic batch dimension symbolic through Flatten, Reshape, MatMul and friends. The generated C++
evaluates the same polynomials at run time from the symbol values passed to ``infer``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..errors import ShapeInferenceError

# A monomial is a sorted tuple of symbol names (with repetition for powers); () is the constant.
_Monomial = tuple[str, ...]

_SYMBOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Dim:
    """A symbolic dimension: ``sum(coef * prod(symbols))`` with integer coefficients."""

    __slots__ = ("_hash", "terms")

    def __init__(self, terms: Mapping[_Monomial, int]):
        self.terms: dict[_Monomial, int] = {m: c for m, c in terms.items() if c != 0}
        self._hash = hash(frozenset(self.terms.items()))

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def symbol(name: str) -> Dim:
        if not _SYMBOL_RE.match(name):
            raise ShapeInferenceError(f"invalid symbolic dimension name {name!r}")
        return Dim({(name,): 1})

    @staticmethod
    def wrap(value: DimLike) -> DimLike:
        """Normalise: a Dim with only a constant term becomes an int."""
        if isinstance(value, Dim):
            if not value.terms:
                return 0
            if set(value.terms) == {()}:
                return value.terms[()]
            return value
        if isinstance(value, bool):
            raise TypeError("bool is not a dimension")
        return int(value)

    @staticmethod
    def _as_terms(value: DimLike) -> dict[_Monomial, int]:
        if isinstance(value, Dim):
            return dict(value.terms)
        return {(): int(value)} if int(value) else {}

    # -- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other: DimLike) -> DimLike:
        terms = self._as_terms(self)
        for m, c in self._as_terms(other).items():
            terms[m] = terms.get(m, 0) + c
        return Dim.wrap(Dim(terms))

    __radd__ = __add__

    def __neg__(self) -> DimLike:
        return Dim.wrap(Dim({m: -c for m, c in self.terms.items()}))

    def __sub__(self, other: DimLike) -> DimLike:
        return self + (-other if isinstance(other, Dim) else -int(other))

    def __rsub__(self, other: DimLike) -> DimLike:
        return (-self) + other

    def __mul__(self, other: DimLike) -> DimLike:
        terms: dict[_Monomial, int] = {}
        for m1, c1 in self._as_terms(self).items():
            for m2, c2 in self._as_terms(other).items():
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, 0) + c1 * c2
        return Dim.wrap(Dim(terms))

    __rmul__ = __mul__

    def __floordiv__(self, other: DimLike) -> DimLike:
        """Exact division only (by an int dividing every coefficient, or by a monomial)."""
        if isinstance(other, Dim):
            if len(other.terms) == 1:
                (mono, coef), = other.terms.items()
                out: dict[_Monomial, int] = {}
                for m, c in self.terms.items():
                    rest = list(m)
                    for s in mono:
                        if s not in rest:
                            break
                        rest.remove(s)
                    else:
                        if c % coef == 0:
                            out[tuple(rest)] = c // coef
                            continue
                    break
                else:
                    return Dim.wrap(Dim(out))
            raise ShapeInferenceError(f"cannot divide symbolic dimension {self} by {other}")
        other = int(other)
        if other == 0:
            raise ShapeInferenceError("division of a dimension by zero")
        if all(c % other == 0 for c in self.terms.values()):
            return Dim.wrap(Dim({m: c // other for m, c in self.terms.items()}))
        raise ShapeInferenceError(f"cannot divide symbolic dimension {self} by {other} exactly")

    def __rfloordiv__(self, other: DimLike) -> DimLike:
        raise ShapeInferenceError(f"cannot divide {other} by the symbolic dimension {self}")

    def __mod__(self, other: DimLike) -> DimLike:
        if not isinstance(other, Dim):
            other = int(other)
            if other and all(c % other == 0 for c in self.terms.values()):
                return 0
        raise ShapeInferenceError(f"cannot take symbolic dimension {self} modulo {other}")

    # -- comparison ---------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Dim):
            return self.terms == other.terms
        if isinstance(other, (int,)) and not isinstance(other, bool):
            return False  # a wrapped Dim is never constant
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        return True

    def __index__(self) -> int:
        raise ShapeInferenceError(f"the dimension {self} is symbolic where a number is needed")

    __int__ = __index__

    # -- printing -----------------------------------------------------------------------------
    @property
    def symbols(self) -> set[str]:
        return {s for m in self.terms for s in m}

    def _render(self, name: callable) -> str:
        parts = []
        for m in sorted(self.terms, key=lambda m: (-len(m), m)):
            c = self.terms[m]
            factors = [name(s) for s in m]
            if c != 1 or not factors:
                factors.insert(0, str(c))
            parts.append("*".join(factors))
        return " + ".join(parts).replace("+ -", "- ")

    def __str__(self) -> str:
        return self._render(lambda s: s)

    def __repr__(self) -> str:
        return f"Dim({self})"

    def to_cpp(self, name: callable) -> str:
        """C++ expression (int64 arithmetic) with ``name(symbol)`` giving each symbol's variable."""
        return "(" + self._render(name) + ")"

    def substitute(self, values: Mapping[str, DimLike]) -> DimLike:
        """Replace symbols by dimensions (ints or other Dims)."""
        total: DimLike = 0
        for m, c in self.terms.items():
            term: DimLike = c
            for sym in m:
                term = term * (values[sym] if sym in values else Dim.symbol(sym))
            total = total + term
        return Dim.wrap(total) if isinstance(total, Dim) else total

    def evaluate(self, values: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms.items():
            v = c
            for s in m:
                v *= int(values[s])
            total += v
        return total


DimLike = int | Dim
Shape = tuple[DimLike, ...]


def is_static(shape: Iterable[DimLike]) -> bool:
    return all(not isinstance(d, Dim) for d in shape)


def numel(shape: Iterable[DimLike]) -> DimLike:
    total: DimLike = 1
    for d in shape:
        total = total * d
    return total


def strides(shape: Iterable[DimLike]) -> list[DimLike]:
    """Row-major element strides of a shape (symbolic dims included)."""
    shape = list(shape)
    out: list[DimLike] = [1] * len(shape)
    acc: DimLike = 1
    for k in reversed(range(len(shape))):
        out[k] = acc
        acc = acc * shape[k]
    return out


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


def parse_dim(text: str) -> DimLike:
    """Parse the output of ``str(dim)`` back (``2*N*M + 3 - K``); used by serialisation."""
    text = text.strip()
    if not text:
        raise ShapeInferenceError("empty dimension expression")
    total: DimLike = 0
    sign = 1
    term: DimLike = 1
    expect_factor = True
    for num, sym, other in _TOKEN.findall(text):
        if num or sym:
            if not expect_factor:
                raise ShapeInferenceError(f"malformed dimension expression {text!r}")
            term = term * (int(num) if num else Dim.symbol(sym))
            expect_factor = False
        elif other == "*" and not expect_factor:
            expect_factor = True
        elif other in "+-" and not expect_factor:
            total = total + sign * term
            sign, term, expect_factor = (1 if other == "+" else -1), 1, True
        elif other == "-" and expect_factor and term == 1:
            sign = -sign
        else:
            raise ShapeInferenceError(f"malformed dimension expression {text!r}")
    if expect_factor:
        raise ShapeInferenceError(f"malformed dimension expression {text!r}")
    return Dim.wrap(total + sign * term)


def broadcast_shapes(*shapes: Shape, where: str = "") -> Shape:
    """Numpy/ONNX multidirectional broadcasting, symbolic dims included."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[DimLike] = []
    for axis in range(rank):
        dims = [s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0]
        result: DimLike = 1
        for d in dims:
            if isinstance(d, int) and d == 1:
                continue
            if isinstance(result, int) and result == 1:
                result = d
            elif result == d:
                continue
            elif isinstance(d, Dim) and isinstance(result, int):
                continue  # the symbolic one must equal the static one at run time
            elif isinstance(result, Dim) and isinstance(d, int):
                result = d
            else:
                raise ShapeInferenceError(
                    f"{where}shapes {[tuple(map(str, s)) for s in shapes]} cannot be broadcast together"
                )
        out.append(result)
    return tuple(out)
