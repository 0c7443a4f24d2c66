"""Persistence of the IR in .root files (installed as ``sofie_root.serialization``). The
versioned on-disk schema arrives with the .root-files issue; this package holds its place."""

from __future__ import annotations
