"""Flask app that serves the chat page, the browser engine, onnxruntime-web's wasm files and bundles.

`create_app(ServeConfig(...))` builds a fresh app; nothing lives at module level except constants.
Every response carries COOP/COEP (cross-origin isolation, so onnxruntime-web can use threads) and
CORP; bundle files answer Range requests (206, RFC 9110: a Range it cannot honour is ignored) with a
strong ETag that is the sha256 of the bytes served. Paths are joined with werkzeug's safe_join, so `../`
never leaves a served folder. A bundle serves exactly manifest.json and the files its manifest lists,
resolved and confined to the bundle folder (a link out of it is refused); hidden and unfinished
(`.NAME.partial-PID`, `NAME.unverified`) folders are never listed. Requests whose Host header does not
name this server are refused (DNS rebinding: a page on another site must not read the bundles).

URL layout (the engine relies on it: worker.js imports `../vendor/...`):
  /                         static/index.html (chat page)     /eval.html  static/eval.html
  /static/<path>            web/static                        /engine/<path>  web/engine
  /vendor/<pkg>/<path>      whitelisted npm dist folders (ort, tokenizers, jinja)
  /bundles/<slug>/<path>    one bundle folder                 /api/models     the bundles, summarized
  /leaderboard              redirects to /leaderboard/
  /leaderboard/             the leaderboard folder's page (find_leaderboard), or a "no leaderboard yet" page
  /leaderboard/<path>       that folder's other files (plots, .md/.csv/.json), by a whitelist of suffixes

Pages use relative URLs only, so web/site.py can write the same files as a static site.
"""

from __future__ import annotations

import html
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, abort, jsonify, redirect, request, send_file
from werkzeug.security import safe_join

WEB_DIR = Path(__file__).resolve().parent

# npm package -> its dist folder inside node_modules; nothing else under node_modules is served.
VENDOR_PACKAGES: dict[str, str] = {
    "ort": "onnxruntime-web/dist",
    "tokenizers": "@huggingface/tokenizers/dist",
    "jinja": "@huggingface/jinja/dist",
}

MIME_TYPES: dict[str, str] = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".onnx_data": "application/octet-stream",
    ".map": "application/json",
    ".html": "text/html",  # werkzeug adds "; charset=utf-8" to every text/* type
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/markdown",
    ".csv": "text/csv",
}

# What /leaderboard/<path> serves from the leaderboard folder (evalsuite/leaderboard_html.py writes these).
LEADERBOARD_SUFFIXES = frozenset({".html", ".png", ".svg", ".md", ".csv", ".json", ".css"})

CROSS_ORIGIN_HEADERS: dict[str, str] = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

_SLUG_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_UNFINISHED = re.compile(r"^\..*\.(partial|old)-\d+$|\.unverified$")  # converter/bundle.py's scratch names
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class ServeError(ValueError):
    """A path given to `serve` is not a bundle nor a folder of bundles (raised at startup)."""


@dataclass(frozen=True)
class BundleEntry:
    slug: str  # URL segment under /bundles/
    path: Path  # bundle folder (holds manifest.json)
    manifest: dict
    sha256: dict[str, str]  # file path (relative, posix) -> sha256 from manifest["files"]


@dataclass(frozen=True)
class ServeConfig:
    bundle_paths: tuple[Path, ...] = ()  # bundle folders, or folders whose subfolders are bundles
    leaderboard_dir: Path | None = None
    static_dir: Path = WEB_DIR / "static"
    engine_dir: Path = WEB_DIR / "engine"
    node_modules: Path = WEB_DIR / "node_modules"
    bundle_max_age: int = 0  # seconds; 0 = revalidate with the ETag (the engine keeps files in Cache API)
    allowed_hosts: frozenset[str] = frozenset()  # Host names besides loopback names and IP literals
    vendor_max_age: int = 86400  # pinned npm versions: safe to cache
    extra_headers: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Bundle discovery


def _read_manifest(folder: Path) -> dict:
    from webllama.converter.errors import BundleError
    from webllama.converter.manifest import read_manifest

    try:
        return read_manifest(folder)  # format, schema, and paths that stay inside the folder
    except BundleError as e:
        raise ServeError(str(e)) from None


def _unfinished(folder: Path) -> bool:
    return bool(_UNFINISHED.search(folder.name))


def _bundle_folders(path: Path) -> list[Path]:
    if _unfinished(path):
        raise ServeError(f"{path}: an unfinished or unverified conversion, not a bundle; convert the model again")
    if (path / "manifest.json").is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            p for p in path.iterdir() if not p.name.startswith(".") and not _unfinished(p) and (p / "manifest.json").is_file()
        )
        if found:
            return found
    raise ServeError(
        f"{path}: not a bundle (no manifest.json) nor a folder of bundles; create one with `webllama convert SOURCE OUT_DIR`"
    )


def discover_bundles(paths: tuple[Path, ...]) -> dict[str, BundleEntry]:
    """slug -> BundleEntry for every bundle under `paths`; slugs are unique, URL-safe folder names."""
    entries: dict[str, BundleEntry] = {}
    for given in paths:
        for folder in _bundle_folders(Path(given).resolve()):
            manifest = _read_manifest(folder)
            base = _SLUG_BAD.sub("-", folder.name).strip("-.") or "bundle"
            slug, n = base, 2
            while slug in entries:
                slug, n = f"{base}-{n}", n + 1
            sha = {f["path"]: f["sha256"] for f in manifest["files"]}
            entries[slug] = BundleEntry(slug, folder, manifest, sha)
    return entries


def model_summary(entry: BundleEntry, bundles_url: str = "/bundles/") -> dict:
    """The /api/models row for one bundle: what the picker shows, without the per-file list.

    `bundles_url` prefixes the bundle URLs: "/bundles/" for the server, "bundles/" (relative to the
    page) for a static site."""
    m = entry.manifest
    variants = {
        name: {k: v.get(k) for k in ("bytes", "activation_dtype", "kv_dtype", "requires_webgpu_features")}
        for name, v in sorted(m.get("variants", {}).items())
    }
    return {
        "id": entry.slug,
        "name": m.get("name", entry.slug),
        "url": f"{bundles_url}{entry.slug}/",
        "manifest_url": f"{bundles_url}{entry.slug}/manifest.json",
        "architecture": m.get("architecture"),
        "context_length": m.get("context_length"),
        "num_parameters": m.get("num_parameters"),
        "has_chat_template": m.get("tokenizer", {}).get("has_chat_template", False),
        "variants": variants,
    }


# ---------------------------------------------------------------------------------------------
# Responses


def confined_file(base: Path, rel: str) -> Path | None:
    """base/rel if it is a file whose real path stays inside base's real path (no link out), else None."""
    joined = safe_join(str(base), rel)
    if joined is None:
        return None
    try:
        path = Path(joined)
        real, root = path.resolve(strict=True), base.resolve(strict=True)
        return path if real.is_relative_to(root) and real.is_file() else None
    except (OSError, RuntimeError):  # missing, a name too long for the file system, a link loop
        return None


def _normalize_range(size: int) -> None:
    """RFC 9110 14.2: a Range the server cannot or will not honour is ignored (200, the whole file);
    a suffix longer than the file selects the whole file. werkzeug would answer 416 to all of these."""
    header = request.environ.get("HTTP_RANGE")
    if header is None:
        return
    m = _RANGE.match(header.strip().replace(" ", ""))
    first, last = (m.group(1), m.group(2)) if m else ("", "")
    if not m or (not first and not last) or (first and last and int(first) > int(last)):
        del request.environ["HTTP_RANGE"]  # malformed, another unit, or several ranges
    elif not first and int(last) > size and size > 0:
        request.environ["HTTP_RANGE"] = "bytes=0-"


def _send(base: Path, rel: str, *, max_age: int, etag: str | bool = True) -> Response:
    """send_file with Range/ETag support; 404 for anything outside `base` or missing."""
    path = confined_file(base, rel)
    if path is None:
        abort(404)
    _normalize_range(path.stat().st_size)
    resp = send_file(
        path, mimetype=_mime_for(path.name) or "application/octet-stream", conditional=True, etag=etag, max_age=max_age or None
    )
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["Cache-Control"] = f"public, max-age={max_age}" if max_age else "no-cache"
    return resp


def _mime_for(name: str) -> str | None:
    suffix = Path(name).suffix
    if suffix in MIME_TYPES:
        return MIME_TYPES[suffix]
    if re.search(r"\.onnx_data(_\d+)?$", name):
        return "application/octet-stream"
    return None


@dataclass(frozen=True)
class Leaderboard:
    folder: Path  # holds the page and the files it links to (relative URLs)
    page: str  # file name of the page inside `folder`


def find_leaderboard(folder: Path | None) -> Leaderboard | None:
    """The leaderboard to show from `--leaderboard DIR`, looked up on every request (it may be rewritten):
    DIR/index.html (the folder `webllama leaderboard --out DIR` writes), else the newest subfolder
    holding an index.html, else the newest *.html in DIR; None when there is none."""
    if folder is None or not folder.is_dir():
        return None
    if (folder / "index.html").is_file():
        return Leaderboard(folder, "index.html")
    subs = [p for p in folder.glob("*/index.html") if p.is_file()]
    if subs:
        return Leaderboard(_newest(subs).parent, "index.html")
    pages = [p for p in folder.glob("*.html") if p.is_file()]
    return Leaderboard(folder, _newest(pages).name) if pages else None


def _newest(paths: list[Path]) -> Path:
    return max(paths, key=lambda p: (p.stat().st_mtime, p.name))


# Served at /leaderboard/ (and written as the static site's leaderboard/index.html): relative URLs.
NO_LEADERBOARD = """<!doctype html><html><head><meta charset="utf-8"><title>webllama leaderboard</title>
<link rel="stylesheet" href="../static/style.css"></head><body><main class="notice">
<h1>No leaderboard yet</h1><p>{why}</p><p><a href="../">Back to the chat</a></p></main></body></html>"""


def no_leaderboard_page(folder: Path | None) -> str:
    why = (
        "No leaderboard folder was given: start the server with `--leaderboard DIR`."
        if folder is None
        else f"{html.escape(str(folder))} holds no leaderboard yet; write one with `webllama leaderboard RUNS... --out DIR`."
    )
    return NO_LEADERBOARD.format(why=why)


# ---------------------------------------------------------------------------------------------
# App factory


def create_app(cfg: ServeConfig) -> Flask:
    """A new Flask app serving `cfg`; bundles are discovered once, here (raises ServeError)."""
    app = Flask("webllama.web", static_folder=None)
    app.url_map.merge_slashes = False  # "//etc/passwd" must reach safe_join (and fail), not redirect
    bundles = discover_bundles(tuple(cfg.bundle_paths))
    app.config["WEBLLAMA_BUNDLES"] = bundles
    _add_page_routes(app, cfg)
    _add_bundle_routes(app, cfg, bundles)
    _add_leaderboard_route(app, cfg)

    @app.before_request
    def _check_host() -> Response | None:
        if not host_allowed(request.host, cfg.allowed_hosts):
            return Response(f"Host {request.host[:80]!r} is not this server\n", status=421, mimetype="text/plain")
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        for k, v in {**CROSS_ORIGIN_HEADERS, **cfg.extra_headers}.items():
            resp.headers.setdefault(k, v)
        resp.headers.pop("Date", None)  # the HTTP server sends its own: one Date per response
        return resp

    return app


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Is `host` (a Host header, with or without a port) a loopback name, an IP literal, or allowed?

    DNS rebinding points an attacker's name at 127.0.0.1; its requests then carry that name."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    if name in LOOPBACK_NAMES or name in {h.lower() for h in allowed}:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _add_page_routes(app: Flask, cfg: ServeConfig) -> None:
    @app.get("/")
    def index() -> Response:
        return _send(cfg.static_dir, "index.html", max_age=0)

    @app.get("/eval.html")
    def eval_page() -> Response:
        return _send(cfg.static_dir, "eval.html", max_age=0)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)

    @app.get("/static/<path:rel>")
    def static_file(rel: str) -> Response:
        return _send(cfg.static_dir, rel, max_age=0)

    @app.get("/engine/<path:rel>")
    def engine_file(rel: str) -> Response:
        return _send(cfg.engine_dir, rel, max_age=0)

    @app.get("/vendor/<pkg>/<path:rel>")
    def vendor_file(pkg: str, rel: str) -> Response:
        if pkg not in VENDOR_PACKAGES:
            abort(404)
        return _send(cfg.node_modules / VENDOR_PACKAGES[pkg], rel, max_age=cfg.vendor_max_age)


def _add_bundle_routes(app: Flask, cfg: ServeConfig, bundles: dict[str, BundleEntry]) -> None:
    @app.get("/api/models")
    def api_models() -> Response:
        resp = jsonify({"object": "list", "data": [model_summary(e) for e in bundles.values()]})
        resp.headers["Cache-Control"] = "no-store"
        return resp

    digests = _digest_cache()

    @app.get("/bundles/<slug>/<path:rel>")
    def bundle_file(slug: str, rel: str) -> Response:
        entry = bundles.get(slug)
        # A bundle is manifest.json and the files it lists: nothing else in the folder is served.
        if entry is None or (rel != "manifest.json" and rel not in entry.sha256):
            abort(404)
        path = confined_file(entry.path, rel)
        if path is None:
            abort(404)
        # A strong ETag that is the hash of the bytes on disk (cached by file identity), so a file changed
        # since the manifest was written is never announced under the manifest's hash.
        return _send(entry.path, rel, max_age=0 if rel == "manifest.json" else cfg.bundle_max_age, etag=digests.sha256(path))


def _digest_cache():
    from webllama.converter.manifest import DigestCache

    return DigestCache()


def _add_leaderboard_route(app: Flask, cfg: ServeConfig) -> None:
    @app.get("/leaderboard")
    def leaderboard_redirect() -> Response:
        return redirect("/leaderboard/", code=302)  # the page's relative links need the trailing slash

    @app.get("/leaderboard/")
    def leaderboard() -> Response:
        board = find_leaderboard(cfg.leaderboard_dir)
        if board is None:
            return Response(no_leaderboard_page(cfg.leaderboard_dir), mimetype="text/html")
        return _send(board.folder, board.page, max_age=0)

    @app.get("/leaderboard/<path:rel>")
    def leaderboard_file(rel: str) -> Response:
        board = find_leaderboard(cfg.leaderboard_dir)
        if board is None or Path(rel).suffix.lower() not in LEADERBOARD_SUFFIXES:
            abort(404)
        return _send(board.folder, rel, max_age=0)
