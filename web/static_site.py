"""`webllama site`: the chat page, the engine and bundles as a static site for any static file host.

The site has the server's URL layout (web/server.py), as plain files, so the same web/static pages
run under both (they use relative URLs only):

  index.html, eval.html      the chat page and the eval page (copies of web/static/*.html)
  static/, engine/           web/static and web/engine
  vendor/{ort,tokenizers,jinja}/   only the onnxruntime-web / tokenizers / jinja files the engine loads
  bundles/<slug>/            each bundle: manifest.json + the files it lists (copied)
  api/models                 the JSON that the server's /api/models answers, with page-relative URLs
  leaderboard/               the leaderboard folder (find_leaderboard), or a "no leaderboard yet" page
  site.json                  what was written (marks the folder as ours, so --force may replace it)

A static host usually sends no COOP/COEP headers: the page is then not cross-origin isolated and the
engine runs onnxruntime-web's WASM on one thread; the chat page's status line says which mode it runs in.
The site is written into a temporary folder next to `out` and renamed into place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from webllama.web.server import (
    LEADERBOARD_SUFFIXES,
    WEB_DIR,
    BundleEntry,
    ServeError,
    confined_file,
    discover_bundles,
    find_leaderboard,
    model_summary,
    no_leaderboard_page,
)
from webllama.web.vendor import vendor_files

from webllama.errors import WebllamaError

SITE_FORMAT = "webllama-site"
PAGES = ("index.html", "eval.html")
# URL segment -> (npm dist folder, package, the files worker.js imports and onnxruntime-web fetches): web/vendor.json.
VENDOR_FILES: dict[str, tuple[str, str, tuple[str, ...]]] = vendor_files()


class SiteError(WebllamaError):
    """The static site could not be written: bad bundle, missing npm install, output in the way."""


@dataclass(frozen=True)
class SiteOptions:
    bundle_paths: tuple[Path, ...]  # bundle folders, or folders whose subfolders are bundles
    out: Path
    leaderboard_dir: Path | None = None
    force: bool = False  # replace an existing site at `out`
    static_dir: Path = WEB_DIR / "static"
    engine_dir: Path = WEB_DIR / "engine"
    node_modules: Path = WEB_DIR / "node_modules"


@dataclass(frozen=True)
class SiteSummary:
    out: Path
    bundles: tuple[str, ...]  # slugs
    leaderboard: Path | None  # the folder copied, None when there was none
    bytes: int


def write_site(opts: SiteOptions) -> SiteSummary:
    """Check everything, write the site into a temporary folder next to `opts.out`, rename it into place."""
    out = Path(os.path.abspath(opts.out))  # not resolve(): a link at --out is refused, never followed
    _check_out(out, opts.force)
    bundles = _discover(opts.bundle_paths)
    for pkg, (dist, _, files) in VENDOR_FILES.items():
        missing = [f for f in files if not (opts.node_modules / dist / f).is_file()]
        if missing:
            raise SiteError(f"{opts.node_modules / dist} lacks {', '.join(missing)} (vendor/{pkg}); run `cd {WEB_DIR} && npm ci`")
    if opts.leaderboard_dir is not None and not Path(opts.leaderboard_dir).is_dir():
        raise SiteError(f"--leaderboard {opts.leaderboard_dir}: not a folder; write one with `webllama leaderboard RUNS... --out DIR`")
    tmp = _make_tmp(out)
    try:
        board = _write_tree(tmp, opts, bundles)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return SiteSummary(out, tuple(bundles), board, size)


def _make_tmp(out: Path) -> Path:
    """The hidden folder the site is written into, made by a plain mkdir (mkdtemp's mode 0700 made a static
    server running as another user answer 403)."""
    from webllama.converter.bundle import remove_stale_scratch

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"  # the converter's scratch name: the next run removes it
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_scratch(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SiteError(f"cannot write {out} ({e.strerror}); choose an --out folder you can write to") from None
        raise
    return tmp


def _check_out(out: Path, force: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise SiteError(f"{out} already exists; pass --force to replace it, or pick another --out")
    here = Path.cwd().resolve()
    if out.is_symlink() or out == here or out in here.parents:
        raise SiteError(f"{out} is a link, the current folder or one of its parents; refusing to replace it: pick another --out")
    is_site = (out / "site.json").is_file() and _site_format(out / "site.json") == SITE_FORMAT
    if out.is_dir() and (is_site or not any(out.iterdir())):
        return
    raise SiteError(
        f"{out} exists and is not a site written by `webllama site` (no site.json); "
        "refusing to replace it even with --force: remove it yourself or pick another --out"
    )


def _site_format(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def _discover(paths: tuple[Path, ...]) -> dict[str, BundleEntry]:
    if not paths:
        raise SiteError("no bundle given: pass one or more bundle folders (or folders of bundles)")
    try:
        return discover_bundles(tuple(Path(p) for p in paths))
    except ServeError as e:
        raise SiteError(str(e)) from e


def _write_tree(root: Path, opts: SiteOptions, bundles: dict[str, BundleEntry]) -> Path | None:
    shutil.copytree(opts.static_dir, root / "static")
    shutil.copytree(opts.engine_dir, root / "engine", ignore=shutil.ignore_patterns("*.test.*", "*.ts"))
    for page in PAGES:
        shutil.copy2(opts.static_dir / page, root / page)
    versions = _copy_vendor(root / "vendor", opts.node_modules)
    for entry in bundles.values():
        _copy_bundle(entry, root / "bundles" / entry.slug)
    (root / "api").mkdir()
    models = {"object": "list", "data": [model_summary(e, bundles_url="bundles/") for e in bundles.values()]}
    (root / "api" / "models").write_text(json.dumps(models, indent=2) + "\n", encoding="utf-8")
    board = _copy_leaderboard(root / "leaderboard", opts.leaderboard_dir)
    site = {
        "format": SITE_FORMAT,
        "bundles": {s: e.manifest.get("name", s) for s, e in bundles.items()},
        "has_leaderboard": board is not None,
        "vendor": versions,
    }
    (root / "site.json").write_text(json.dumps(site, indent=2) + "\n", encoding="utf-8")
    return board


def _copy_vendor(dest: Path, node_modules: Path) -> dict[str, str]:
    versions = {}
    for pkg, (dist, package, files) in VENDOR_FILES.items():
        (dest / pkg).mkdir(parents=True)
        for name in files:
            shutil.copy2(node_modules / dist / name, dest / pkg / name)
        meta = json.loads((node_modules / package / "package.json").read_text(encoding="utf-8"))
        versions[package] = meta.get("version", "?")
    return versions


def _copy_bundle(entry: BundleEntry, dest: Path) -> None:
    """manifest.json + every file it lists; a listed file that is missing or has the wrong size is an error."""
    dest.mkdir(parents=True)
    shutil.copy2(entry.path / "manifest.json", dest / "manifest.json")
    for f in entry.manifest["files"]:  # paths checked at discovery: relative, no '..' (converter/manifest.py)
        src = entry.path / f["path"]
        if confined_file(entry.path, f["path"]) is None and src.is_file():
            raise SiteError(f"{src}: a link that leaves the bundle folder {entry.path}; refusing to publish it")
        if not src.is_file() or src.stat().st_size != f.get("size"):
            found = f"{src.stat().st_size} bytes" if src.is_file() else "missing"
            raise SiteError(f"{src}: manifest.json lists {f.get('size')} bytes, found {found}; convert the model again")
        (dest / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f["path"])


def _copy_leaderboard(dest: Path, folder: Path | None) -> Path | None:
    board = find_leaderboard(Path(folder) if folder is not None else None)
    dest.mkdir()
    if board is None:
        (dest / "index.html").write_text(no_leaderboard_page(folder), encoding="utf-8")
        return None
    for src in sorted(board.folder.iterdir()):
        if src.suffix.lower() in LEADERBOARD_SUFFIXES and confined_file(board.folder, src.name):
            shutil.copy2(src, dest / src.name)
    if board.page != "index.html":
        shutil.copy2(board.folder / board.page, dest / "index.html")
    return board.folder


def _replace(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` (checked by _check_out) is moved aside first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name}")
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
