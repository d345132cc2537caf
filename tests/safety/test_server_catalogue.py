"""The server half of the issue-13 catalogue, against a real `webllama serve` on 127.0.0.1: a bundle
folder that holds a link to `/`, an unlisted file and a listed file that is a link out of the bundle,
beside a hidden partial conversion and an unverified one. Requests go out byte for byte (http.client),
so no client normalizes the attack paths away.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(args: list[str], port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "webllama.cli", "serve", *args, "--port", str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_up(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail("serve did not start")


@dataclass
class Server:
    port: int
    root: Path  # the folder of bundles given to serve
    bundle: Path

    def request(self, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hdrs = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, resp.headers, body


def _add_listed(bundle: Path, rel: str) -> None:
    """List `rel` in the manifest with the size and sha256 of what it points at now."""
    m = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / rel).read_bytes()
    m["files"].append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def server(tmp_path_factory, stories_dir) -> Iterator[Server]:
    from webllama.converter import ConvertOptions, convert

    root = tmp_path_factory.mktemp("serve") / "bundles"
    bundle = root / "s260"
    convert(str(stories_dir), bundle, ConvertOptions(verify=False, progress=False))
    (bundle / "root").symlink_to("/")
    (bundle / "unlisted.txt").write_text("not in the manifest")
    (bundle / "leak.txt").symlink_to("/etc/passwd")
    _add_listed(bundle, "leak.txt")
    for hidden in (".s260.partial-99999", "s260.unverified"):
        shutil.copytree(bundle, root / hidden, symlinks=True)
    port = free_port()
    proc = start_serve([str(root)], port)
    try:
        wait_until_up(proc, port)
        yield Server(port, root, bundle)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass(frozen=True)
class Attack:
    id: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    status: int = 404


ATTACKS = [
    Attack("link to / inside the bundle", "/bundles/s260/root/etc/passwd"),
    Attack("file the manifest does not list", "/bundles/s260/unlisted.txt"),
    Attack("listed file that is a link out of the bundle", "/bundles/s260/leak.txt"),
    Attack("encoded ../ (%2f)", "/bundles/s260/..%2f..%2f..%2fetc/passwd"),
    Attack("encoded ../ (%2e%2e)", "/bundles/s260/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    Attack("double slash", "/bundles/s260//etc/passwd"),
    Attack("a 300-character path segment", "/bundles/s260/" + "a" * 300),
    Attack("hidden partial conversion", "/bundles/.s260.partial-99999/manifest.json"),
    Attack("unverified conversion", "/bundles/s260.unverified/manifest.json"),
    Attack("DNS rebinding: foreign Host header", "/api/models", (("Host", "attacker.example"),), 421),
    Attack("DNS rebinding: foreign Host with port", "/bundles/s260/manifest.json", (("Host", "attacker.example:8000"),), 421),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack_is_refused(server: Server, attack: Attack):
    status, _, body = server.request(attack.path, dict(attack.headers))
    assert status == attack.status, body[:200]
    assert b"root:" not in body and b"not in the manifest" not in body


def test_only_finished_bundles_are_listed_and_loopback_names_are_served(server: Server):
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        status, _, body = server.request("/api/models", {"Host": host})
        assert status == 200
        assert [m["id"] for m in json.loads(body)["data"]] == ["s260"]


RANGE_CASES = [
    ("bytes=0-9", 206, "first ten bytes"),
    ("bytes=0-1,5-6", 200, "several ranges: the whole file"),
    ("bytes=abc", 200, "malformed: ignored"),
    ("items=0-5", 200, "another unit: ignored"),
    ("bytes=9-2", 200, "first > last: ignored"),
    ("bytes=-999999999", 206, "suffix longer than the file: the whole file"),
]


@pytest.mark.parametrize(("header", "status", "why"), RANGE_CASES, ids=[c[2] for c in RANGE_CASES])
def test_range_requests_follow_rfc_9110(server: Server, header: str, status: int, why: str):
    whole = (server.bundle / "tokenizer.json").read_bytes()
    got, headers, body = server.request("/bundles/s260/tokenizer.json", {"Range": header})
    assert got == status, why
    if header == "bytes=0-9":
        assert body == whole[:10]
    else:
        assert body == whole
    if got == 206 and header != "bytes=0-9":
        assert headers["Content-Range"] == f"bytes 0-{len(whole) - 1}/{len(whole)}"


def test_etag_is_the_sha256_of_the_bytes_served(server: Server, tmp_path):
    path = server.bundle / "generation_config.json"
    _, headers, body = server.request("/bundles/s260/generation_config.json")
    assert headers["ETag"].strip('"') == hashlib.sha256(body).hexdigest()
    original = path.read_bytes()
    changed = original.replace(b"{", b" ", 1)  # the same size: the manifest's size check cannot tell
    try:
        path.write_bytes(changed)
        _, headers, body = server.request("/bundles/s260/generation_config.json")
        assert body == changed and headers["ETag"].strip('"') == hashlib.sha256(changed).hexdigest()
    finally:
        path.write_bytes(original)


def test_one_charset_and_one_date(server: Server):
    _, headers, _ = server.request("/")
    assert headers.get_all("Content-Type") == ["text/html; charset=utf-8"]
    _, headers, _ = server.request("/static/chat.js")
    assert headers["Content-Type"].count("charset") == 1
    _, headers, _ = server.request("/bundles/s260/tokenizer.json", method="HEAD")
    assert len(headers.get_all("Date")) == 1


def test_a_network_host_is_announced(server: Server):
    port = free_port()
    proc = start_serve([str(server.bundle), "--host", "0.0.0.0"], port)
    try:
        wait_until_up(proc, port)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    warning = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "reachable from the network" in warning[0], err
