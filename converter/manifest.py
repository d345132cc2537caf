"""manifest.json: the contract between the converter, the web engine and the eval suite.

Every file of a bundle is listed with its size and sha256 so that the browser (and `open_bundle`)
can refuse a corrupt or half-copied bundle before running it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from webllama.converter.errors import BundleError

SCHEMA_VERSION = 1
FORMAT = "webllama-bundle"
MANIFEST = "manifest.json"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def list_files(root: Path) -> list[dict]:
    """Every file under root but the manifest, sorted, with size and sha256."""
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files.append({"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": sha256_of(p)})
    return files


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


@dataclass
class Bundle:
    root: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def variants(self) -> list[str]:
        return list(self.manifest["variants"])

    def variant(self, name: str | None = None) -> dict:
        variants = self.manifest["variants"]
        if name is None:
            name = next(n for n in ("q4", "fp32", "q4f16", "fp16") if n in variants) if variants else None
        if name not in variants:
            raise BundleError(f"{self.root}: has no variant {name!r} (it has {', '.join(variants)}); convert it with --variant {name}")
        return {"name": name, **variants[name]}

    def size(self, variant: str | None = None) -> int:
        if variant is None:
            return sum(f["size"] for f in self.manifest["files"])
        v = self.variant(variant)
        return sum(f["size"] for f in self.manifest["files"] if f["path"] in [v["model"], *v["external_data"]])

    def check_files(self, hashes: bool = False) -> None:
        for f in self.manifest["files"]:
            p = self.root / f["path"]
            if not p.exists():
                raise BundleError(f"{self.root}: {f['path']} is missing; the bundle is incomplete, convert it again")
            if p.stat().st_size != f["size"]:
                raise BundleError(
                    f"{self.root}: {f['path']} has {p.stat().st_size} bytes, manifest says {f['size']}; "
                    "the bundle is truncated or corrupt, convert or copy it again"
                )
            if hashes and sha256_of(p) != f["sha256"]:
                raise BundleError(f"{self.root}: {f['path']} fails its sha256 check; the bundle is corrupt, convert it again")


def open_bundle(path: str | Path, check_hashes: bool = False) -> Bundle:
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.exists():
        raise BundleError(f"{root}: no {MANIFEST}; not a webllama bundle (make one with `webllama convert`)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath}: not valid JSON ({e}); the bundle is corrupt") from None
    if manifest.get("format") != FORMAT or manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{mpath}: format {manifest.get('format')!r} v{manifest.get('schema_version')} is not "
            f"{FORMAT} v{SCHEMA_VERSION}; convert the model again with this webllama"
        )
    bundle = Bundle(root, manifest)
    bundle.check_files(hashes=check_hashes)
    return bundle
