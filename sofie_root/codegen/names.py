"""Turning names from model files into safe C++ identifiers and comments.

Names in ONNX and .root files come from strangers. Nothing from them reaches generated C++ except
through these functions: identifiers are a fixed prefix, a counter and the name filtered to
``[A-Za-z0-9_]`` (so they cannot collide or inject code), and comments keep only a conservative
character set (no ``*/``, no newline, no backslash that could continue a ``//`` comment).
"""

from __future__ import annotations

import re

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]+")
_NOT_COMMENT = re.compile(r"[^A-Za-z0-9_ .:,;=+\-\[\]()<>#@]+")


def identifier(prefix: str, index: int, name: str, max_len: int = 40) -> str:
    """``prefix{index}_{filtered name}``; unique by construction through ``index``."""
    safe = _NOT_IDENT.sub("_", name)[:max_len].strip("_")
    return f"{prefix}{index}_{safe}" if safe else f"{prefix}{index}"


def comment(text: str, max_len: int = 120) -> str:
    """Text safe to put after ``//`` on a single line."""
    return _NOT_COMMENT.sub("?", str(text))[:max_len]
