"""`webllama site`: the static site's layout and errors, then the site on a plain static server
(`python -m http.server`: no COOP/COEP) in headless Chromium, and the leaderboard page's screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from webllama.web.cli import main as web_cli
from webllama.web.static_site import VENDOR_FILES, SiteError, SiteOptions, write_site

from .conftest import node_modules_ready
from .test_server import leaderboard_rows, make_bundle

REPO = Path(__file__).resolve().parents[2]
needs_npm = pytest.mark.skipif(not node_modules_ready(), reason="web/node_modules missing (cd web && npm ci)")


def write_board(folder: Path, rows=None) -> Path:
    from webllama.evalsuite.leaderboard_html import write_leaderboard

    write_leaderboard(rows or leaderboard_rows(), folder)
    return folder


# ------------------------------------------------------------------------------------------ layout, errors


@needs_npm
def test_site_layout_models_json_and_leaderboard(tmp_path):
    bundle = make_bundle(tmp_path / "bundles" / "tiny")
    (bundle / "stray.bin").write_bytes(b"not in the manifest")
    board = write_board(tmp_path / "board")
    out = tmp_path / "site"
    summary = write_site(SiteOptions(bundle_paths=(bundle,), out=out, leaderboard_dir=board))
    assert summary.bundles == ("tiny",) and summary.leaderboard == board.resolve()
    for page in ("index.html", "eval.html"):
        assert (out / page).read_bytes() == (REPO / "web" / "static" / page).read_bytes()
    assert (out / "engine" / "worker.js").is_file() and (out / "static" / "chat.js").is_file()
    vendor = {p.relative_to(out / "vendor").as_posix() for p in (out / "vendor").rglob("*") if p.is_file()}
    assert vendor == {f"{pkg}/{f}" for pkg, (_, _, files) in VENDOR_FILES.items() for f in files}
    # The bundle: manifest + listed files only, byte-identical.
    copied = {p.relative_to(out / "bundles" / "tiny").as_posix() for p in (out / "bundles" / "tiny").rglob("*") if p.is_file()}
    assert copied == {"manifest.json", "onnx/model_q4.onnx", "onnx/model_q4.onnx_data"}
    assert (out / "bundles/tiny/onnx/model_q4.onnx_data").read_bytes() == (bundle / "onnx/model_q4.onnx_data").read_bytes()
    models = json.loads((out / "api" / "models").read_text())
    assert [m["url"] for m in models["data"]] == ["bundles/tiny/"]  # relative to the page
    assert models["data"][0]["manifest_url"] == "bundles/tiny/manifest.json"
    assert sorted(p.name for p in (out / "leaderboard").iterdir()) == sorted(p.name for p in board.iterdir())
    assert json.loads((out / "site.json").read_text())["format"] == "webllama-site"
    # No absolute URL in the shared pages: they must work below any path of any static host.
    for f in ("index.html", "eval.html", "static/chat.js", "static/eval.js"):
        text = (out / f).read_text()
        assert not re.search(r"""(?:src|href)=["']/|from ['"]/|fetch\(['"]/""", text), f


def run_cli(*argv) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = web_cli(["site", *map(str, argv)])
    return rc, err.getvalue()


@needs_npm
def test_site_errors_are_one_line_and_leave_nothing_behind(tmp_path):
    bundle = make_bundle(tmp_path / "bundles" / "tiny")
    out = tmp_path / "out" / "site"
    rc, err = run_cli(tmp_path / "nope", "--out", out)
    assert rc != 0 and err.count("\n") == 1 and "not a bundle" in err, err
    assert run_cli(bundle, "--out", out, "--leaderboard", tmp_path / "no-board")[1].startswith("error: --leaderboard")
    assert run_cli(bundle, "--out", out) == (0, "")
    (out / "marker").write_text("old site")
    rc, err = run_cli(bundle, "--out", out)
    assert rc != 0 and "already exists; pass --force" in err
    assert run_cli(bundle, "--out", out, "--force") == (0, "")
    assert not (out / "marker").exists() and (out / "api" / "models").is_file()
    # --force never deletes a folder that is not a site (here: the bundle itself).
    rc, err = run_cli(bundle, "--out", bundle, "--force")
    assert rc != 0 and "not a site written by `webllama site`" in err and (bundle / "manifest.json").is_file()
    # A bundle whose files do not match its manifest fails before anything is renamed into place.
    (bundle / "onnx" / "model_q4.onnx_data").write_bytes(b"short")
    with pytest.raises(SiteError, match="model_q4.onnx_data: manifest.json lists 16384 bytes, found 5 bytes"):
        write_site(SiteOptions(bundle_paths=(bundle,), out=tmp_path / "out" / "site2"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["site"]  # no temporary folder left


# ------------------------------------------------------------------------------------------ in Chromium


class StaticServer:
    """`python -m http.server` on a free localhost port: plain files, no COOP/COEP headers."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        port = re.search(r"port (\d+)", line)
        if not port:
            self.stop()
            raise RuntimeError(f"http.server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{port.group(1)}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def static_site(s260_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    board = write_board(root / "board", readme_rows())
    out = root / "www" / "webllama"  # below a sub-path: nothing may assume the site is at the host's root
    write_site(SiteOptions(bundle_paths=(s260_bundle,), out=out, leaderboard_dir=board))
    server = StaticServer(root / "www")
    yield server.url + "/webllama/", board
    server.stop()


@pytest.mark.browser
def test_site_chats_on_a_plain_static_server_single_threaded(browser_no_webgpu, static_site):
    static_site, board_dir = static_site
    ctx = browser_no_webgpu.new_context()
    pg = ctx.new_page()
    pg.set_default_timeout(180_000)  # a loaded 2-core CI machine
    pg.goto(static_site + "?model=stories260K&autoload=1")
    pg.wait_for_function("!document.querySelector('#prompt').disabled || !document.querySelector('#error').hidden")
    assert pg.is_hidden("#error"), pg.inner_text("#error")
    assert pg.evaluate("crossOriginIsolated") is False
    pg.evaluate("document.querySelector('#settings').open = true")
    pg.fill("#max_tokens", "12")
    pg.fill("#temperature", "0")
    pg.fill("#prompt", "Once upon a time")
    pg.press("#prompt", "Enter")
    # (Streaming itself is tested on the Flask page; 12 stories260K tokens can finish between two polls,
    # so waiting for the `.streaming` class here would race.)
    pg.wait_for_selector(".msg.assistant .meta")
    reply, status = pg.inner_text(".msg.assistant"), pg.inner_text("#status")
    assert len(reply) > 10, reply
    assert "Provider: wasm" in status and "threads: 1 (no cross-origin isolation)" in status, status
    # The header's link reaches the leaderboard with its plots.
    pg.click("text=Leaderboard")
    pg.wait_for_selector("#board")
    assert pg.evaluate("[...document.images].every((i) => i.complete && i.naturalWidth > 0)")
    assert pg.evaluate("document.images.length") == len(list(board_dir.glob("*.png")))  # every plot the board wrote
    ctx.close()


# ------------------------------------------------------------------------------------------ screenshot


def readme_rows():
    """The rows `webllama.evalsuite.leaderboard.collect` made from four real `webllama eval` runs of stories260K
    (native, onnx fp32, onnx q4, browser q4 on WASM; `--tasks arc_easy,piqa --limit 20`, 0-shot)."""
    from webllama.evalsuite.leaderboard import Row, Score

    def scores(arc: float, arc_se: float, delta=None, agreement=None) -> dict:
        vs_native = {} if delta is None else {"delta": 0.0, "p_value": 1.0, "agreement": 1.0}
        return {
            "arc_easy": Score("acc,none", arc, arc_se, delta, None if delta is None else 1.0, agreement),
            "piqa": Score("acc,none", 0.4, 0.1123903, **vs_native),
        }

    sha = "9e7cf111e5ad6674dc05043ccba49651476bf2dbfd18997a9ac6d32ad52db9ba"
    return [
        Row("stories260K", "source", "native", sha, scores(0.15, 0.0819178)),
        Row("stories260K", "fp32", "onnx", sha, scores(0.15, 0.0819178, 0.0, 1.0), 1_402_878, 5.395),
        Row("stories260K", "q4", "onnx", sha, scores(0.2, 0.0917663, 0.05, 0.8), 554_511, 2.1325),
        Row("stories260K", "q4", "browser-wasm", sha, scores(0.2, 0.0917663, 0.05, 0.8), 554_511, 2.1325),
    ]


@pytest.mark.browser
def test_leaderboard_page_screenshot(browser_no_webgpu, static_site, tmp_path):
    """Writes docs/img/leaderboard.png with WEBLLAMA_UPDATE_SCREENSHOT=1."""
    ctx = browser_no_webgpu.new_context(viewport={"width": 1200, "height": 800})
    pg = ctx.new_page()
    pg.goto(static_site[0] + "leaderboard/")
    pg.wait_for_selector("#board")
    pg.wait_for_function("[...document.images].every((i) => i.complete && i.naturalWidth > 0)")
    assert pg.locator("#board tbody tr").count() == len(readme_rows())
    shot = tmp_path / "leaderboard.png"
    pg.screenshot(path=str(shot), full_page=True)
    if os.environ.get("WEBLLAMA_UPDATE_SCREENSHOT"):
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "img" / "leaderboard.png")
    ctx.close()
