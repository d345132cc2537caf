"""`webllama bench` on stories260K: the JSON schema and sane values, not the speed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from webllama.converter.cli import main as webllama
from webllama.evalsuite.bench.compare import ratio_lines, results_table
from webllama.evalsuite.bench.measure import Settings, prompt_ids
from webllama.evalsuite.bench.runners.web import gpt2_detokenize, spm_detokenize
from webllama.evalsuite.bench.schema import RUNTIMES, BenchError, stat, validate

QUICK = ["--runs", "2", "--load-runs", "1", "--prompt-lengths", "16,64", "--decode-tokens", "8", "--quiet"]


@pytest.fixture(scope="module")
def onnx_result(s260_bundle, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "s260-onnx.json"
    assert (
        webllama(["bench", str(s260_bundle), "--runtime", "onnx", "--variant", "q4", "--threads", "1", *QUICK, "--output", str(out)])
        == 0
    )
    return json.loads(out.read_text())


def test_onnx_result_follows_the_schema(onnx_result, s260_bundle):
    doc = validate(onnx_result)
    assert (doc["schema_version"], doc["format"], doc["runtime"], doc["device"]) == (1, "webllama-bench", "onnx", "cpu")
    assert doc["variant"] == "q4" and doc["threads"] == 1
    assert doc["target"]["name"] == "stories260K" and doc["target"]["kind"] == "bundle" and len(doc["target"]["sha256"]) == 64
    assert doc["settings"]["prompt_lengths"] == [16, 64] and doc["settings"]["decode_tokens"] == 8
    assert doc["versions"]["onnxruntime"] and doc["machine"]["logical_cores"] >= 1


def test_onnx_result_values_are_sane(onnx_result, s260_bundle):
    m = onnx_result["metrics"]
    manifest = json.loads((Path(s260_bundle) / "manifest.json").read_text())
    q4 = manifest["variants"]["q4"]
    assert m["bundle_bytes"] == q4["bytes"] or abs(m["bundle_bytes"] - q4["bytes"]) < 4096
    assert m["bytes_per_parameter"] == pytest.approx(m["bundle_bytes"] / manifest["num_parameters"])
    assert 0 < m["weight_bytes"] <= m["bundle_bytes"]
    assert set(m["prefill_tokens_per_s"]) == {"16", "64"}
    for s in [m["load_s"], m["ttft_s"], m["decode_tokens_per_s"], *m["prefill_tokens_per_s"].values()]:
        assert s["n"] == len(s["samples"]) and s["min"] <= s["median"] <= s["max"] and s["median"] > 0
    assert m["decode_tokens_per_s"]["n"] == 2 and m["load_cached_s"] is None
    assert m["peak_rss_bytes"] >= m["baseline_rss_bytes"] > 0


def test_tables_render_from_results(onnx_result):
    docs = {"onnx-q4": onnx_result, "llamacpp-q4_0": onnx_result}
    table = results_table(docs, {"read_bytes_per_s": 1e9})
    assert "| onnx-q4 | onnx / cpu | q4 |" in table and "of " in table
    assert any("1.00x | 1.00x" in line for line in ratio_lines(docs))


def test_stat_and_validation():
    s = stat([3.0, 1.0, 2.0], "s")
    assert (s["median"], s["min"], s["max"], s["n"], s["samples"]) == (2.0, 1.0, 3.0, 3, [3.0, 1.0, 2.0])
    with pytest.raises(BenchError, match="no samples"):
        stat([], "s")
    with pytest.raises(BenchError, match="missing field"):
        validate({"schema_version": 1})
    assert set(RUNTIMES) >= {"native", "onnx", "browser", "llamacpp", "transformersjs", "wllama"}


def test_prompts_and_settings_fit_the_context():
    ids = prompt_ids(512, 16, bos=1)
    assert len(ids) == 16 and ids[0] == 1 and ids == prompt_ids(512, 16, bos=1) and max(ids) < 512
    s = Settings(prompt_lengths=(16, 128, 512), decode_tokens=128).capped(256)
    assert s.prompt_lengths == (16, 128, 255) and s.decode_prompt + s.decode_tokens < 256


def test_gpt2_detokenize():
    assert gpt2_detokenize(["Hello", "Ġworld", "Ċ"]) == "Hello world\n"


def test_spm_detokenize():  # Llama-2 / TinyLlama / llama2.c GGUFs: '▁' spaces and <0xNN> byte pieces
    assert spm_detokenize(["▁Hello", "▁world", "<0x0A>", "<0xC3>", "<0xA9>", "!"]) == " Hello world\né!"


def test_user_errors_are_one_line(tmp_path, capsys, s260_bundle):
    assert webllama(["bench", str(tmp_path / "nope"), "--output", str(tmp_path / "x.json")]) != 0
    assert "no such file or folder" in capsys.readouterr().err
    assert webllama(["bench", str(s260_bundle), "--runtime", "onnx", "--device", "webgpu", "--output", str(tmp_path / "x.json")]) != 0
    assert "--device 'webgpu' with --runtime onnx" in capsys.readouterr().err


def test_llamacpp_absent_is_a_clear_skip(tmp_path, capsys, s260_bundle):
    pytest.importorskip("gguf")
    try:
        import llama_cpp  # noqa: F401

        pytest.skip("llama-cpp-python is installed here")
    except ImportError:
        pass
    assert webllama(["bench", str(s260_bundle), "--runtime", "llamacpp", "--output", str(tmp_path / "x.json")]) != 0
    assert "llama-cpp-python is not installed" in capsys.readouterr().err


@pytest.mark.browser
@pytest.mark.skipif(not Path(os.environ.get("WEBLLAMA_CHROMIUM", "/usr/bin/chromium")).exists(), reason="no Chromium")
def test_browser_result_has_cached_load_and_page_memory(s260_bundle, tmp_path):
    from webllama.evalsuite.bench.web_server import npm_ready

    if not npm_ready():
        pytest.skip("benchmarks/node_modules missing (npm ci --ignore-scripts in benchmarks/)")
    out = tmp_path / "s260-browser.json"
    assert (
        webllama(
            [
                "bench",
                str(s260_bundle),
                "--runtime",
                "browser",
                "--threads",
                "1",
                "--runs",
                "1",
                "--load-runs",
                "1",
                "--prompt-lengths",
                "16",
                "--decode-tokens",
                "4",
                "--quiet",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    doc = validate(json.loads(out.read_text()))
    assert doc["device"] == "wasm" and doc["metrics"]["load_cached_s"]["median"] > 0
    assert doc["runtime_info"]["execution_provider"] == "wasm" and doc["runtime_info"]["from_cache"] is True
    assert "page_memory" in doc["runtime_info"] and doc["metrics"]["peak_rss_bytes"] > 0
    assert doc["runtime_info"]["graph_file"] == "onnx/model_q4_wasm.onnx"  # int4 dequantized at load on WASM
    assert (
        webllama(
            [
                "bench",
                str(s260_bundle),
                "--runtime",
                "browser",
                "--threads",
                "1",
                "--runs",
                "1",
                "--load-runs",
                "1",
                "--prompt-lengths",
                "16",
                "--decode-tokens",
                "4",
                "--no-unpack-int4",
                "--quiet",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["runtime_info"]["graph_file"] == "onnx/model_q4.onnx"
