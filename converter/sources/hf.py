"""Hugging Face checkpoints: a local directory (safetensors or .bin) or a hub id (downloaded once).

Checks at the edge, before torch touches anything: the architecture is registered (converter/archs),
its config is one webllama implements, every tensor is mapped (completeness both ways), a tokenizer exists,
and every safetensors file is as long as its own header says (a truncated download otherwise
fails deep inside torch with an unreadable message).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from webllama.converter.archs import Architecture, for_hf
from webllama.converter.errors import BadFormat, MissingFile, UnsupportedSource
from webllama.converter.sources.base import (
    SOURCES,
    LoadedSource,
    SourceReader,
    check_model_finite,
    sha256_files,
)
from webllama.converter.sources.tensors import TensorSource

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
HUB_ALLOW = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "pytorch_model*.bin", "*.txt"]


def check_architecture(config: dict, where: str) -> Architecture:
    """The registered family of a config.json (UnsupportedArchitecture naming it and the supported ones)."""
    return for_hf(config, where)


def check_safetensors(path: Path) -> None:
    """A safetensors file is 8 bytes of header length, a JSON header, then the data it describes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadFormat(f"{path}: {size} bytes is not a safetensors file (truncated); download it again")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise BadFormat(f"{path}: header length {n} exceeds the file ({size} bytes); the file is truncated or corrupt")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadFormat(f"{path}: safetensors header is not valid JSON ({e}); the file is corrupt") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise BadFormat(f"{path}: truncated: header describes {8 + n + end} bytes but the file has {size}; download it again")


def _weight_files(path: Path) -> list[Path]:
    files = [p for pattern in WEIGHT_PATTERNS for p in sorted(path.glob(pattern))]
    if not files:
        raise MissingFile(f"{path}: no weights (*.safetensors or pytorch_model*.bin) in the model directory")
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        missing = sorted(s for s in shards if not (path / s).exists())
        if missing:
            raise MissingFile(f"{path}: shard(s) {', '.join(missing)} named in model.safetensors.index.json are missing")
    return files


def validate_dir(path: Path) -> list[Path]:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise MissingFile(f"{path}: no config.json; a Hugging Face model directory needs one")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise BadFormat(f"{cfg_path}: not valid JSON ({e})") from None
    check_architecture(config, str(cfg_path))
    if not any((path / t).exists() for t in TOKENIZER_FILES):
        raise MissingFile(
            f"{path}: no tokenizer (tokenizer.json or tokenizer.model); copy the model's tokenizer files into the directory"
        )
    files = _weight_files(path)
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors(f)
    return files


def download(repo_id: str, revision: str | None) -> Path:
    """Fetch a hub model into the Hugging Face cache (only the files a conversion needs)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_ALLOW))
    except Exception as e:  # the hub client raises many types; one line is what the user needs
        raise UnsupportedSource(
            f"cannot download {repo_id!r}{f'@{revision}' if revision else ''} from the Hugging Face hub "
            f"({type(e).__name__}); check the id and your network, or pass a local model directory"
        ) from None


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists() and not any(path.glob("*.gguf"))


def is_hub_id(spec: str) -> bool:
    return bool(HUB_ID.match(spec)) and not Path(spec).exists()


class SafetensorsTensors(TensorSource):
    """A Hugging Face directory's streaming view: config.json + *.safetensors (sharded or not).

    Each tensor is read through its own short-lived memory map: pages of a mapping that stays open
    count as resident memory once touched, so keeping the shards mapped would make the process look
    as large as the checkpoint.
    """

    kind = "hf"

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open
        from transformers import AutoConfig

        self.folder, self.where = folder, str(folder)
        self.hf_config = AutoConfig.from_pretrained(folder)
        self.arch = for_hf(self.hf_config, str(folder / "config.json"))
        self._where: dict[str, Path] = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as handle:
                self._where.update({k: f for k in handle.keys()})
        if not self._where:
            raise MissingFile(f"{folder}: no *.safetensors to stream")
        self._open()

    def names(self) -> list[str]:
        return list(self._where)

    def read(self, name: str):
        import torch
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as handle:
            return handle.get_tensor(name).to(torch.float32).numpy()


def tensor_names(path: Path, files: list[Path]) -> list[str]:
    """Every tensor name of the checkpoint (safetensors headers; .bin through a memory-mapped torch.load)."""
    import torch
    from safetensors import safe_open

    names: list[str] = []
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as handle:
                names += list(handle.keys())
        else:
            names += list(_load_bin(f, torch))
    return names


def _load_bin(f: Path, torch) -> dict:
    """A pytorch_model*.bin state dict: memory-mapped where the file is a zip archive (torch >= 1.6)."""
    try:
        return torch.load(f, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be mapped
        pass
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadFormat(f"{f}: not a readable PyTorch state dict ({type(e).__name__}: {e}); download it again") from None


def check_weights(path: Path, files: list[Path], config) -> None:
    """The config refusals and the weight map's completeness, before torch builds the model."""
    arch = for_hf(config, str(path / "config.json"))
    cfg = arch.model_config(config)
    arch.weight_map("hf", str(path)).check(set(tensor_names(path, files)), cfg, str(path))


def load(path: Path, revision: str | None = None, hub_id: str | None = None) -> LoadedSource:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    files = validate_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except Exception as e:
        raise MissingFile(f"{path}: the tokenizer cannot be loaded ({type(e).__name__}: {e})") from None
    if not tokenizer.is_fast:
        raise MissingFile(f"{path}: only a slow tokenizer could be built; add tokenizer.json")
    config = AutoConfig.from_pretrained(path)
    check_weights(path, files, config)
    try:
        model = for_hf(config, str(path)).transformers_class().from_pretrained(path, torch_dtype=torch.float32)
    except Exception as e:
        raise BadFormat(f"{path}: the weights cannot be loaded ({type(e).__name__}: {e})") from None
    check_model_finite(model, str(path))
    model.eval()
    tok_files = [path / t for t in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json") if (path / t).exists()]
    return LoadedSource(
        kind="hf",
        path=hub_id or str(path),
        name=(hub_id or path.name).split("/")[-1],
        sha256=sha256_files(files + [path / "config.json"] + tok_files),
        model=model,
        tokenizer=tokenizer,
        revision=revision,
        files=[str(f) for f in files],
    )


SOURCES.add("hf", SourceReader("hf", detect, load))
