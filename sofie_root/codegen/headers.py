"""The runtime headers as text, with their includes of each other spliced in.

cling declares the CPU runtime from text, the native and GPU builds put a runtime at the top of
their translation unit, and ``sofie-root emit`` copies it into a standalone header: none of them
can follow an ``#include`` of a package file, so :func:`header_text` replaces each
``#include "file"`` that names a file of this package by that file's text (each file once; the
headers keep their include guards, so text declared twice is harmless). The files on disk stay
valid headers that include each other (``#include "<path>/runtime.hxx"`` works too).
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
#: the CPU runtime (the GPU runtime is sofie_root/gpu/gpu_runtime.cuh)
RUNTIME_PATH = PACKAGE / "codegen" / "runtime.hxx"
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[^\n]*$', re.M)


def header_text(path: str | Path, _seen: set[Path] | None = None) -> str:
    """The text of the header ``path`` with its includes of package files spliced in."""
    path = Path(path).resolve()
    seen = set() if _seen is None else _seen
    seen.add(path)

    def splice(m: re.Match) -> str:
        target = (path.parent / m.group(1)).resolve()
        if not target.is_relative_to(PACKAGE) or not target.is_file():
            return m.group(0)  # a system or user header: left to the compiler
        if target in seen:
            return f"// {m.group(1)}: spliced in above"
        return f"// ---- {m.group(1)} ----\n{header_text(target, seen)}// ---- end of {m.group(1)} ----"

    return _INCLUDE.sub(splice, path.read_text())


def runtime_text() -> str:
    """The CPU runtime header as one text."""
    return header_text(RUNTIME_PATH)
