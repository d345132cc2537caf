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
