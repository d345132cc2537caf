"""The bad-input and attack catalogue of issue 13, for the CLI: every case is run through `webllama`'s
own entry point and must end with a non-zero exit code, exactly one `error:` line and no traceback on
stderr, and the file system unchanged outside the intended output (a before/after listing of the
parent folder, hidden entries included). Positive controls (what --force may replace) come last.

The cases run in-process (webllama.cli.main) because each subprocess would pay for importing torch and
lm-eval again; the signal cases (SIGTERM, SIGKILL) run as real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from webllama.cli import main as webllama_main

# ----------------------------------------------------------------------------------------- harness


def listing(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (hidden ones included): type, size, mtime, the target of a link."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            out[str(p.relative_to(folder))] = (
                kind,
                st.st_size if kind == "file" else 0,
                st.st_mtime_ns,
                os.readlink(p) if kind == "link" else None,
            )
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """webllama ARGV in this process -> (exit code, stderr). argparse errors exit through SystemExit."""
    capsys.readouterr()
    try:
        code = webllama_main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_line_failure(code: int, err: str, *words: str) -> str:
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


@dataclass(frozen=True)
class Case:
    id: str
    # (work folder, fixtures) -> (argv, folder whose listing must not change, cwd or None)
    setup: Callable[[Path, dict], tuple[list[str], Path, Path | None]]
    words: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, stories_dir, tiny_llama_dir, benchmarks_dir) -> dict:
    """One tiny bundle (stories260K, fused q4, not verified) and the broken sources, built once."""
    from webllama.converter import ConvertOptions, convert

    root = tmp_path_factory.mktemp("catalogue-inputs")
    bundle = root / "s260"
    convert(str(stories_dir), bundle, ConvertOptions(verify=False, progress=False))
    nan_hf = root / "nan-hf"
    shutil.copytree(tiny_llama_dir, nan_hf)
    _poison_safetensors(nan_hf / "model.safetensors", "model.layers.1.mlp.down_proj.weight", np.nan)
    inf_l2c = root / "inf-llama2c"
    inf_l2c.mkdir()
    shutil.copy(stories_dir / "tok512.bin", inf_l2c / "tok512.bin")
    raw = bytearray((stories_dir / "stories260K.bin").read_bytes())
    raw[28 + 4 * 1000 : 28 + 4 * 1001] = struct.pack("<f", np.inf)  # inside the token embedding
    (inf_l2c / "stories260K.bin").write_bytes(bytes(raw))
    bad_tok = root / "bad-tok"
    bad_tok.mkdir()
    shutil.copy(stories_dir / "stories260K.bin", bad_tok / "stories260K.bin")
    tok = bytearray((stories_dir / "tok512.bin").read_bytes())
    tok[4 + 8 : 4 + 8 + 1] = b"\xff"  # first byte of token 0's text: never valid UTF-8
    (bad_tok / "tok512.bin").write_bytes(bytes(tok))
    return {
        "bundle": bundle,
        "stories": stories_dir,
        "nan_hf": nan_hf,
        "inf_l2c": inf_l2c,
        "bad_tok": bad_tok,
        "hf": tiny_llama_dir,
        "data": str(benchmarks_dir),
    }


def _poison_safetensors(path: Path, name: str, value: float) -> None:
    """Write `value` into the first element of tensor `name` of a float32 safetensors file, in place."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert header[name]["dtype"] == "F32"
    start = 8 + n + header[name]["data_offsets"][0]
    raw[start : start + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))


def copy_bundle(inputs: dict, dest: Path) -> Path:
    shutil.copytree(inputs["bundle"], dest, symlinks=True)
    return dest


def edit_manifest(bundle: Path, edit: Callable[[dict], object]) -> None:
    """Change manifest.json in place (`edit` mutates the dict; what it returns is ignored)."""
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


# ----------------------------------------------------------------------------------------- cases


def _convert(src: str, out: Path, *extra: str) -> list[str]:
    return ["convert", src, str(out), "--no-verify", *extra]


def c_force_user_folder(w, i):
    (w / "mine").mkdir()
    (w / "mine" / "notes.txt").write_text("my own work")
    return _convert(str(i["stories"]), w / "mine", "--force"), w, None


def c_force_cwd_by_other_path(w, i):
    here = w / "here"
    here.mkdir()
    (here / "k.txt").write_text("keep")
    return _convert(str(i["stories"]), Path("../here"), "--force"), w, here


def c_force_parent_of_cwd(w, i):
    sub = w / "a" / "b"
    sub.mkdir(parents=True)
    copy_bundle(i, w / "a" / "bundle-inside")  # even a folder that holds a bundle is not a bundle
    return _convert(str(i["stories"]), w / "a", "--force"), w, sub


def c_force_file(w, i):
    (w / "afile").write_text("data")
    return _convert(str(i["stories"]), w / "afile", "--force"), w, None


def c_force_link(w, i):
    copy_bundle(i, w / "real")
    (w / "link").symlink_to(w / "real")
    return _convert(str(i["stories"]), w / "link", "--force"), w, None


def c_force_bundle_with_user_file(w, i):
    b = copy_bundle(i, w / "b")
    (b / "my-notes.txt").write_text("added by the user")
    return _convert(str(i["stories"]), b, "--force"), w, None


def c_exists_no_force(w, i):
    copy_bundle(i, w / "b")
    return _convert(str(i["stories"]), w / "b"), w, None


def c_nan_safetensors_streamed(w, i):
    return _convert(str(i["nan_hf"]), w / "out"), w, None


def c_nan_safetensors_torch(w, i):
    return ["convert", str(i["nan_hf"]), str(w / "out"), "--graph", "optimum", "--no-verify"], w, None


def c_inf_llama2c(w, i):
    return _convert(str(i["inf_l2c"]), w / "out"), w, None


def c_junk_gguf(w, i):
    (w / "junk.gguf").write_bytes(os.urandom(4096))
    return _convert(str(w / "junk.gguf"), w / "out"), w, None


def c_junk_gguf_magic(w, i):
    (w / "junk.gguf").write_bytes(b"GGUF" + os.urandom(4092))
    return _convert(str(w / "junk.gguf"), w / "out"), w, None


def c_tokenizer_invalid_utf8(w, i):
    return _convert(str(i["bad_tok"]), w / "out"), w, None


def c_unwritable_output(w, i):
    return _convert(str(i["stories"]), Path("/sys/webllama-catalogue-out")), w, None


def c_adapter_config_junk(w, i):
    (w / "adapter").mkdir()
    (w / "adapter" / "adapter_config.json").write_text("{not json")
    return _convert(str(i["hf"]), w / "out", "--adapter", str(w / "adapter")), w, None


def c_adapter_truncated(w, i):
    (w / "adapter").mkdir()
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "base_model_name_or_path": "x"}
    (w / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    (w / "adapter" / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 500) + b'{"a":')
    return _convert(str(i["hf"]), w / "out", "--adapter", str(w / "adapter")), w, None


def c_context_length_zero(w, i):
    return _convert(str(i["hf"]), w / "out", "--context-length", "0"), w, None


def c_verify_manifest_not_object(w, i):
    b = copy_bundle(i, w / "b")
    (b / "manifest.json").write_text("[1, 2]")
    return ["verify", str(b)], w, None


def c_verify_manifest_no_files(w, i):
    b = copy_bundle(i, w / "b")
    edit_manifest(b, lambda m: m.pop("files"))
    return ["verify", str(b)], w, None


def c_verify_manifest_dotdot(w, i):
    b = copy_bundle(i, w / "b")
    (w / "outside.txt").write_text("not part of the bundle")
    sha = hashlib.sha256(b"not part of the bundle").hexdigest()
    edit_manifest(b, lambda m: m["files"].append({"path": "../outside.txt", "size": 22, "sha256": sha}))
    return ["verify", str(b)], w, None


def c_verify_manifest_absolute(w, i):
    b = copy_bundle(i, w / "b")
    edit_manifest(b, lambda m: m["files"].append({"path": "/etc/passwd", "size": 1, "sha256": "0"}))
    return ["verify", str(b)], w, None


def c_eval_onnx_corrupt_weights(w, i):
    b = copy_bundle(i, w / "b")
    data = next((b / "onnx").glob("model_q4.onnx_data*"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF  # same size, other bytes: only the sha256 can tell
    data.write_bytes(bytes(raw))
    return (
        [
            "eval",
            str(b),
            "--backend",
            "onnx",
            "--tasks",
            "arc_easy",
            "--limit",
            "2",
            "--data-dir",
            i["data"],
            "--output",
            str(w / "run"),
        ],
        w,
        None,
    )


def c_eval_unknown_task(w, i):
    return (
        [
            "eval",
            str(i["bundle"]),
            "--backend",
            "onnx",
            "--tasks",
            "no_such_task",
            "--limit",
            "2",
            "--data-dir",
            i["data"],
            "--output",
            str(w / "run"),
        ],
        w,
        None,
    )


def c_eval_output_user_folder(w, i):
    (w / "mine").mkdir()
    (w / "mine" / "results.json").write_text('{"mine": true}')
    return (
        ["eval", str(i["bundle"]), "--backend", "onnx", "--tasks", "arc_easy", "--data-dir", i["data"], "--output", str(w / "mine")],
        w,
        None,
    )


def _run_folder(w: Path, body: str) -> Path:
    (w / "run").mkdir()
    (w / "run" / "results.json").write_text(body)
    return w / "run"


def c_compare_corrupt_results(w, i):
    return ["compare", str(_run_folder(w, '{"results": {"arc')), str(_run_folder_b(w))], w, None


def c_compare_empty_results(w, i):
    return ["compare", str(_run_folder(w, "")), str(_run_folder_b(w))], w, None


def c_leaderboard_empty_results(w, i):
    return ["leaderboard", str(_run_folder(w, "{}")), "--out", str(w / "board")], w, None


def c_leaderboard_out_user_folder(w, i):
    (w / "board").mkdir()
    (w / "board" / "index.html").write_text("my own page")
    return ["leaderboard", str(_run_folder_b(w)), "--out", str(w / "board")], w, None


def _run_folder_b(w: Path) -> Path:
    (w / "run-b").mkdir()
    (w / "run-b" / "results.json").write_text(json.dumps({"results": {"arc_easy": {"acc,none": 0.5}}}))
    return w / "run-b"


def c_serve_port_negative(w, i):
    return ["serve", str(i["bundle"]), "--host", "256.0.0.1", "--port", "-1"], w, None  # never binds, never hangs


def c_serve_port_too_big(w, i):
    return ["serve", str(i["bundle"]), "--host", "256.0.0.1", "--port", "99999"], w, None  # never binds, never hangs


def c_serve_manifest_dotdot(w, i):
    b = copy_bundle(i, w / "b")
    edit_manifest(b, lambda m: m["files"].append({"path": "../../etc/passwd", "size": 1, "sha256": "0"}))
    return ["serve", str(b), "--host", "256.0.0.1", "--port", "8"], w, None  # an address that cannot bind: never hangs


def c_site_manifest_dotdot(w, i):
    b = copy_bundle(i, w / "b")
    (w / "x").write_text("outside-secret\n")
    sha = hashlib.sha256(b"outside-secret\n").hexdigest()
    edit_manifest(
        b,
        lambda m: m["files"].extend([{"path": "../x", "size": 15, "sha256": sha}, {"path": "../../pwned", "size": 15, "sha256": sha}]),
    )
    return ["site", str(b), "--out", str(w / "pub")], w, None


def c_site_link_out_of_bundle(w, i):
    b = copy_bundle(i, w / "b")
    (w / "secret.txt").write_text("x" * 40)
    tok = b / "tokenizer_config.json"
    size = tok.stat().st_size
    tok.unlink()
    (w / "secret.txt").write_text("s" * size)  # same size as the listed file: only the link check can tell
    tok.symlink_to(w / "secret.txt")
    return ["site", str(b), "--out", str(w / "pub")], w, None


def c_site_force_user_folder(w, i):
    (w / "pub").mkdir()
    (w / "pub" / "index.html").write_text("my page")
    return ["site", str(i["bundle"]), "--out", str(w / "pub"), "--force"], w, None


def c_site_force_cwd(w, i):
    here = w / "pub"
    here.mkdir()
    (here / "site.json").write_text('{"format": "webllama-site"}')  # even a site, when it is the cwd
    return ["site", str(i["bundle"]), "--out", ".", "--force"], w, here


CASES = [
    Case("convert --force onto a folder of the user's files", c_force_user_folder, ("not a webllama bundle",)),
    Case("convert --force onto the cwd given as ../here", c_force_cwd_by_other_path, ("current directory",)),
    Case("convert --force onto a parent of the cwd", c_force_parent_of_cwd, ("current directory",)),
    Case("convert --force onto a file", c_force_file, ("not a bundle",)),
    Case("convert --force onto a link to a bundle", c_force_link, ("link",)),
    Case("convert --force onto a bundle holding a user's file", c_force_bundle_with_user_file, ("not a webllama bundle",)),
    Case("convert onto an existing output without --force", c_exists_no_force, ("--force",)),
    Case("NaN in safetensors (streamed, fused)", c_nan_safetensors_streamed, ("model.layers.1.mlp.down_proj.weight", "NaN")),
    Case("NaN in safetensors (torch load, optimum)", c_nan_safetensors_torch, ("model.layers.1.mlp.down_proj.weight", "NaN")),
    Case("Inf in a llama2.c checkpoint", c_inf_llama2c, ("embed", "Inf")),
    Case("junk .gguf", c_junk_gguf, ("GGUF",)),
    Case("junk .gguf with the GGUF magic", c_junk_gguf_magic, ("GGUF",)),
    Case("tokenizer.bin with invalid UTF-8", c_tokenizer_invalid_utf8, ("UTF-8",)),
    Case("output on a file system that refuses writes", c_unwritable_output, ("cannot write",)),
    Case("adapter_config.json not JSON", c_adapter_config_junk, ("adapter_config.json",)),
    Case("truncated adapter safetensors", c_adapter_truncated, ("adapter_model.safetensors",)),
    Case("--context-length 0", c_context_length_zero, ("--context-length",)),
    Case("verify: manifest.json not an object", c_verify_manifest_not_object, ("manifest",)),
    Case("verify: manifest.json without files", c_verify_manifest_no_files, ("files",)),
    Case("verify: manifest path with ../", c_verify_manifest_dotdot, ("../outside.txt",)),
    Case("verify: absolute manifest path", c_verify_manifest_absolute, ("absolute",)),
    Case("eval --backend onnx on a weight file failing its sha256", c_eval_onnx_corrupt_weights, ("sha256",)),
    Case("eval with an unknown task", c_eval_unknown_task, ("no_such_task",)),
    Case("eval --output a folder of the user's files", c_eval_output_user_folder, ("not a `webllama eval` run folder",)),
    Case("compare: corrupt results.json", c_compare_corrupt_results, ("results.json",)),
    Case("compare: empty results.json", c_compare_empty_results, ("results.json",)),
    Case("leaderboard: results.json holding {}", c_leaderboard_empty_results, ("no scores",)),
    Case("leaderboard --out a folder of the user's files", c_leaderboard_out_user_folder, ("leaderboard.json",)),
    Case("serve --port -1", c_serve_port_negative, ("65535",)),
    Case("serve --port 99999", c_serve_port_too_big, ("65535",)),
    Case("serve: manifest path with ../", c_serve_manifest_dotdot, ("../../etc/passwd",)),
    Case("site: manifest paths with ../ (copy in, write beside --out)", c_site_manifest_dotdot, ("../x",)),
    Case("site: a listed file that is a link out of the bundle", c_site_link_out_of_bundle, ("link",)),
    Case("site --force onto a folder of the user's files", c_site_force_user_folder, ("not a site",)),
    Case("site --force onto the cwd", c_site_force_cwd, ("current folder",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: Case, inputs, tmp_path, capsys, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    argv, watched, cwd = case.setup(work, inputs)
    if cwd is not None:
        monkeypatch.chdir(cwd)
    for offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # a case that gets past its check fails fast, not on a timeout
        monkeypatch.setenv(offline, "1")
    before = listing(watched)
    code, err = run_cli(argv, capsys)
    assert_one_line_failure(code, err, *case.words)
    assert listing(watched) == before


# ----------------------------------------------------------------------------------------- what --force may do


def test_force_replaces_a_bundle_and_an_empty_folder_and_nothing_else_changes(inputs, tmp_path, capsys):
    for name, make in (("bundle", lambda p: copy_bundle(inputs, p)), ("empty", lambda p: p.mkdir())):
        out = tmp_path / name
        make(out)
        (tmp_path / "beside.txt").write_text("untouched")
        before = {k: v for k, v in listing(tmp_path).items() if not k.startswith(name)}
        code, err = run_cli(_convert(str(inputs["stories"]), out, "--force"), capsys)
        assert code == 0, err
        assert json.loads((out / "manifest.json").read_text())["format"] == "webllama-bundle"
        assert {k: v for k, v in listing(tmp_path).items() if not k.startswith(name)} == before


def test_failed_verification_is_kept_aside_never_installed(tmp_path):
    from webllama.converter.bundle import staging_dir
    from webllama.converter.errors import VerifyFailed

    out = tmp_path / "b"
    with pytest.raises(VerifyFailed) as e, staging_dir(out, force=False) as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"format": "webllama-bundle", "files": [{"path": "verify.json"}]}))
        (tmp / "verify.json").write_text("{}")
        raise VerifyFailed(f"{out}: fp32 is not token-exact")
    assert not out.exists()
    assert (tmp_path / "b.unverified" / "verify.json").is_file()
    assert "b.unverified" in str(e.value) and "nothing was written" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.unverified"]


def test_manifest_and_verify_json_are_strict_json(tmp_path):
    from webllama.converter.manifest import write_json_atomic

    write_json_atomic(tmp_path / "verify.json", {"mean_kl": float("nan"), "rows": [float("inf"), 1.5]})
    doc = json.loads((tmp_path / "verify.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert doc == {"mean_kl": None, "rows": [None, 1.5]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verify.json"]


# ----------------------------------------------------------------------------------------- signals


def _convert_process(src: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "webllama.cli", *_convert(str(src), out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _wait_for_partial(parent: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        found = [p for p in parent.iterdir() if ".partial-" in p.name]
        if found:
            return found[0]
        time.sleep(0.05)
    pytest.fail("the conversion never created its partial folder")


def test_sigterm_cleans_up_and_sigkill_leftovers_go_with_the_next_run(inputs, tmp_path):
    out = tmp_path / "b"
    proc = _convert_process(inputs["hf"], out)
    _wait_for_partial(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == [], "SIGTERM left files behind"

    proc = _convert_process(inputs["hf"], out)
    leftover = _wait_for_partial(tmp_path, proc)
    proc.kill()
    proc.wait(timeout=30)
    assert leftover.exists()  # SIGKILL cannot be caught: the next run cleans up
    proc = _convert_process(inputs["stories"], out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


# ----------------------------------------------------------------------------------------- what a bundle publishes


def test_published_bundle_names_its_source_without_local_paths(stories_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WEBLLAMA_CACHE_DIR", str(tmp_path / "this-machine"))
    out = tmp_path / "b"
    code, err = run_cli(["convert", str(stories_dir), str(out), "--variant", "fp32"], capsys)
    assert code == 0, err
    for name in ("manifest.json", "verify.json"):
        text = (out / name).read_text()
        assert str(stories_dir) not in text and str(tmp_path) not in text, name
    assert json.loads((out / "manifest.json").read_text())["source"]["path"] == stories_dir.name
    code, err = run_cli(["verify", str(out)], capsys)  # this machine remembers where the source is
    assert code == 0, err
    monkeypatch.setenv("WEBLLAMA_CACHE_DIR", str(tmp_path / "another-machine"))
    code, err = run_cli(["verify", str(out)], capsys)
    assert_one_line_failure(code, err, "--source")
    code, err = run_cli(["verify", str(out), "--source", str(stories_dir)], capsys)
    assert code == 0, err


def test_site_is_readable_by_a_server_running_as_another_user(inputs, tmp_path, capsys):
    (tmp_path / f".pub.partial-{2**22 + 7}").mkdir()  # a killed run's leftover (no such PID): removed
    code, err = run_cli(["site", str(inputs["bundle"]), "--out", str(tmp_path / "pub")], capsys)
    assert code == 0, err
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "pub").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pub"]


def test_no_git_noise_outside_a_checkout(tmp_path, monkeypatch, capfd):
    """lm-eval records the current folder's git commit; outside a checkout git printed `fatal: ...`."""
    from webllama.evalsuite.run import _git_describe

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert _git_describe() is None
    assert capfd.readouterr().err == ""


def test_nan_scale_in_gguf_q4_0_blocks_names_the_tensor(tmp_path):
    """Q4_0 is transcoded block for block (never dequantized): the check reads its fp16 scales."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from webllama.converter.errors import NonFiniteWeights
    from webllama.converter.graph.readers import GGUFTensorReader

    from tests.converter.test_fused import write_q4_0_gguf

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2
    )
    path = tmp_path / "tiny.gguf"
    write_q4_0_gguf(path, LlamaForCausalLM(cfg).eval())
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.ffn_down.weight")
    raw = bytearray(path.read_bytes())
    raw[t.data_offset + 18 * 3 : t.data_offset + 18 * 3 + 2] = np.array([np.nan], np.float16).tobytes()  # block 3's scale
    path.write_bytes(bytes(raw))
    reader = GGUFTensorReader(path)
    assert reader.raw("model.layers.0.self_attn.q_proj.weight") is not None  # the other tensors still read
    with pytest.raises(NonFiniteWeights, match="blk.0.ffn_down.weight"):
        reader.raw("model.layers.0.mlp.down_proj.weight")
