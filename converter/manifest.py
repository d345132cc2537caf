"""manifest.json: the contract between the converter, the web engine and the eval suite.

Every file of a bundle is listed with its size and sha256 so that the browser (and `open_bundle`)
can refuse a corrupt or half-copied bundle before running it. The manifest is untrusted input
wherever it is read: `validate_manifest` refuses any path that could leave the bundle folder
(absolute, `..`, a backslash, a NUL) before a single file is opened.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from webllama.converter.errors import BundleError

SCHEMA_VERSION = 1
FORMAT = "webllama-bundle"
MANIFEST = "manifest.json"
DIGEST_CACHE = "sha256-cache.json"  # in the user's cache folder, never inside a bundle


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def list_files(root: Path) -> list[dict]:
    """Every file under root but the manifest, sorted, with size and sha256 (kept in the DigestCache, so
    the `open_bundle` that follows a conversion does not hash the weights a second time)."""
    cache = DigestCache()
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files.append({"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": cache.sha256(p)})
    cache.save()
    return files


def strict_json(data) -> object:
    """`data` with every non-finite float replaced by None: NaN/Infinity are not JSON, and the browser's
    JSON.parse refuses a manifest that holds them."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(v) for v in data]
    return data


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(strict_json(data), indent=2, sort_keys=False, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Validation of a manifest read from disk (or the network: web/engine/manifest.js applies the same rules)


def unsafe_path_reason(rel: object) -> str | None:
    """Why `rel` cannot name a file inside a bundle, or None when it can."""
    if not isinstance(rel, str) or not rel:
        return "is not a non-empty string"
    if "\0" in rel:
        return "holds a NUL byte"
    if "\\" in rel:
        return "holds a backslash"
    if rel.startswith("/") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", rel):  # a drive, or a URL scheme to the engine
        return "is absolute"
    if {"", ".", ".."} & set(rel.split("/")):
        return "has a '..', '.' or empty component"
    return None


def _check_path(rel: object, field: str, where: str) -> None:
    why = unsafe_path_reason(rel)
    if why:
        raise BundleError(f"{where}: {field} {str(rel)[:80]!r} {why}; the bundle is corrupt or tampered with, convert it again")


def validate_manifest(manifest: object, where: str) -> dict:
    """Structure and paths of a manifest (format and schema are checked by the caller); returns it."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: the manifest is a JSON {type(manifest).__name__}, not an object; the bundle is corrupt")
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise BundleError(f"{where}: the manifest has no 'files' list of objects; the bundle is corrupt, convert it again")
    for f in files:
        _check_path(f.get("path"), "file path", where)
        if f["path"] == MANIFEST:
            raise BundleError(f"{where}: the manifest lists itself among its files; the bundle is corrupt")
        size = f.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(f.get("sha256"), str):
            raise BundleError(f"{where}: {f['path']} has no valid size and sha256; the bundle is corrupt, convert it again")
    variants = manifest.get("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise BundleError(f"{where}: 'variants' is not an object of objects; the bundle is corrupt")
    for name, v in variants.items():
        wasm = ([v["wasm_model"]] if "wasm_model" in v else []) + list(v.get("wasm_external_data") or [])
        for rel in [v.get("model"), *(v.get("external_data") or []), *wasm]:
            _check_path(rel, f"variant {name} file", where)
    return manifest


def read_manifest(root: Path) -> dict:
    """manifest.json of the bundle at `root`: parsed, of this format and schema, with safe paths."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: no {MANIFEST}; not a webllama bundle (make one with `webllama convert`)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({e}); the bundle is corrupt") from None
    except OSError as e:
        raise BundleError(f"{mpath}: cannot be read ({e.strerror}); check its permissions") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("schema_version") != SCHEMA_VERSION:
        got = manifest if isinstance(manifest, dict) else {}
        raise BundleError(
            f"{mpath}: format {got.get('format')!r} v{got.get('schema_version')} is not "
            f"{FORMAT} v{SCHEMA_VERSION}; convert the model again with this webllama"
        )
    return validate_manifest(manifest, str(mpath))


# ---------------------------------------------------------------------------------------------
# Digests, cached per file identity so that re-opening a bundle does not re-hash gigabytes


def _cache_file() -> Path:
    base = os.environ.get("WEBLLAMA_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "webllama"
    return Path(base) / DIGEST_CACHE


def _identity(path: Path) -> str:
    # ctime and the inode change on any rewrite, even one that restores the size and mtime; the path is
    # not part of it, so a bundle renamed into place (converter/bundle.py) keeps its digests.
    st = path.stat()
    return f"{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


class DigestCache:
    """sha256 by file identity, kept in the user's cache folder; best effort (unwritable: no cache)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or _cache_file()
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            self.known: dict[str, str] = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self.known = {}
        self.dirty = False

    def sha256(self, path: Path) -> str:
        key = _identity(path)
        if key not in self.known:
            self.known[key] = sha256_of(path)
            self.dirty = True
        return self.known[key]

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            keep = dict(list(self.known.items())[-4096:])  # bounded: the newest entries
            write_json_atomic(self.path, keep)
        except OSError:
            pass  # a cache only saves time


# ---------------------------------------------------------------------------------------------
# What a published bundle says about its source: names, never the converting machine's paths


SOURCES_FILE = "sources.json"  # beside the digest cache: source sha256 -> the local paths it came from


def published_path(path: str | None) -> str | None:
    """A hub id as it is; a local file or folder by its name only (the rest is the converting machine's)."""
    from webllama.converter.sources.hf import is_hub_id

    return path if not path or is_hub_id(path) else Path(path).name


def published_customization(custom: dict | None) -> dict | None:
    """Customization.to_json() with adapter folders and a template file named, not located."""
    if not custom:
        return custom
    out = dict(custom, adapters=[Path(a).name for a in custom.get("adapters") or []])
    template = out.get("chat_template")
    if template and Path(template).is_file():
        out["chat_template"] = Path(template).name
    return out


def located_customization(published: dict | None, local: dict | None) -> dict | None:
    """A manifest's customization with its adapter and template names located again from this machine's
    record (when the names match: the same conversion), else as published."""
    if not published or not local:
        return published
    out = dict(published)
    adapters = local.get("adapters") or []
    if [Path(a).name for a in adapters] == list(published.get("adapters") or []):
        out["adapters"] = adapters
    template = local.get("chat_template")
    if template and Path(template).name == published.get("chat_template"):
        out["chat_template"] = template
    return out


def remember_source(sha256: str, path: str, customization: dict | None) -> None:
    """Keep where the source of a bundle is on this machine (for `webllama verify BUNDLE`), outside the
    bundle; best effort, like the digest cache."""
    store = _cache_file().with_name(SOURCES_FILE)
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    known[sha256] = {"path": str(Path(path).resolve()) if Path(path).exists() else path, "customization": customization}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(store, dict(list(known.items())[-1024:]))
    except OSError:
        pass


def recall_source(sha256: str | None) -> dict | None:
    """{"path", "customization"} remembered for a source sha256 on this machine, or None."""
    try:
        known = json.loads(_cache_file().with_name(SOURCES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rec = known.get(sha256) if isinstance(known, dict) and sha256 else None
    return rec if isinstance(rec, dict) and rec.get("path") else None


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
        """Every listed file is present, inside the bundle, of its size (and, with `hashes`, its sha256)."""
        cache = DigestCache() if hashes else None
        real_root = self.root.resolve()
        for f in self.manifest["files"]:
            p = self.root / f["path"]
            if not p.is_file():
                raise BundleError(f"{self.root}: {f['path']} is missing; the bundle is incomplete, convert it again")
            if not p.resolve().is_relative_to(real_root):
                raise BundleError(f"{self.root}: {f['path']} is a link that leaves the bundle folder; refusing to read it")
            if p.stat().st_size != f["size"]:
                raise BundleError(
                    f"{self.root}: {f['path']} has {p.stat().st_size} bytes, manifest says {f['size']}; "
                    "the bundle is truncated or corrupt, convert or copy it again"
                )
            if cache and cache.sha256(p) != f["sha256"]:
                cache.save()
                raise BundleError(f"{self.root}: {f['path']} fails its sha256 check; the bundle is corrupt, convert it again")
        if cache:
            cache.save()


def open_bundle(path: str | Path, check_hashes: bool = True) -> Bundle:
    """The bundle at `path`, checked: manifest, paths, sizes and (by default) every sha256, the same
    checks the browser makes; the digests are cached by file identity (DigestCache)."""
    root = Path(path)
    bundle = Bundle(root, read_manifest(root))
    bundle.check_files(hashes=check_hashes)
    return bundle
