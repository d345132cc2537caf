"""Opening a model for the fused builder without loading its weights into torch.

`open_reader` picks the streaming view (a TensorSource) of a path or hub id; `light_source` builds the
LoadedSource the bundle writer needs (config, generation config, tokenizer, parameter count) around
a weightless meta-device model, so a conversion without verification never holds the model in memory.
The validation at the edge is the source readers' own (converter/sources/*).
"""

from __future__ import annotations

from pathlib import Path

from webllama.converter.archs import for_hf
from webllama.converter.errors import UnsupportedSource
from webllama.converter.sources import detect_kind, gguf, hf, llama2c
from webllama.converter.sources.base import LoadedSource, sha256_file, sha256_files
from webllama.converter.sources.tensors import TensorSource


def resolve(spec: str, revision: str | None) -> tuple[str, Path, str | None]:
    """(kind, local path, hub id or None)."""
    kind = detect_kind(spec)
    if kind == "hub":
        return "hf", hf.download(spec, revision), spec
    return kind, Path(spec), None


def open_reader(spec: str, revision: str | None = None) -> TensorSource:
    kind, path, _ = resolve(spec, revision)
    if kind == "hf":
        files = hf.validate_dir(path)
        if not any(f.suffix == ".safetensors" for f in files):
            raise UnsupportedSource(
                f"{path}: --graph fused streams safetensors only; this model has pytorch_model*.bin "
                "(use --graph optimum, or re-save it with safe_serialization=True)"
            )
        reader: TensorSource = hf.SafetensorsTensors(path)
    elif kind == "gguf":
        file = gguf.find_gguf(path)
        reader = gguf.GGUFTensors(file, gguf.read_metadata(file))  # magic, header, truncation: one line each
    else:
        reader = llama2c.Llama2cTensors(llama2c._find_files(path)[0])
    return reader


def _meta_model(config):
    import torch

    with torch.device("meta"):
        return for_hf(config, "the source config").transformers_class()(config).eval()


def light_source(spec: str, reader: TensorSource, revision: str | None = None) -> LoadedSource:
    """The source's tokenizer and config with a weightless model (what bundle.py reads of it)."""
    from transformers import AutoTokenizer

    kind, path, hub_id = resolve(spec, revision)
    config = reader.hf_config
    if kind == "hf":
        files = hf.validate_dir(path)
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        tok_files = [path / t for t in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json") if (path / t).exists()]
        return LoadedSource(
            kind="hf",
            path=hub_id or str(path),
            name=(hub_id or path.name).split("/")[-1],
            sha256=sha256_files(files + [path / "config.json"] + tok_files),
            model=_meta_model(config),
            tokenizer=tokenizer,
            revision=revision,
            files=[str(f) for f in files],
        )
    if kind == "gguf":
        file = gguf.find_gguf(path)
        tokenizer = gguf.fix_tokenizer(AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name), gguf.read_metadata(file))
        model = _meta_model(config)
        gguf.set_special_ids(model, tokenizer)
        return LoadedSource(
            kind="gguf", path=str(path), name=file.stem, sha256=sha256_file(file), model=model, tokenizer=tokenizer, files=[str(file)]
        )
    ckpt, tok_path = llama2c._find_files(path)
    tokenizer = llama2c.build_tokenizer(*llama2c.read_tokenizer_bin(tok_path, config.vocab_size))
    return LoadedSource(
        kind="llama2c",
        path=str(path),
        name=ckpt.stem,
        sha256=sha256_files([ckpt, tok_path]),
        model=_meta_model(config),
        tokenizer=tokenizer,
        files=[str(ckpt), str(tok_path)],
    )
