"""Errors of the .root persistence. All derive from :class:`sofie_root.SofieError`; those about
reading derive from :class:`sofie_root.ModelLoadError`, so ``except ModelLoadError`` catches them."""

from __future__ import annotations

from sofie_root.errors import ModelLoadError, SofieError


class CorruptFileError(ModelLoadError):
    """The file is not a readable ROOT file, is truncated, or its content fails its checksums."""


class FormatVersionError(ModelLoadError):
    """The model was written with a schema version this sofie_root cannot read."""


class ModelNotFoundError(ModelLoadError):
    """The file holds no sofie_root model, or none with the requested name."""


class InvalidModelFileError(ModelLoadError):
    """The stored IR is readable but not valid (wrong types, sizes, shapes, names)."""


class ModelExistsError(SofieError, FileExistsError):
    """Saving would overwrite a model of the same name (pass ``overwrite=True`` to replace it)."""
