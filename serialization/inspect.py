"""``sofie-root inspect``: what a .root file holds, without compiling anything."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from sofie_root.ir.graph import Graph
from sofie_root.passes.layout import derived_weights

from .reader import StoredModel, _open, list_models, read, split_spec


def _op_histogram(g: Graph) -> Counter:
    return Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in g.walk())


def _bytes_on_disk(stored: StoredModel) -> int:
    with _open(stored.path) as f:
        key = f.key(f"{stored.name}/ir")
        tree = f[f"{stored.name}/weights"]
        return int(key.data_compressed_bytes) + int(tree.compressed_bytes)


def describe(stored: StoredModel) -> dict[str, Any]:
    model = stored.doc["model"]
    g = stored.graph
    return {
        "name": stored.name,
        "inputs": model.get("inputs", []),
        "outputs": model.get("outputs", []),
        "operators": dict(_op_histogram(g).most_common()),
        "parameters": int(sum(a.size for k, a in g.initializers.items() if k not in derived_weights(g))),
        "bytes_on_disk": _bytes_on_disk(stored),
        "weight_bytes": int(stored.doc["blob"]["nbytes"]),
        "onnx_bytes": model.get("onnx_bytes"),
        "onnx": model.get("onnx", {}),
        "format_version": stored.format_version,
        "written_by": stored.doc.get("sofie_root_version", "?"),
        "column_hints": model.get("column_hints") or {},
    }


def _tensor(t: dict[str, Any]) -> str:
    return f"{t['name']}: {t['dtype']}[{', '.join(str(d) for d in t['shape'])}]"


def report(spec: str | os.PathLike, onnx_path: str | os.PathLike | None = None) -> str:
    path, name = split_spec(spec)
    names = [name] if name else list_models(path)
    lines = [f"{path}: {len(list_models(path))} model(s): {', '.join(list_models(path)) or '(none)'}"]
    for n in names:
        info = describe(read(path, n))
        lines.append("")
        lines.append(f"model {info['name']!r} (format version {info['format_version']}, written by sofie_root "
                     f"{info['written_by']}; ONNX producer {info['onnx'].get('producer_name') or '?'} "
                     f"{info['onnx'].get('producer_version') or ''}, opset {info['onnx'].get('opset') or '?'})")
        for t in info["inputs"]:
            hint = info["column_hints"].get(t["name"])
            lines.append(f"  input   {_tensor(t)}" + (f"   columns: {', '.join(hint)}" if hint else ""))
        for t in info["outputs"]:
            lines.append(f"  output  {_tensor(t)}")
        lines.append(f"  parameters: {info['parameters']:,} ({info['weight_bytes']:,} bytes of weights)")
        onnx_bytes = Path(onnx_path).stat().st_size if onnx_path else info["onnx_bytes"]
        disk = f"  bytes on disk: {info['bytes_on_disk']:,}"
        if onnx_bytes:
            disk += f" (ONNX file: {onnx_bytes:,} bytes, ratio {info['bytes_on_disk'] / onnx_bytes:.3f})"
        lines.append(disk)
        ops = ", ".join(f"{op} x{k}" for op, k in info["operators"].items())
        lines.append(f"  operators ({sum(info['operators'].values())} nodes): {ops}")
    return "\n".join(lines)
