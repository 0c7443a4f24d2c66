"""Writing models into .root files with uproot (pure Python: no ROOT installation is needed)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sofie_root import __version__
from sofie_root.errors import SofieError
from sofie_root.ir.graph import Graph
from sofie_root.passes.layout import derived_weights

from .errors import CorruptFileError, ModelExistsError
from .schema import CHUNK_BYTES, FORMAT_VERSION, MODEL_NAME_RE, BlobBuilder, encode_graph, encode_info

#: chosen by measurement (benchmarks/serialization.py): float weights compress by 6-9 %; ZSTD at
#: level 1 gives the same size as levels 5 and 9 (within 0.001 %) and within 1 % of LZMA's, while
#: writing a 50 MB model in 0.5 s against over a minute for LZMA and 12 s for ZLIB; LZ4 does not
#: compress float weights at all
DEFAULT_COMPRESSION = "ZSTD:1"
ALGORITHMS = ("ZSTD", "LZMA", "LZ4", "ZLIB", "NONE")

#: TTree entries (chunks) per extend call, i.e. per basket
_CHUNKS_PER_BASKET = 8


def parse_compression(spec: str | None) -> Any:
    """``"ZSTD:5"``, ``"lzma"``, ``"LZ4:4"``, ``"zlib:1"``, ``"none"`` -> an uproot compression object."""
    import uproot

    spec = DEFAULT_COMPRESSION if spec is None else str(spec)
    m = re.fullmatch(r"\s*([A-Za-z0-9]+)\s*(?::\s*(\d+))?\s*", spec)
    alg = m.group(1).upper() if m else ""
    if not m or alg not in ALGORITHMS:
        raise SofieError(f"unknown compression {spec!r}; use ALG or ALG:LEVEL with ALG one of "
                         f"{', '.join(ALGORITHMS)} (for example {DEFAULT_COMPRESSION})")
    if alg == "NONE":
        return None
    level = int(m.group(2)) if m.group(2) else {"ZSTD": 1, "LZMA": 8, "LZ4": 4, "ZLIB": 6}[alg]
    top = 22 if alg == "ZSTD" else (12 if alg == "LZ4" else 9)
    if not 1 <= level <= top:
        raise SofieError(f"compression level {level} is out of range for {alg} (1 to {top})")
    return {"ZSTD": uproot.ZSTD, "LZMA": uproot.LZMA, "LZ4": uproot.LZ4, "ZLIB": uproot.ZLIB}[alg](level)


def default_name(graph: Graph) -> str:
    """The model's name in the file when none is given: the ONNX file's stem, else the graph name."""
    source = graph.metadata.get("source", "")
    for cand in (Path(source).stem if source and not source.startswith("<") else "", graph.name, "model"):
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", cand or "").strip("_.")[:100]
        if safe and MODEL_NAME_RE.match(safe):
            return safe
    return "model"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
        raise SofieError(f"invalid model name {name!r}: use up to 128 letters, digits and _ . + - "
                         "(not starting with . + or -)")
    return name


def _spec(graph: Graph, name: str) -> dict[str, Any]:
    return encode_info(graph.info(name))


def build_document(graph: Graph, generated, name: str, model_hash: str,
                   columns: Mapping[str, Sequence[str]] | Sequence[str] | None = None) -> tuple[str, bytes]:
    """The JSON text and the weight blob of one model (the blob starts with exactly the bytes the
    generated Session expects: ``Generated.weight_blob``)."""
    builder = BlobBuilder()
    placed: dict[str, dict] = {}
    for slot in generated.weights:
        ref = builder.add(graph.initializers[slot.name])
        if ref["offset"] != slot.offset:  # the emitter's layout is also 64-byte aligned, in order
            raise SofieError(f"internal error: weight {slot.name!r} laid out at {ref['offset']}, "
                             f"the session expects {slot.offset}")
        placed[slot.name] = ref
    session_nbytes = builder.size
    if session_nbytes != generated.weight_bytes:
        raise SofieError("internal error: weight blob size differs from the session's")
    graph_doc = encode_graph(graph, builder, placed=placed)
    blob = builder.bytes()
    hints = _column_hints(graph, columns)
    derived = derived_weights(graph)
    md = graph.metadata
    doc = {
        "format_version": FORMAT_VERSION,
        "sofie_root_version": __version__,
        "model": {
            "name": name,
            "model_hash": model_hash,
            "onnx": {"producer_name": md.get("producer_name", ""), "producer_version": md.get("producer_version", ""),
                     "opset": int(md["onnx_opset"]) if str(md.get("onnx_opset", "")).isdigit() else 0},
            "inputs": [_spec(graph, n) for n in graph.inputs],
            "outputs": [_spec(graph, n) for n in graph.outputs],
            "symbols": list(graph.symbols),
            "column_hints": hints,
            "parameters": int(sum(a.size for k, a in graph.initializers.items() if k not in derived)),
            "onnx_bytes": _onnx_bytes(md.get("source", "")),
        },
        "blob": {
            "nbytes": len(blob),
            "session_nbytes": session_nbytes,
            "chunk_bytes": CHUNK_BYTES,
            "chunks": (len(blob) + CHUNK_BYTES - 1) // CHUNK_BYTES,
            "sha256": hashlib.sha256(blob).hexdigest(),
        },
        "graph": graph_doc,
    }
    return document_text(doc), blob


def document_text(doc: Mapping[str, Any]) -> str:
    """The stored JSON text: compact, ASCII, ``format_version`` first and the SHA-256 of all the
    text before it last."""
    doc = {k: v for k, v in doc.items() if k != "sha256"}
    body = json.dumps(doc, allow_nan=False, separators=(",", ":"), ensure_ascii=True)
    head = body[:-1]
    return head + ',"sha256":"' + hashlib.sha256(head.encode()).hexdigest() + '"}'


def write_entry(f, name: str, text: str, blob: bytes) -> None:
    """Write one model directory (``name/ir``, ``name/weights``) into an open uproot file."""
    f[f"{name}/ir"] = text
    tree = f.mktree(f"{name}/weights", {"chunk": "var * uint8"},
                    title="sofie_root weight blob: the entries' bytes concatenated")
    _fill(tree, blob)


def _onnx_bytes(source: str) -> int | None:
    """Size of the ONNX file the model was compiled from, if it is still there (for comparisons)."""
    try:
        if not (source.endswith(".onnx") and os.path.isfile(source)):
            return None
        import onnx

        total = os.path.getsize(source)
        proto = onnx.load(source, load_external_data=False)
        locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
        for loc in locations:
            p = Path(source).parent / loc
            if p.is_file():
                total += p.stat().st_size
        return total
    except Exception:
        return None


def _column_hints(graph: Graph, columns) -> dict[str, list[str]]:
    if columns is None:
        return {}
    if isinstance(columns, Mapping):
        hints = {str(k): [str(c) for c in ([v] if isinstance(v, str) else v)] for k, v in columns.items()}
    else:
        if len(graph.inputs) != 1:
            raise SofieError("give column hints as {input name: [columns]} for a model with several inputs")
        hints = {graph.inputs[0]: [str(c) for c in ([columns] if isinstance(columns, str) else columns)]}
    unknown = sorted(set(hints) - set(graph.inputs))
    if unknown:
        raise SofieError(f"column hints name {unknown}, which are not inputs of the model ({graph.inputs})")
    return hints


def save(model, path: str | os.PathLike, name: str | None = None, *, compression: str | None = None,
         overwrite: bool = False, columns=None) -> str:
    """Write ``model`` (a :class:`sofie_root.Model`) into the ROOT file ``path``, in the directory
    ``name``; other models in the file are kept. Returns the name used."""
    import uproot

    graph: Graph = model.graph
    name = check_name(default_name(graph) if name is None else name)
    comp = parse_compression(compression)
    text, blob = build_document(graph, model._generated, name, model.hash, columns)
    path = Path(path)
    _check_readable(text, blob, f"{path}:{name}")
    if path.is_dir():
        raise SofieError(f"{path}: is a directory")
    try:
        if path.exists() and path.stat().st_size > 0:
            try:
                f = uproot.update(str(path))
            except Exception as e:
                raise CorruptFileError(f"{path}: exists and is not a ROOT file that can be updated "
                                       f"({type(e).__name__}: {e}); refusing to overwrite it") from e
        else:
            f = uproot.recreate(str(path))
    except OSError as e:
        raise SofieError(f"{path}: cannot write ({e})") from e
    with f:
        existing = {k.split(";")[0] for k in f.keys(recursive=False)}
        if name in existing:
            if not overwrite:
                raise ModelExistsError(f"{path}: already holds a model (or object) named {name!r}; "
                                       "pass overwrite=True (sofie-root compile --overwrite) to replace it, or "
                                       "choose another name")
            del f[name]
        f.compression = comp
        write_entry(f, name, text, blob)
    return name


def _check_readable(text: str, blob: bytes, where: str) -> None:
    """Run the reader's own checks on what is about to be written: a model that could not be
    loaded back is refused here, before any file is touched, rather than found out at ``load``."""
    from .reader import check_document

    try:
        check_document(text, blob, where)
    except SofieError as e:
        raise SofieError(f"internal error: refusing to write a model the reader would reject "
                         f"(a bug in sofie_root: please report it): {e}") from e


def _fill(tree, blob: bytes) -> None:
    import awkward as ak

    data = np.frombuffer(blob, dtype=np.uint8)
    step = CHUNK_BYTES * _CHUNKS_PER_BASKET
    for start in range(0, data.size, step):
        part = data[start:start + step]
        counts = [min(CHUNK_BYTES, part.size - k) for k in range(0, part.size, CHUNK_BYTES)]
        tree.extend({"chunk": ak.unflatten(part, counts)})

