"""GGUF files (llama.cpp): the streaming view (`GGUFTensors`, memory-mapped, dequantized per tensor) and
the torch model built from it; the architecture comes from `general.architecture` (converter/archs).

transformers 4.57's GGUF tokenizer conversion has known defects for gpt2-style vocabularies
(SmolLM2): EOS comes out as the wrong token and a BOS is added although the file says not to.
`fix_tokenizer` restores both from the GGUF metadata, and the chat template is carried over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from webllama.converter.archs import for_gguf
from webllama.converter.archs.gguf_keys import llama3_scaling
from webllama.converter.errors import BadFormat, MissingFile
from webllama.converter.sources.base import SOURCES, LoadedSource, SourceReader, check_model_finite, sha256_file
from webllama.converter.sources.tensors import TensorSource

GGUF_MAGIC = b"GGUF"


def find_gguf(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob("*.gguf"))
    if len(files) != 1:
        raise MissingFile(f"{path}: expected exactly one .gguf file, found {len(files)}; pass the file itself")
    return files[0]


def read_metadata(path: Path) -> dict:
    """The scalar and string metadata of a GGUF file (arrays of tokens/merges are skipped)."""
    from gguf import GGUFReader

    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise BadFormat(f"{path}: not a GGUF file (bad magic); pass a .gguf model file")
    try:
        reader = GGUFReader(path)
    except Exception as e:
        raise BadFormat(f"{path}: cannot read the GGUF file ({type(e).__name__}: {e}); it is truncated or corrupt") from None
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.split(".")[-1] in ("tokens", "merges", "token_type", "scores"):
            continue
        try:
            meta[key] = field.contents()
        except Exception:  # exotic field types we do not need
            continue
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > path.stat().st_size:
        raise BadFormat(f"{path}: truncated: tensors end at byte {end}, file has {path.stat().st_size}")
    return meta


def fix_tokenizer(tokenizer, meta: dict):
    """Restore EOS/BOS behaviour and the chat template from the GGUF metadata."""
    from tokenizers import processors

    eos_id = meta.get("tokenizer.ggml.eos_token_id")
    if eos_id is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos_id))
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if bos_id is not None:
        tokenizer.bos_token = tokenizer.convert_ids_to_tokens(int(bos_id))
    pad_id = meta.get("tokenizer.ggml.padding_token_id")
    if pad_id is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad_id))
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True))
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = add_bos
    if not add_bos:
        # The converted post-processor prepends BOS unconditionally; llama.cpp would not: drop it.
        tokenizer.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    template = meta.get("tokenizer.chat_template")
    if template:
        tokenizer.chat_template = template
    return tokenizer


def detect(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.gguf"))
    if path.suffix == ".gguf":
        return True
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


class GGUFTensors(TensorSource):
    """A GGUF file through gguf.GGUFReader (memory-mapped): tensors dequantized one at a time;
    `read_raw` hands out quantized blocks so Q4_0 can be transcoded without requantizing."""

    kind = "gguf"

    def __init__(self, file: Path, meta: dict | None = None) -> None:
        from gguf import GGUFReader

        meta = read_metadata(file) if meta is None else meta
        self.file, self.where = file, str(file)
        self._tensors = {t.name: t for t in GGUFReader(file).tensors}
        self.arch = for_gguf(meta.get("general.architecture"), str(file))
        self.hf_config = self.arch.hf_config(**self._config_kwargs(meta))
        self._open()

    def _config_kwargs(self, meta: dict) -> dict:
        names = set(self._tensors)
        kw = self.arch.gguf_config(meta, names, str(self.file))
        if "rope_freqs.weight" in names:  # Llama 3.1/3.2: the scaled frequencies as a tensor
            dim = kw.get("head_dim") or kw["hidden_size"] // kw["num_attention_heads"]
            kw["rope_scaling"] = llama3_scaling(self.read("rope_freqs.weight"), kw.get("rope_theta", 10000.0), dim, str(self.file))
        if "vocab_size" not in kw and "token_embd.weight" in self._tensors:
            kw["vocab_size"] = int(self._tensors["token_embd.weight"].shape[1])
        return kw

    def names(self) -> list[str]:
        return list(self._tensors)

    def read(self, name: str) -> np.ndarray:
        from gguf import dequantize

        t = self._tensors[name]
        return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)

    def read_raw(self, name: str) -> tuple[str, np.ndarray]:
        t = self._tensors[name]
        return t.tensor_type.name, np.asarray(t.data)


def load(path: Path, revision: str | None = None) -> LoadedSource:
    from transformers import AutoTokenizer

    file = find_gguf(path)
    meta = read_metadata(file)
    tensors = GGUFTensors(file, meta)
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    except Exception as e:
        raise BadFormat(f"{file}: transformers cannot read this GGUF's tokenizer ({type(e).__name__}: {e})") from None
    tokenizer = fix_tokenizer(tokenizer, meta)
    model = tensors.torch_model()
    check_model_finite(model, str(file))
    set_special_ids(model, tokenizer)
    return LoadedSource(
        kind="gguf",
        path=str(path),
        name=file.stem,
        sha256=sha256_file(file),
        model=model,
        tokenizer=tokenizer,
        revision=None,
        files=[str(file)],
    )


def set_special_ids(model, tokenizer) -> None:
    """GGUF's tokenizer metadata, not the config defaults, says which tokens are BOS/EOS."""
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.bos_token_id = tokenizer.bos_token_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id


SOURCES.add("gguf", SourceReader("gguf", detect, load))
