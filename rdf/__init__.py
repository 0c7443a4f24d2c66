"""RDataFrame integration (installed as ``sofie_root.rdf``): functors running compiled models
inside RDataFrame event loops. The functors arrive with the RDataFrame issue; this package holds
the place in the layout the user fixed."""

from __future__ import annotations
