"""Persistence of the IR in .root files (installed as ``sofie_root.serialization``).

Users call :meth:`sofie_root.Model.save`, :func:`sofie_root.load` and ``sofie-root
compile/inspect/emit``; this package implements them. The on-disk schema is documented in
``SCHEMA.md`` next to this file.

- :mod:`.schema`: the IR <-> JSON document + weight blob, with the checks applied on reading;
- :mod:`.writer`: writing with uproot (no ROOT needed); :mod:`.reader`: reading with uproot;
- :mod:`.emit`: the standalone C++ header whose Session reads its weights with TFile;
- :mod:`.inspect`: the description printed by ``sofie-root inspect``;
- :mod:`.errors`: the error classes (all ``sofie_root.SofieError``).
"""

from __future__ import annotations

from .errors import (
    CorruptFileError,
    FormatVersionError,
    InvalidModelFileError,
    ModelExistsError,
    ModelNotFoundError,
)
from .reader import list_models, load, read
from .schema import FORMAT_VERSION, READABLE_VERSIONS
from .writer import DEFAULT_COMPRESSION, save

__all__ = [
    "DEFAULT_COMPRESSION", "FORMAT_VERSION", "READABLE_VERSIONS", "CorruptFileError", "FormatVersionError",
    "InvalidModelFileError", "ModelExistsError", "ModelNotFoundError", "list_models", "load", "read", "save",
]
