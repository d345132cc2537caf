"""Bad input: one clear line on stderr, a non-zero exit code, and no output directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from webllama.converter.bundle import staging_dir
from webllama.converter.onnx_io import save_sharded


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webllama.converter.cli", *args], capture_output=True, text=True, timeout=600)


def assert_clean_failure(proc: subprocess.CompletedProcess, out: Path, *words: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def test_wrong_architecture(tmp_path, tiny_llama_dir):
    src = tmp_path / "gpt2"
    shutil.copytree(tiny_llama_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(src), str(out)), out, "gpt2", "not supported")


def test_truncated_safetensors(tmp_path, tiny_llama_dir):
    src = tmp_path / "trunc"
    shutil.copytree(tiny_llama_dir, src)
    st = src / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(src), str(out)), out, "truncated")


def test_missing_tokenizer(tmp_path, tiny_llama_dir):
    src = tmp_path / "notok"
    shutil.copytree(tiny_llama_dir, src)
    for f in src.glob("tokenizer*"):
        f.unlink()
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(src), str(out)), out, "tokenizer")


def test_truncated_llama2c_checkpoint(tmp_path, stories_dir):
    src = tmp_path / "s260"
    src.mkdir()
    shutil.copy(stories_dir / "tok512.bin", src)
    (src / "stories260K.bin").write_bytes((stories_dir / "stories260K.bin").read_bytes()[:500_000])
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(src), str(out)), out, "truncated")


def test_llama2c_without_tokenizer(tmp_path, stories_dir):
    src = tmp_path / "s260"
    src.mkdir()
    shutil.copy(stories_dir / "stories260K.bin", src)
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(src / "stories260K.bin"), str(out)), out, "tokenizer")


def test_unknown_variant_and_hqq(tmp_path, stories_dir):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(stories_dir), str(out), "--variant", "q3"), out, "unknown variant")
    assert_clean_failure(run_cli("convert", str(stories_dir), str(out), "--method", "hqq"), out, "browser")


def test_not_a_model(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(junk), str(out)), out, "not a model")


def test_existing_output_is_not_touched(tmp_path, stories_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli("convert", str(stories_dir), str(out))
    assert proc.returncode != 0 and "--force" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_interrupted_write_leaves_nothing(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt), staging_dir(out, force=False) as tmp:
        (tmp / "half.onnx").write_bytes(b"x" * 100)
        raise KeyboardInterrupt
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_shards_respect_the_size_cap(tmp_path):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    ws = [numpy_helper.from_array(np.full((64, 64), i, np.float32), f"w{i}") for i in range(5)]  # 16 KiB each
    node = helper.make_node("Sum", [w.name for w in ws], ["y"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 64])], ws)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)])
    shards = save_sharded(model, tmp_path / "m.onnx", max_shard=40_000)
    assert [s.name for s in shards] == ["m.onnx_data", "m.onnx_data_1", "m.onnx_data_2"]
    assert all(s.stat().st_size <= 40_000 for s in shards)
    import onnxruntime as ort

    y = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {})[0]
    assert float(y[0, 0]) == sum(range(5))
