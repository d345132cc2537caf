"""Build hook only (the project is declared in pyproject.toml): a wheel also carries the npm files the
page loads, copied at build time from web/node_modules (installed by `npm ci` from web/package-lock.json
when absent) into webllama/web/node_modules, so an installed `webllama serve` fetches nothing at run
time, and benchmarks/pages (the browser benchmark page of our engine). Editable installs skip both: they
use the checkout's own folders."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _vendor_module():
    # By path: webllama is not importable while it is being built.
    spec = importlib.util.spec_from_file_location("_webllama_vendor", ROOT / "web" / "vendor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithVendor(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        vendor = _vendor_module()
        node_modules = vendor.ensure_node_modules(ROOT / "web")
        written = vendor.copy_vendored(node_modules, Path(self.build_lib) / "webllama" / "web" / "node_modules")
        self.announce(f"vendored {len(written)} npm files into webllama/web/node_modules", level=2)
        # `webllama bench --runtime browser` (and the demo's browser row) serve this page; see bench/web_server.py.
        pages = Path(self.build_lib) / "webllama" / "evalsuite" / "bench" / "benchmarks" / "pages"
        shutil.copytree(ROOT / "benchmarks" / "pages", pages, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithVendor})
