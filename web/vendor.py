"""The npm files the page loads (web/vendor.json), and their vendored copy in a built wheel.

In a checkout, `npm ci` fills web/node_modules from web/package-lock.json and the server reads from it.
A wheel cannot rely on npm at run time, so setup.py copies the same files into the wheel at build
time, as a pruned node_modules (only the files vendor.json lists, plus each package's package.json and
license): the installed `webllama/web/node_modules/` then has the layout of a checkout's, and
ServeConfig / SiteOptions find it where they always look. Nothing is fetched at run time.

Standard library only: setup.py loads this file by path, before webllama is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
VENDOR_JSON = WEB_DIR / "vendor.json"
# Copied beside each package's package.json, when the package has one (onnxruntime-web has none: MIT in package.json).
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "NOTICE")


class VendorMissing(RuntimeError):
    """node_modules lacks a file the page loads (no `npm ci`, or a package version without it)."""


def vendor_files(path: Path = VENDOR_JSON) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """URL segment -> (dist folder inside node_modules, npm package name, files the page loads)."""
    table = json.loads(path.read_text(encoding="utf-8"))
    return {
        seg: (f"{e['package']}/{e['dist']}", e["package"], tuple(e["files"])) for seg, e in table.items() if not seg.startswith("_")
    }


def vendored_paths(node_modules: Path, path: Path = VENDOR_JSON) -> list[Path]:
    """Every file to vendor, relative to node_modules; raises VendorMissing naming the absent ones."""
    rels: list[Path] = []
    for dist, package, files in vendor_files(path).values():
        rels += [Path(dist) / f for f in files]
        rels.append(Path(package) / "package.json")
        rels += [Path(package) / n for n in LICENSE_NAMES if (node_modules / package / n).is_file()]
    missing = [str(r) for r in rels if not (node_modules / r).is_file()]
    if missing:
        raise VendorMissing(f"{node_modules} lacks {', '.join(missing)}; run `npm ci` in {node_modules.parent}")
    return rels


def ensure_node_modules(web_dir: Path = WEB_DIR) -> Path:
    """web_dir/node_modules, running `npm ci` (the versions of package-lock.json) when it is absent."""
    node_modules = web_dir / "node_modules"
    if not (node_modules / "onnxruntime-web").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise VendorMissing(f"{node_modules} is missing and npm is not installed: install Node.js + npm, then build again")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=web_dir, check=True)
    return node_modules


def copy_vendored(node_modules: Path, dest: Path) -> list[Path]:
    """Copy the vendored files from node_modules into dest (same relative layout); returns the files written."""
    written = []
    for rel in vendored_paths(node_modules):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(node_modules / rel, target)
        written.append(target)
    return written
