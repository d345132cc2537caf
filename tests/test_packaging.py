"""The distribution installs one namespace: every package folder is listed in pyproject.toml under
webllama.*, and nothing installs as a generic top-level package."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_installed_under_webllama():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    listed = set(cfg["packages"])
    found = set()
    for top, folder in mapping.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            if "node_modules" in init.parts:
                continue
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([top, *rel.parts]))
    assert found == listed, f"pyproject.toml packages: missing {sorted(found - listed)}, stale {sorted(listed - found)}"
    assert all(name == "webllama" or name.startswith("webllama.") for name in listed)
    assert cfg.get("packages") and "find" not in cfg.get("packages", {}), "packages are listed, not found"


def test_console_script_is_the_core_cli():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"webllama": "webllama.cli:main"}
