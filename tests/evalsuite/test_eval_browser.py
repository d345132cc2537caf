"""webllama-browser: the bundle inside headless Chromium gives the same per-item answers as webllama-onnx.

All requests of a run go through ONE page session (one server, one page, one bundle load).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import choice, close, evaluate, scores

pytestmark = pytest.mark.browser
TASKS = ("arc_easy", "hellaswag", "lambada_openai", "wikitext", "gsm8k")
CHROMIUM = os.environ.get("WEBLLAMA_CHROMIUM", "/usr/bin/chromium")
WEB = Path(__file__).resolve().parents[2] / "web"


@pytest.fixture(scope="module")
def browser_lm(s260_bundle):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.fail(f"{WEB}/node_modules is missing: run `cd web && npm ci`")
    from webllama.evalsuite.backends.browser import BrowserLM

    lm = BrowserLM(pretrained=str(s260_bundle), variant="q4", device="wasm", batch_size=64, threads=1)
    yield lm
    lm.close()


def test_browser_wasm_agrees_with_onnx_per_item(browser_lm, s260_bundle, small_data_dir, tmp_path):
    from webllama.evalsuite.backends.onnx import OnnxLM

    session = browser_lm.session
    got = evaluate(browser_lm, tmp_path / "browser", small_data_dir, tasks=TASKS, backend="browser")
    want = evaluate(OnnxLM(pretrained=str(s260_bundle), variant="q4"), tmp_path / "onnx", small_data_dir, tasks=TASKS, backend="onnx")
    a, b = scores(got), scores(want)
    assert a.keys() == b.keys()
    for key in a:
        assert choice(a[key]) == choice(b[key]), key  # same answer, same greedy flag, same generated text
        assert close(a[key], b[key], rel=1e-3, abs_=1e-2), key
    assert browser_lm.session is session and session.info["execution_provider"] == "wasm"
    model = got["webllama"]["model"]
    assert model["device"] == "wasm" and model["num_threads"] == 1  # threads= reaches the page
    assert model["graph_file"].endswith("_wasm.onnx")  # int4 on WASM runs the dequantize-at-load graph


def test_browser_refuses_sampling(browser_lm):
    from webllama.evalsuite.backends.base import GenOptions
    from webllama.evalsuite.errors import BackendError

    with pytest.raises(BackendError, match="greedy"):
        browser_lm.generate([[1, 2]], GenOptions(4, (), (2,), do_sample=True, temperature=0.7))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("WEBLLAMA_EVAL_WEBGPU"), reason="set WEBLLAMA_EVAL_WEBGPU=1 (~2 min on 2 cores)")
def test_browser_webgpu_scores_like_onnx(s260_bundle):
    """SwiftShader WebGPU (--enable-unsafe-webgpu): same greedy flags, log-likelihoods within 1e-3."""
    from webllama.evalsuite.backends.browser import BrowserLM
    from webllama.evalsuite.backends.onnx import OnnxLM

    pairs = [([1, 403, 407], [261, 378]), ([1, 403], [407, 261, 378]), ([1], [403])]
    lm = BrowserLM(pretrained=str(s260_bundle), variant="q4", device="webgpu")
    try:
        got = lm.score_pairs(pairs)
        assert "webgpu" in lm.session.info["execution_provider"]
    finally:
        lm.close()
    want = OnnxLM(pretrained=str(s260_bundle), variant="q4").score_pairs(pairs)
    for (a, ga), (b, gb) in zip(got, want, strict=True):
        assert ga == gb and a == pytest.approx(b, abs=1e-3)
