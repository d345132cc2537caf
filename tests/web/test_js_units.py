"""The pure JS modules (sampler, openai, stopping, rpc + handler with a mocked engine, manifest,
kv_cache) under `node --test`, so one pytest command covers them."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import node_bin, run_node_tests

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(node_bin() is None, reason="node is not installed")
def test_node_unit_tests():
    files = sorted(HERE.glob("*.test.mjs"))
    assert files
    r = run_node_tests(files)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "# fail 0" in r.stdout


@pytest.mark.skipif(node_bin() is None, reason="node is not installed")
def test_one_provider_table_on_both_sides():
    """evalsuite/devices.py's browser devices are exactly the engine's PROVIDERS (web/engine/session.js), and every
    ORT EP name the engine maps comes back to one of them."""
    import json
    import subprocess

    from webllama.evalsuite.devices import BROWSER_DEVICES

    session = (HERE.parents[1] / "web" / "engine" / "session.js").as_uri()
    js = f"import('{session}').then((m) => console.log(JSON.stringify({{p: Object.keys(m.PROVIDERS), e: m.EP_NAMES}})))"
    r = subprocess.run([node_bin(), "--input-type=module", "-e", js], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert sorted(got["p"]) == sorted(BROWSER_DEVICES)
    assert set(got["e"].values()) == set(BROWSER_DEVICES), got["e"]


@pytest.mark.skipif(node_bin() is None, reason="node is not installed")
def test_appended_cache_grows_the_same_on_both_sides():
    """OrtModel's engine-shaped decoding of an appended-cache graph (APPEND_STEP) grows its capacity as the engine's
    AppendKvCache does: the browser parity tests compare the two on the same feeds."""
    import subprocess

    from webllama.converter.ort_model import APPEND_STEP

    kv = (HERE.parents[1] / "web" / "engine" / "kv_cache.js").as_uri()
    js = f"import('{kv}').then((m) => console.log(m.APPEND_STEP))"
    r = subprocess.run([node_bin(), "--input-type=module", "-e", js], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == APPEND_STEP
