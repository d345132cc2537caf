"""web/server.py through Flask's test client: no browser, a hand-made bundle folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from webllama.web.server import Leaderboard, ServeConfig, ServeError, create_app, discover_bundles, find_leaderboard

from .conftest import node_modules_ready

PAYLOAD = bytes(range(256)) * 64  # 16 KiB


def make_bundle(folder: Path, name: str = "tiny") -> Path:
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model_q4.onnx_data").write_bytes(PAYLOAD)
    (folder / "onnx" / "model_q4.onnx").write_bytes(b"graph")
    files = [
        {"path": p, "size": (folder / p).stat().st_size, "sha256": hashlib.sha256((folder / p).read_bytes()).hexdigest()}
        for p in ("onnx/model_q4.onnx", "onnx/model_q4.onnx_data")
    ]
    manifest = {
        "schema_version": 1,
        "format": "webllama-bundle",
        "name": name,
        "context_length": 64,
        "architecture": "llama",
        "num_parameters": 10,
        "tokenizer": {"has_chat_template": False},
        "variants": {
            "q4": {
                "model": "onnx/model_q4.onnx",
                "external_data": ["onnx/model_q4.onnx_data"],
                "bytes": len(PAYLOAD),
                "requires_webgpu_features": [],
            }
        },
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "bundles" / "tiny")


@pytest.fixture
def client(bundle, tmp_path):
    secret = tmp_path / "bundles" / "secret.txt"
    secret.write_text("do not serve")
    return create_app(ServeConfig(bundle_paths=(bundle.parent,))).test_client()


def test_api_models_lists_bundles(client):
    body = client.get("/api/models").get_json()
    assert [m["id"] for m in body["data"]] == ["tiny"]
    m = body["data"][0]
    assert m["url"] == "/bundles/tiny/" and m["name"] == "tiny" and m["context_length"] == 64
    assert m["variants"]["q4"]["bytes"] == len(PAYLOAD)
    assert "files" not in m


def test_range_request_answers_206_with_the_right_bytes(client):
    r = client.get("/bundles/tiny/onnx/model_q4.onnx_data", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.data == PAYLOAD[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(PAYLOAD)}"
    assert r.headers["Accept-Ranges"] == "bytes"
    tail = client.get("/bundles/tiny/onnx/model_q4.onnx_data", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == PAYLOAD[-10:]
    bad = client.get("/bundles/tiny/onnx/model_q4.onnx_data", headers={"Range": f"bytes={len(PAYLOAD) + 5}-"})
    assert bad.status_code == 416


def test_etag_is_the_manifest_sha256_and_revalidates(client):
    r = client.get("/bundles/tiny/onnx/model_q4.onnx_data")
    assert r.status_code == 200 and r.data == PAYLOAD
    assert r.headers["ETag"].strip('"') == hashlib.sha256(PAYLOAD).hexdigest()
    assert "Cache-Control" in r.headers
    again = client.get("/bundles/tiny/onnx/model_q4.onnx_data", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


def test_cross_origin_isolation_headers_everywhere(client):
    for path in ("/", "/api/models", "/bundles/tiny/manifest.json", "/leaderboard", "/engine/client.js"):
        r = client.get(path)
        assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin", path
        assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp", path
        assert r.headers["Cross-Origin-Resource-Policy"] == "same-origin", path


@pytest.mark.parametrize(
    "path",
    [
        "/bundles/tiny/../secret.txt",
        "/bundles/tiny/%2e%2e/secret.txt",
        "/bundles/tiny/..%2fsecret.txt",
        "/bundles/tiny/onnx/../../secret.txt",
        "/bundles/tiny//etc/passwd",
        "/bundles/nope/manifest.json",
        "/static/../server.py",
        "/engine/%2e%2e/server.py",
        "/vendor/ort/../../package.json",
        "/vendor/notapkg/index.js",
    ],
)
def test_path_traversal_is_refused(client, path):
    r = client.get(path)
    assert r.status_code in (404, 400), (path, r.status_code)
    assert b"do not serve" not in r.data and b"create_app" not in r.data


def test_mime_types(client):
    assert client.get("/engine/client.js").headers["Content-Type"].startswith("text/javascript")
    assert client.get("/static/chat.js").headers["Content-Type"].startswith("text/javascript")
    assert client.get("/").headers["Content-Type"].startswith("text/html")
    assert client.get("/bundles/tiny/manifest.json").headers["Content-Type"].startswith("application/json")
    assert client.get("/bundles/tiny/onnx/model_q4.onnx_data").headers["Content-Type"] == "application/octet-stream"


@pytest.mark.skipif(not node_modules_ready(), reason="web/node_modules missing (cd web && npm ci)")
def test_vendor_wasm_and_mjs_mime(client):
    wasm = client.get("/vendor/ort/ort-wasm-simd-threaded.wasm", headers={"Range": "bytes=0-3"})
    assert wasm.status_code == 206 and wasm.data == b"\0asm"
    assert wasm.headers["Content-Type"] == "application/wasm"
    mjs = client.get("/vendor/ort/ort-wasm-simd-threaded.asyncify.mjs")
    assert mjs.status_code == 200 and mjs.headers["Content-Type"].startswith("text/javascript")
    assert client.get("/vendor/tokenizers/tokenizers.min.mjs").status_code == 200
    assert client.get("/vendor/jinja/index.js").status_code == 200


def leaderboard_rows():
    """Two rows for webllama.evalsuite.leaderboard_html.write_leaderboard (no eval run needed)."""
    from webllama.evalsuite.leaderboard import Row, Score

    native = Row("tiny", "source", "native", "abc", {"arc_easy": Score("acc,none", 0.42, 0.02)}, 2_000_000, 4.0)
    q4 = Row("tiny", "q4", "browser-wasm", "abc", {"arc_easy": Score("acc,none", 0.40, 0.02, delta=-0.02, p_value=0.3)}, 600_000, 0.6)
    return [native, q4]


def test_leaderboard_folder_is_served_with_its_files(tmp_path, bundle):
    from webllama.evalsuite.leaderboard_html import write_leaderboard

    lb = tmp_path / "lb"
    write_leaderboard(leaderboard_rows(), lb)
    (tmp_path / "secret.txt").write_text("do not serve")
    (lb / "notes.py").write_text("do not serve")
    c = create_app(ServeConfig(bundle_paths=(bundle,), leaderboard_dir=lb)).test_client()
    r = c.get("/leaderboard")
    assert r.status_code == 302 and r.headers["Location"].endswith("/leaderboard/")
    page = c.get("/leaderboard/")
    assert page.status_code == 200 and page.data == (lb / "index.html").read_bytes()
    assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    # Every relative URL of the page resolves under /leaderboard/.
    links = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.get_data(as_text=True))
    assert {"accuracy_vs_size.png", "deltas_vs_native.png", "leaderboard.md", "leaderboard.csv", "leaderboard.json"} <= set(links)
    for link in links:
        got = c.get(f"/leaderboard/{link}")
        assert got.status_code == 200 and got.data == (lb / link).read_bytes(), link
    assert c.get("/leaderboard/accuracy_vs_size.png").headers["Content-Type"] == "image/png"
    assert c.get("/leaderboard/deltas_vs_native.svg").headers["Content-Type"].startswith("image/svg+xml")
    assert c.get("/leaderboard/leaderboard.csv").headers["Content-Type"].startswith("text/csv")
    for bad in (
        "/leaderboard/../secret.txt",
        "/leaderboard/%2e%2e/secret.txt",
        "/leaderboard/..%2fsecret.txt",
        "/leaderboard//etc/passwd",
        "/leaderboard/notes.py",
        "/leaderboard/nope.png",
    ):
        got = c.get(bad)
        assert got.status_code in (400, 404) and b"do not serve" not in got.data, bad


def test_leaderboard_fallbacks(tmp_path, bundle):
    none = create_app(ServeConfig(bundle_paths=(bundle,))).test_client()
    assert none.get("/leaderboard/").status_code == 200 and b"No leaderboard yet" in none.get("/leaderboard/").data
    assert none.get("/leaderboard/index.html").status_code == 404
    lb = tmp_path / "lb"
    lb.mkdir()
    empty = create_app(ServeConfig(bundle_paths=(bundle,), leaderboard_dir=lb)).test_client()
    assert b"No leaderboard yet" in empty.get("/leaderboard/").data
    # Older layout: a folder of .html reports -> the newest one.
    (lb / "old.html").write_text("<p>old</p>")
    (lb / "new.html").write_text("<p>new</p>")
    os.utime(lb / "old.html", (1, 1))
    assert find_leaderboard(lb) == Leaderboard(lb, "new.html")
    assert empty.get("/leaderboard/").data == b"<p>new</p>"
    # A folder of leaderboard folders -> the newest one; DIR/index.html wins over both.
    for name, t in (("2024-01", 1), ("2024-02", 2)):
        (lb / name).mkdir()
        (lb / name / "index.html").write_text(f"<p>{name}</p>")
        os.utime(lb / name / "index.html", (t, t))
    assert empty.get("/leaderboard/").data == b"<p>2024-02</p>"
    (lb / "index.html").write_text("<p>top</p>")
    assert empty.get("/leaderboard/").data == b"<p>top</p>"


def test_discovery_errors_and_unique_slugs(tmp_path, bundle):
    with pytest.raises(ServeError, match="not a bundle"):
        discover_bundles((tmp_path / "missing",))
    other = make_bundle(tmp_path / "x" / "tiny")
    entries = discover_bundles((bundle, other))
    assert sorted(entries) == ["tiny", "tiny-2"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ServeError, match="webllama-bundle"):
        discover_bundles((tmp_path / "bad",))


def test_cli_registers_serve_with_safe_defaults():
    import argparse

    from webllama.web.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["serve", "some/dir"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.leaderboard is None
    assert callable(args.handler)
