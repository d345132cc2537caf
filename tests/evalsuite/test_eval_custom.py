"""User tasks (--include-path) and fine-tuned native models (--adapter), issue 8's closing experiment.

- a task YAML written here (5 generate_until items, JSONL data) runs on the stories260K bundle beside the
  offline tasks, and the include path is part of the run record;
- `--backend native --adapter` scores the PEFT-merged model: its logits and greedy tokens are the peft
  model's, and differ from the base model's;
- the errors users hit first: a missing include folder, --adapter with a bundle backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from webllama.evalsuite.cli import main

TASK_YAML = """\
task: toy_story
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
output_type: generate_until
test_split: test
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 8
metric_list:
  - metric: exact_match
"""
ITEMS = [
    {"prompt": "Once upon a time, there was a little", "answer": " girl"},
    {"prompt": "Lily and Ben went to the", "answer": " park"},
    {"prompt": "The sun was", "answer": " shining"},
    {"prompt": "Tom had a big red", "answer": " ball"},
    {"prompt": "One day, a cat", "answer": " saw a bird"},
]


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user_tasks")
    data = folder / "toy_story.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ITEMS), encoding="utf-8")
    (folder / "toy_story.yaml").write_text(TASK_YAML.format(data=json.dumps(str(data))), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory, tiny_llama_dir) -> Path:
    """A LoRA adapter trained for a few steps on the tiny Llama, so that it really changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        LlamaForCausalLM.from_pretrained(tiny_llama_dir),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    ids = torch.tensor([AutoTokenizer.from_pretrained(tiny_llama_dir)("Lily and Ben went to the park.").input_ids])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    with torch.enable_grad():  # NativeLM turns autograd off process-wide when it is built
        for _ in range(20):
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
    out = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(out)
    return out


def _eval(model, out: Path, *extra: str) -> list[str]:
    return ["eval", str(model), "--output", str(out), "--bootstrap-iters", "0", *extra]


def _samples(out: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (out / "samples" / f"{task}.jsonl").read_text().splitlines() if line]


def test_user_task_runs_beside_the_offline_tasks(tmp_path, s260_bundle, small_data_dir, toy_task, capsys):
    out = tmp_path / "run"
    args = ["--backend", "onnx", "--variant", "q4", "--tasks", "toy_story,arc_easy", "--limit", "5"]
    assert main(_eval(s260_bundle, out, *args, "--data-dir", str(small_data_dir), "--include-path", str(toy_task))) == 0
    assert "toy_story" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["results"]["toy_story"]["exact_match,none"] <= 1.0
    assert "acc,none" in results["results"]["arc_easy"]
    rows = _samples(out, "toy_story")
    assert [r["doc"]["prompt"] for r in rows] == [i["prompt"] for i in ITEMS]
    assert all(isinstance(r["resps"][0][0], str) and "." not in r["resps"][0][0] for r in rows)  # cut at the stop
    assert results["webllama"]["request"]["include_paths"] == [str(toy_task.resolve())]
    # the include path is part of the request: the same folder without it is another run
    assert main(_eval(s260_bundle, out, *args, "--data-dir", str(small_data_dir))) != 0
    assert "include_paths" in capsys.readouterr().err


def test_edited_user_task_is_another_run(tmp_path, s260_bundle, toy_task, capsys):
    """Same folder, edited YAML: the cached answers of the old task must not be reused."""
    import shutil

    task = tmp_path / "tasks"
    shutil.copytree(toy_task, task)
    out = tmp_path / "run"
    args = ["--backend", "onnx", "--variant", "q4", "--tasks", "toy_story", "--limit", "2", "--include-path", str(task)]
    assert main(_eval(s260_bundle, out, *args)) == 0
    assert main(_eval(s260_bundle, out, *args)) == 0  # unchanged: resumes
    yaml = task / "toy_story.yaml"
    yaml.write_text(yaml.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    capsys.readouterr()
    assert main(_eval(s260_bundle, out, *args)) != 0
    assert "include_paths_sha256" in capsys.readouterr().err


def test_user_task_without_a_data_dir(tmp_path, s260_bundle, toy_task, monkeypatch):
    monkeypatch.delenv("WEBLLAMA_DATA_DIR", raising=False)
    out = tmp_path / "run"
    assert main(_eval(s260_bundle, out, "--tasks", "toy_story", "--include-path", str(toy_task))) == 0
    assert len(_samples(out, "toy_story")) == len(ITEMS)


def test_bad_include_path_and_unknown_user_task(tmp_path, s260_bundle, small_data_dir, toy_task, capsys):
    assert main(_eval(s260_bundle, tmp_path / "a", "--tasks", "toy_story", "--include-path", str(tmp_path / "nope"))) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --include-path") and "no such folder" in err and len(err.splitlines()) == 1
    typo = ["--tasks", "toy_stroy", "--include-path", str(toy_task), "--data-dir", str(small_data_dir)]
    assert main(_eval(s260_bundle, tmp_path / "b", *typo)) != 0
    err = capsys.readouterr().err
    assert "Did you mean 'toy_story'" in err and "Tasks in --include-path: toy_story" in err
    assert not (tmp_path / "a").exists()


def test_adapter_is_native_only(tmp_path, s260_bundle, tiny_lora, capsys):
    for backend in ("onnx", "browser"):
        assert (
            main(_eval(s260_bundle, tmp_path / backend, "--backend", backend, "--tasks", "arc_easy", "--adapter", str(tiny_lora))) != 0
        )
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --adapter works with --backend native only") and len(err.splitlines()) == 1
    bad = ["--backend", "native", "--tasks", "arc_easy", "--adapter", str(tmp_path)]
    assert main(_eval(s260_bundle, tmp_path / "c", *bad)) != 0
    assert "no adapter_config.json" in capsys.readouterr().err
    assert main(_eval(s260_bundle, tmp_path / "d", *bad[:-2], "--adapter-weight", "0.5")) != 0
    assert "--adapter-weight without --adapter" in capsys.readouterr().err


def test_native_adapter_is_the_peft_model(tiny_llama_dir, tiny_lora):
    from peft import PeftModel
    from transformers import LlamaForCausalLM
    from webllama.evalsuite.backends.base import GenOptions
    from webllama.evalsuite.backends.native import NativeLM

    tuned = NativeLM(pretrained=str(tiny_llama_dir), adapters=str(tiny_lora))
    plain = NativeLM(pretrained=str(tiny_llama_dir))
    peft_model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_llama_dir), str(tiny_lora)).eval()
    prompt = tuned.tokenizer("Lily and Ben").input_ids
    ids = np.array([prompt], dtype=np.int64)
    with torch.no_grad():
        want = peft_model(input_ids=torch.from_numpy(ids)).logits.numpy()
        greedy = peft_model.generate(torch.from_numpy(ids), max_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=2)
    got = tuned.forward_logits(ids, np.ones_like(ids))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert np.abs(plain.forward_logits(ids, np.ones_like(ids)) - want).max() > 0.1
    opts = GenOptions(max_new_tokens=12, until=(), eos_ids=(2,))
    assert tuned.generate([prompt], opts) == [greedy[0, len(prompt) :].tolist()]
    assert plain.generate([prompt], opts) != tuned.generate([prompt], opts)
    assert tuned.describe()["adapters"] == [str(tiny_lora)] and tuned.describe()["source_sha256"] != plain.describe()["source_sha256"]


def test_cli_native_adapter_changes_the_answers_and_is_recorded(tmp_path, tiny_llama_dir, tiny_lora, toy_task, small_data_dir):
    common = ["--backend", "native", "--tasks", "toy_story", "--include-path", str(toy_task), "--data-dir", str(small_data_dir)]
    assert main(_eval(tiny_llama_dir, tmp_path / "base", *common)) == 0
    assert main(_eval(tiny_llama_dir, tmp_path / "lora", *common, "--adapter", str(tiny_lora), "--adapter-weight", "1.0")) == 0
    base, lora = _samples(tmp_path / "base", "toy_story"), _samples(tmp_path / "lora", "toy_story")
    assert [r["resps"] for r in base] != [r["resps"] for r in lora]
    record = json.loads((tmp_path / "lora" / "results.json").read_text())["webllama"]
    assert record["request"]["adapters"] == [str(tiny_lora.resolve())] and record["request"]["adapter_weights"] == [1.0]
    assert record["model"]["adapters"] == [str(tiny_lora.resolve())]
    assert "adapters" not in json.loads((tmp_path / "base" / "run_config.json").read_text())
