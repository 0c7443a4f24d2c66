"""RDataFrame integration (installed as ``sofie_root.rdf``): compiled models as RDataFrame columns.

- :func:`functor` (also ``sofie_root.functor``): a C++ callable for ``df.Define`` / ``df.DefineSlot``,
  one Session per slot (or per thread), no lock, allocation or Python per event;
- :func:`define`: ``df`` with the model's output as a new column, checked against ``df`` first,
  locally or on distributed RDataFrame (Dask), where the model reaches the workers by itself;
- :class:`Columns`: how a group of columns feeds a model input (padding, truncation, ordering),
  or, with ``variable=True``, unpadded with the model's symbolic length bound per event (graph
  networks: nodes and edges from RVec columns, node indices checked with ``index_of``);
- :func:`evaluate` and :func:`pad_jagged`: the same mapping on awkward arrays, in numpy, so
  columnar and event-loop results agree.
"""

from __future__ import annotations

from .distributed import is_distributed
from .functor import define, functor
from .padding import evaluate, pad_jagged
from .plan import COLUMNS_METADATA_KEY, Columns, Plan

__all__ = ["COLUMNS_METADATA_KEY", "Columns", "Plan", "define", "evaluate", "functor", "is_distributed",
           "pad_jagged"]
