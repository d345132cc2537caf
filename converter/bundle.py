"""Writing a bundle: every file goes to a hidden temporary directory beside the output, which is
renamed into place only when the graph, weights, tokenizer, verification and manifest are complete.
An interrupted (Ctrl-C, SIGTERM) or failed run removes its temporary directory and leaves nothing
behind; a run killed outright (SIGKILL) leaves one, which the next run for that output removes.

`--force` replaces only what `webllama convert` writes: a bundle (a manifest and exactly the files it
lists) or an empty folder. Anything else, a file, a link, the current folder or one of its parents, is
refused with one line: the command never destroys what it did not create.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import onnx
from webllama.converter.archs import for_hf
from webllama.converter.customize import Customization
from webllama.converter.errors import DiskFull, OutputExists, OutputNotWritable, VerifyFailed
from webllama.converter.genai_config import write_genai_config
from webllama.converter.manifest import (
    FORMAT,
    MANIFEST,
    SCHEMA_VERSION,
    list_files,
    published_customization,
    published_path,
    remember_source,
    write_json_atomic,
)
from webllama.converter.onnx_io import graph_io, save_sharded
from webllama.converter.quant.policy import QuantSpec
from webllama.converter.sources.base import LoadedSource
from webllama.converter.variants import Variant

VERSION = "0.1.0"
UNVERIFIED_SUFFIX = ".unverified"  # where a bundle that failed verification is kept, beside the output
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT}


def _scratch_name(out: Path, kind: str, pid: int) -> Path:
    return out.parent / f".{out.name}.{kind}-{pid}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_scratch(out: Path) -> None:
    """Remove `.NAME.partial-PID` / `.NAME.old-PID` left by a run that was killed (its PID is gone)."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(partial|old)-(\d+)$")
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))):
            _remove(p)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def is_bundle_dir(path: Path) -> bool:
    """A folder holding a webllama manifest and nothing but the files it lists (what convert writes)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        listed = {f["path"] for f in manifest["files"]} | {MANIFEST}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return False
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir() or p.is_symlink()}
    return present <= listed


def check_replaceable(out: Path, force: bool) -> None:
    """Raise OutputExists unless `out` is absent, or `force` is given and `out` is ours to replace."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise OutputExists(f"{out} already exists; choose another output directory or pass --force to replace it")
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise OutputExists(f"{out} is the current directory or one of its parents; refusing to replace it: choose another output")
    if out.is_symlink() or not out.is_dir():
        raise OutputExists(
            f"{out} is a file or a link, not a bundle; --force replaces only a bundle written by `webllama convert` "
            "or an empty folder: move it away or choose another output"
        )
    if any(out.iterdir()) and not is_bundle_dir(out):
        raise OutputExists(
            f"{out} is not a webllama bundle (no manifest.json listing exactly its files); --force replaces only a "
            "bundle or an empty folder: move your files away or choose another output"
        )


def _raise_terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up exactly as Ctrl-C does


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _not_writable(out: Path, e: OSError) -> OutputNotWritable:
    return OutputNotWritable(f"cannot write {out} ({e.strerror}); choose an output folder you can write to")


def _make_scratch(out: Path) -> Path:
    tmp = _scratch_name(out, "partial", os.getpid())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_scratch(out)
        _remove(tmp)
        tmp.mkdir()
    except OSError as e:
        if e.errno in _NOT_WRITABLE:
            raise _not_writable(out, e) from None
        raise
    return tmp


def _install(tmp: Path, out: Path, force: bool) -> None:
    """Rename `tmp` to `out`; an existing `out`, checked again now, is moved aside and then removed."""
    check_replaceable(out, force)
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _scratch_name(out, "old", os.getpid())
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    _remove(old)


def _keep_unverified(tmp: Path, out: Path, e: VerifyFailed) -> VerifyFailed:
    """A bundle that failed verification is never installed at `out`; it is kept beside it for inspection."""
    kept = out.with_name(out.name + UNVERIFIED_SUFFIX)
    if kept.exists() and not (kept.is_dir() and not kept.is_symlink() and is_bundle_dir(kept)):
        _remove(tmp)
        return VerifyFailed(f"{e}; the bundle was discarded ({kept} is in the way), nothing was written to {out}")
    _remove(kept)
    os.replace(tmp, kept)
    return VerifyFailed(f"{e}; nothing was written to {out}: the failed bundle is kept in {kept} (delete it when done)")


@contextlib.contextmanager
def staging_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory that becomes `out` on success and disappears on any failure
    (a VerifyFailed raised inside moves it to OUT.unverified instead)."""
    out = Path(os.path.abspath(out))
    check_replaceable(out, force)
    with _sigterm_as_interrupt():
        tmp = _make_scratch(out)
        try:
            yield tmp
            _install(tmp, out, force)
        except VerifyFailed as e:
            raise _keep_unverified(tmp, out, e) from None
        except OSError as e:
            _remove(tmp)
            if e.errno == errno.ENOSPC:
                raise DiskFull(f"no space left on the device while writing {out}; free some space or choose another output") from None
            if e.errno in _NOT_WRITABLE:
                raise _not_writable(out, e) from None
            raise
        except BaseException:  # KeyboardInterrupt and SIGTERM included: never leave a half-written bundle
            _remove(tmp)
            raise


def variant_entry(variant: Variant, shards: list[Path], model: onnx.ModelProto, graph: str) -> dict:
    """The manifest's entry for one written variant (sizes and verification are added later)."""
    inputs, outputs = graph_io(model)
    return {
        "model": f"onnx/{variant.onnx_name}",
        "external_data": [f"onnx/{s.name}" for s in shards],
        "activation_dtype": variant.activation_dtype,
        "kv_dtype": variant.activation_dtype,
        "requires_webgpu_features": list(variant.webgpu_features),
        "inputs": inputs,
        "outputs": outputs,
        "graph": graph,
        # GroupQueryAttention takes a past of any capacity >= the real length (read from attention_mask) and,
        # when one buffer is bound as both past_key_values.* and present.*, writes only the new positions in
        # it (onnxruntime's past_present_share_buffer): the engine's fixed KV cache on WebGPU relies on it.
        "past_present_share_buffer": any(n.op_type == "GroupQueryAttention" for n in model.graph.node),
    }


def write_variant(model: onnx.ModelProto, root: Path, variant: Variant) -> dict:
    onnx_dir = root / "onnx"
    onnx_dir.mkdir(exist_ok=True)
    shards = save_sharded(model, onnx_dir / variant.onnx_name)
    return variant_entry(variant, shards, model, "optimum")


def add_wasm_graphs(root: Path, variants: dict[str, dict], weights: str = "auto", tied: bool = False) -> None:
    """Give each float32 quantized variant its WASM graph (converter/quant/unpack.py), because onnxruntime's WASM
    build has no int4 kernel: float32 weights folded at load from the int4 file when they fit, else int8 weights in
    their own shards (`weights` "auto" | "float32" | "int8"); `tied`: the model's embedding is its output projection
    (the int8 graph then holds that matrix once)."""
    from webllama.converter.quant.unpack import write_wasm_graph

    for v in variants.values():
        fields = write_wasm_graph(root, v, weights, tied)
        if fields:
            v.update(fields)


def write_model_files(source: LoadedSource, root: Path, variants: dict[str, dict]) -> None:
    """config.json, generation_config.json and the tokenizer files, in the transformers.js layout."""
    cfg = source.model.config.to_dict()
    cfg["transformers.js_config"] = {
        # transformers.js reads external weights only when told how many shards each graph has.
        "use_external_data_format": {Path(v["model"]).name: len(v["external_data"]) for v in variants.values()},
        "kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"},
    }
    (root / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if source.model.generation_config is not None:
        source.model.generation_config.save_pretrained(root)
    source.tokenizer.save_pretrained(root)
    tc_path = root / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    if source.chat_template and "chat_template" not in tc:
        tc["chat_template"] = source.chat_template  # transformers.js reads it from here
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n")
    # One source of truth for the browser and for transformers: tokenizer_config.json. (transformers 4.57
    # also writes chat_template.jinja, which would win over it when loading in Python.)
    for stray in ("tokenizer.model", "chat_template.jinja"):
        (root / stray).unlink(missing_ok=True)
    write_genai_config(root, source.model.config, variants, source.tokenizer, eos_ids(source))  # onnxruntime-genai layout


def eos_ids(source: LoadedSource) -> list[int]:
    eos = source.model.generation_config.eos_token_id if source.model.generation_config else None
    eos = eos if eos is not None else source.tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return sorted({int(i) for i in ids if i is not None})


def build_manifest(
    source: LoadedSource,
    root: Path,
    variants: dict[str, dict],
    quant: QuantSpec,
    verify: dict | None,
    customization: Customization | None = None,
    calibration: dict | None = None,
) -> dict:
    c = source.model.config
    arch = for_hf(c, f"{source.name} config")  # the family, and the context it is exact for (archs/*)
    mc = arch.model_config(c)
    n_params = sum(p.numel() for p in source.model.parameters())
    files = list_files(root)
    sizes = {f["path"]: f["size"] for f in files}
    for name, v in variants.items():
        v["bytes"] = sum(sizes[p] for p in [v["model"], *v["external_data"]])  # the wasm_model graph file is extra
        v["bytes_per_parameter"] = round(v["bytes"] / n_params, 4)
        # The recipe (every per-tensor choice) and the calibration text's identity: enough to reproduce the bytes.
        v["quantization"] = {**quant.to_json(), "calibration": calibration} if name in ("q4", "q4f16") else None
        v["verify"] = verify["variants"][name] if verify and name in verify["variants"] else None
        if v["verify"]:
            v["verify"] = {
                k: v["verify"][k]
                for k in ("max_abs_logit_diff", "mean_kl", "top1_agreement", "greedy_match", "first_divergence", "passed")
            }
    tok = source.tokenizer
    custom = customization.to_json() if customization and not customization.empty else None
    remember_source(source.sha256, source.path, custom)  # for `webllama verify BUNDLE` on this machine
    return {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "created_by": f"webllama {VERSION}",
        "name": source.name,
        "source": {
            "kind": source.kind,
            "path": published_path(source.path),  # a name: the converting machine's paths stay on it
            "sha256": source.sha256,
            "revision": source.revision,
            "customization": published_customization(custom),
        },
        "architecture": arch.name,
        "config": {
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            "rope_theta": c.rope_theta,
            "rope_scaling": getattr(c, "rope_scaling", None),  # Mistral configs have none
            "tie_word_embeddings": c.tie_word_embeddings,
            "rms_norm_eps": c.rms_norm_eps,
            "sliding_window": mc.sliding_window,  # keys each query sees (itself included), or null
        },
        "context_length": mc.max_seq_len,
        "num_parameters": n_params,
        "tokenizer": {
            "file": "tokenizer.json",
            "config_file": "tokenizer_config.json",
            "bos_token_id": tok.bos_token_id,
            "eos_token_ids": eos_ids(source),
            "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
            "has_chat_template": bool(source.chat_template),
        },
        "variants": variants,
        "verification": {"passed": verify["passed"]} if verify else None,
        "files": files,
    }


def write_manifest(root: Path, manifest: dict) -> None:
    write_json_atomic(root / MANIFEST, manifest)
