"""The three backends on real models: stories260K (llama2.c) and a tiny random Llama (HF dir).

- native == lm-eval's own `hf` model on the same checkpoint (every request type);
- onnx fp32 == native (per-item, within fp32 tolerance), q4 runs and is compared with `webllama compare`;
- every offline task runs end to end on every backend.
"""

from __future__ import annotations

import math

import pytest
from helpers import FAST_GEN, choice, close, evaluate, scores

# Every offline task, a couple of items each (mmlu: two subjects; the 57-subject group runs in test_eval_run).
ALL_TASKS = (
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "piqa",
    "winogrande",
    "lambada_openai",
    "boolq",
    "mmlu_anatomy",
    "mmlu_world_religions",
    "truthfulqa_mc1",
    "truthfulqa_mc2",
    "gsm8k",
    "wikitext",
)
HF_TASKS = ("arc_easy", "lambada_openai", "wikitext", "gsm8k", "mmlu_anatomy", "truthfulqa_mc2")


def test_backend_table_and_lm_eval_registry_agree():
    from lm_eval.api.registry import get_model
    from webllama.evalsuite.backends import BACKENDS, get_backend, register

    register()
    for name in BACKENDS:
        if name == "webllama-browser":
            pytest.importorskip("playwright")
        assert get_model(name) is get_backend(name)
        assert get_backend(name.removeprefix("webllama-")) is get_backend(name)


@pytest.fixture(scope="session")
def native_stories(tmp_path_factory, stories_dir, small_data_dir):
    from webllama.evalsuite.backends.native import NativeLM

    lm = NativeLM(pretrained=str(stories_dir), batch_size=8)
    return evaluate(lm, tmp_path_factory.mktemp("native_s260"), small_data_dir, tasks=ALL_TASKS, model=stories_dir)


def test_native_runs_every_task_on_stories260k(native_stories):
    res = native_stories["results"]
    for task in ALL_TASKS:
        assert task in res, task
        values = [v for k, v in res[task].items() if "," in k and "stderr" not in k]
        assert values and all(isinstance(v, float) and math.isfinite(v) for v in values), task
    assert res["wikitext"]["bits_per_byte,none"] < 8
    assert native_stories["webllama"]["model"]["source_kind"] == "llama2c"


def test_native_equals_lm_eval_hf(tiny_llama_dir, small_data_dir, tmp_path):
    import lm_eval
    from webllama.evalsuite import tasks as offline
    from webllama.evalsuite.backends.native import NativeLM

    ours = evaluate(
        NativeLM(pretrained=str(tiny_llama_dir), batch_size=4), tmp_path / "native", small_data_dir, tasks=HF_TASKS, limit=3
    )
    tm = offline.task_manager(small_data_dir, tmp_path / "hf")
    ref = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_llama_dir), "dtype": "float32"},
        device="cpu",
        tasks=list(HF_TASKS),
        limit=3,
        task_manager=tm,
        batch_size=1,
        gen_kwargs=FAST_GEN,
        bootstrap_iters=0,
        log_samples=True,
    )
    a, b = scores(ours), scores(ref)
    assert a.keys() == b.keys()
    for key in a:
        assert close(a[key], b[key]), (key, a[key], b[key])
    for task in HF_TASKS:
        for metric, value in ref["results"][task].items():
            if "," in metric and "stderr" not in metric:
                assert math.isclose(ours["results"][task][metric], value, rel_tol=1e-4), (task, metric)


@pytest.fixture(scope="session")
def onnx_stories_fp32(tmp_path_factory, s260_bundle, small_data_dir):
    from webllama.evalsuite.backends.onnx import OnnxLM

    lm = OnnxLM(pretrained=str(s260_bundle), variant="fp32", batch_size=8)
    return evaluate(lm, tmp_path_factory.mktemp("onnx_s260"), small_data_dir, tasks=ALL_TASKS, backend="onnx", model=s260_bundle)


def test_onnx_fp32_matches_native_per_item(onnx_stories_fp32, native_stories):
    a, b = scores(onnx_stories_fp32), scores(native_stories)
    assert a.keys() == b.keys()
    for key in a:
        assert choice(a[key]) == choice(b[key]), key
        assert close(a[key], b[key], rel=1e-3, abs_=1e-2), key
    rec = onnx_stories_fp32["webllama"]
    assert rec["model"]["variant"] == "fp32" and len(rec["model"]["manifest_sha256"]) == 64
    assert rec["seed"] == 1234 and rec["versions"]["lm_eval"] == "0.4.13"


def test_onnx_q4_and_compare(s260_bundle, small_data_dir, native_stories, tmp_path, capsys):
    from webllama.evalsuite.backends.onnx import OnnxLM
    from webllama.evalsuite.cli import main

    evaluate(
        OnnxLM(pretrained=str(s260_bundle), variant="q4"),
        tmp_path / "q4",
        small_data_dir,
        tasks=("arc_easy", "lambada_openai", "wikitext", "truthfulqa_mc2"),
        limit=2,
        backend="onnx",
    )
    assert main(["compare", native_stories["_out"], str(tmp_path / "q4")]) == 0
    table = capsys.readouterr().out
    assert "arc_easy" in table and "mcnemar-exact" in table and "paired-bootstrap" in table
    assert "hellaswag" not in table  # only the tasks both runs have


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_llama_dir):
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.variants import parse_variants

    out = tmp_path_factory.mktemp("tiny_bundle") / "tiny"
    convert(str(tiny_llama_dir), out, ConvertOptions(variants=parse_variants("fp32"), progress=False, verify=False))
    return out


def test_onnx_matches_native_on_tiny_llama(tiny_bundle, tiny_llama_dir, small_data_dir, tmp_path):
    from webllama.evalsuite.backends.native import NativeLM
    from webllama.evalsuite.backends.onnx import OnnxLM

    tasks = ("hellaswag", "lambada_openai", "wikitext", "gsm8k")
    a = evaluate(OnnxLM(pretrained=str(tiny_bundle), variant="fp32"), tmp_path / "o", small_data_dir, tasks=tasks)
    b = evaluate(NativeLM(pretrained=str(tiny_llama_dir)), tmp_path / "n", small_data_dir, tasks=tasks)
    sa, sb = scores(a), scores(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert choice(sa[key]) == choice(sb[key]) and close(sa[key], sb[key], rel=1e-3, abs_=1e-2), key
