"""genai_config.json: other runtimes load a bundle as it is. lm-eval's stock `onnxruntime` backend scores
it item by item like our onnx backend (<= 1e-4 log-likelihood), and onnxruntime-genai generates the same
greedy tokens as onnxruntime through OrtModel.

The bundle is a tiny random Llama whose tokenizer adds no BOS (as SmolLM2's): the stock backend always
encodes with add_special_tokens=False, while ours follows lm-eval's hf semantics (the tokenizer's default),
so on a BOS-adding tokenizer (Llama 2, llama2.c) the two score different token sequences by design."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_tiny_llama

TASKS = "arc_easy"
LIMIT = 10


@pytest.fixture(scope="module")
def nobos_bundle(tmp_path_factory, stories_dir) -> Path:
    from transformers import AutoTokenizer
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.variants import parse_variants

    src = make_tiny_llama(tmp_path_factory.mktemp("nobos") / "tiny-nobos", stories_dir, seed=3)
    tok = AutoTokenizer.from_pretrained(src)
    tok.add_bos_token = False
    tok.save_pretrained(src)
    out = tmp_path_factory.mktemp("bundles") / "tiny-nobos"
    convert(str(src), out, ConvertOptions(variants=parse_variants("q4,fp32"), progress=False))
    return out


def test_genai_config_names_the_default_graph_and_its_io(nobos_bundle):
    from webllama.converter.manifest import open_bundle

    cfg = json.loads((nobos_bundle / "genai_config.json").read_text())
    manifest = open_bundle(nobos_bundle).manifest
    dec = cfg["model"]["decoder"]
    assert dec["filename"] == "onnx/model_q4.onnx" and (nobos_bundle / dec["filename"]).is_file()
    assert dec["num_hidden_layers"] == manifest["config"]["num_hidden_layers"]
    assert dec["num_key_value_heads"] == manifest["config"]["num_key_value_heads"]
    names = {i["name"] for i in manifest["variants"]["q4"]["inputs"]}
    assert {dec["inputs"]["past_key_names"] % 0, dec["inputs"]["position_ids"]} <= names
    assert cfg["model"]["context_length"] == manifest["context_length"]
    assert "genai_config.json" in {f["path"] for f in manifest["files"]}  # hashed like every bundle file


def _samples(out: Path, task: str) -> list[dict]:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _lm_eval(model: str, bundle: Path, out: Path, data_dir: Path) -> None:
    from webllama.evalsuite.lmeval_cli import run_lm_eval

    args = ["--model", model, "--model_args", f"pretrained={bundle}", "--tasks", TASKS, "--limit", str(LIMIT)]
    rc = run_lm_eval(["--data-dir", str(data_dir), *args, "--output_path", str(out), "--log_samples"])
    assert rc == 0


def test_stock_onnxruntime_backend_scores_like_ours(nobos_bundle, benchmarks_dir, tmp_path):
    _lm_eval("onnxruntime", nobos_bundle, tmp_path / "stock", benchmarks_dir)
    _lm_eval("webllama-onnx", nobos_bundle, tmp_path / "ours", benchmarks_dir)
    worst, n = 0.0, 0
    for task in TASKS.split(","):
        stock, ours = _samples(tmp_path / "stock", task), _samples(tmp_path / "ours", task)
        assert [s["doc_id"] for s in stock] == [s["doc_id"] for s in ours]
        for a, b in zip(stock, ours, strict=True):
            for (ra,), (rb,) in zip(a["resps"], b["resps"], strict=True):
                worst, n = max(worst, abs(float(ra[0]) - float(rb[0]))), n + 1
    assert n >= LIMIT * 2
    assert worst <= 1e-4, f"max |dloglik| {worst:.2e} over {n} continuations"


def test_onnxruntime_genai_generates_like_ort(nobos_bundle):
    og = pytest.importorskip("onnxruntime_genai")
    from webllama.converter.ort_model import OrtModel

    model = og.Model(str(nobos_bundle))
    prompt = og.Tokenizer(model).encode("Once upon a time")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + 24, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt)
    while not gen.is_done():
        gen.generate_next_token()
    got = [int(t) for t in gen.get_sequence(0)][len(prompt) :]
    want = OrtModel(nobos_bundle, variant="q4").greedy([int(t) for t in prompt], max_new_tokens=len(got), eos=False)
    assert got == want
