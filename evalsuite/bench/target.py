"""What is being benchmarked: name, identity (sha256), parameter count and bytes on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_target(req, variant: str | None) -> dict:
    """{"path", "name", "kind", "sha256", "num_parameters", "variant", "size": {bundle_bytes, bytes_per_parameter,
    weight_bytes}}; `size` goes into metrics."""
    path = Path(req.target)
    if (path / "manifest.json").is_file():
        return _bundle_target(path, variant)
    if path.suffix == ".gguf":
        return _gguf_target(path)
    return _source_target(path)


def _bundle_target(path: Path, variant: str | None) -> dict:
    from webllama.converter.manifest import open_bundle

    b = open_bundle(path)
    v = b.variant(variant)
    files = [v["model"], *v.get("external_data", [])]
    weight_bytes = sum((b.root / f).stat().st_size for f in v.get("external_data", [])) or (b.root / v["model"]).stat().st_size
    size = sum((b.root / f).stat().st_size for f in files)
    n = b.manifest["num_parameters"]
    return {
        "path": str(b.root.resolve()),
        "name": b.manifest["name"],
        "kind": "bundle",
        "sha256": file_sha256(b.root / "manifest.json"),
        "num_parameters": n,
        "variant": v["name"],
        "size": {"bundle_bytes": size, "bytes_per_parameter": size / n, "weight_bytes": weight_bytes},
    }


def _gguf_target(path: Path) -> dict:
    import collections

    import gguf
    import numpy as np

    r = gguf.GGUFReader(str(path))
    n = int(sum(int(np.prod(t.shape)) for t in r.tensors))
    types = collections.Counter(t.tensor_type.name for t in r.tensors if len(t.shape) > 1)
    size = path.stat().st_size
    weight_bytes = int(sum(t.n_bytes for t in r.tensors))
    name = str(path.stem)
    return {
        "path": str(path.resolve()),
        "name": name,
        "kind": "gguf",
        "sha256": file_sha256(path),
        "num_parameters": n,
        "variant": "gguf-" + "+".join(f"{k}" for k, _ in types.most_common()),
        "size": {"bundle_bytes": size, "bytes_per_parameter": size / n, "weight_bytes": weight_bytes},
    }


def _source_target(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    size = sum(p.stat().st_size for p in files)
    return {
        "path": str(path.resolve()),
        "name": path.name,
        "kind": "source",
        "sha256": None,
        "num_parameters": None,
        "variant": "source",
        "size": {"bundle_bytes": size, "bytes_per_parameter": None, "weight_bytes": size},
    }
