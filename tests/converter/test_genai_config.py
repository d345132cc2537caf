"""genai_config.json: other runtimes load a bundle as it is. lm-eval's stock `onnxruntime` and
`onnxruntime-genai` backends score it item by item like our onnx backend (<= 1e-4 log-likelihood), and
onnxruntime-genai generates the same greedy tokens as onnxruntime through OrtModel.

The bundle is a tiny random Llama whose tokenizer adds no BOS (as SmolLM2's): the stock backend always
encodes with add_special_tokens=False, while ours follows lm-eval's hf semantics (the tokenizer's default),
so on a BOS-adding tokenizer (Llama 2, llama2.c) the two score different token sequences by design."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_tiny_llama

TASK = "arc_easy"
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


@pytest.fixture(scope="module")
def offline_tasks(benchmarks_dir, tmp_path_factory):
    """One TaskManager over the offline tasks for every run (lm-eval's own index of its ~10k YAMLs is slow)."""
    from webllama.evalsuite.tasks import task_manager

    return task_manager(benchmarks_dir, tmp_path_factory.mktemp("tasks"))


def _scores(model: str, bundle: Path, tm) -> list[float]:
    """Per-continuation log-likelihoods of lm-eval's simple_evaluate with `model` (a registered lm-eval name)."""
    import lm_eval
    from webllama.evalsuite.lmeval_cli import register_backends

    register_backends()
    out = lm_eval.simple_evaluate(
        model=model, model_args=f"pretrained={bundle}", tasks=[TASK], limit=LIMIT, task_manager=tm, log_samples=True
    )
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    return [float(r[0][0]) for s in samples for r in s["resps"]]


@pytest.fixture(scope="module")
def ours(nobos_bundle, offline_tasks) -> list[float]:
    return _scores("webllama-onnx", nobos_bundle, offline_tasks)


@pytest.mark.parametrize("stock", ["onnxruntime", "onnxruntime-genai"])
def test_stock_backend_scores_like_ours(stock, nobos_bundle, ours, offline_tasks):
    theirs = _scores(stock, nobos_bundle, offline_tasks)  # pretrained=BUNDLE: genai_config.json finds the rest
    assert len(theirs) == len(ours) >= LIMIT * 2
    worst = max(abs(a - b) for a, b in zip(theirs, ours, strict=True))
    assert worst <= 1e-4, f"{stock}: max |dloglik| {worst:.2e} over {len(ours)} continuations"


def test_onnxruntime_genai_generates_like_ort(nobos_bundle):
    import onnxruntime_genai as og
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
