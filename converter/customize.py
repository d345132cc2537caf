"""What the user changes about a source before export: LoRA adapters merged into the weights, a chat
template for sources without one, and a longer context through RoPE scaling.

The customization is recorded in the manifest so `webllama verify` can rebuild the same model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from webllama.converter.chat_templates import resolve_template
from webllama.converter.errors import ConvertError
from webllama.converter.sources.base import LoadedSource, sha256_files

ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3")


class AdapterMismatch(ConvertError):
    pass


@dataclass(frozen=True)
class Customization:
    adapters: tuple[str, ...] = ()
    adapter_weights: tuple[float, ...] = ()
    chat_template: str | None = None  # a name or a file
    context_length: int | None = None
    rope_scaling: str | None = None  # one of ROPE_TYPES
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.context_length
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ConvertError(f"--context-length {n}: must be a positive number of tokens (or leave it out)")

    @property
    def empty(self) -> bool:
        return not (self.adapters or self.chat_template or self.context_length)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> Customization:
        if not d:
            return cls()
        return cls(
            tuple(d.get("adapters", ())),
            tuple(d.get("adapter_weights", ())),
            d.get("chat_template"),
            d.get("context_length"),
            d.get("rope_scaling"),
            d.get("extra", {}),
        )


def apply(source: LoadedSource, c: Customization) -> LoadedSource:
    if c.adapters:
        merge_adapters(source, c.adapters, c.adapter_weights)
    if c.chat_template:
        source.tokenizer.chat_template = resolve_template(c.chat_template)
    if c.context_length:
        extend_context(source, c.context_length, c.rope_scaling or "linear")
    return source


# ------------------------------------------------------------------------------------------ LoRA


def _check_adapter(path: Path, source: LoadedSource) -> dict:
    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        raise AdapterMismatch(f"{path}: no adapter_config.json; --adapter takes a PEFT adapter directory")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise AdapterMismatch(f"{cfg_path}: not valid JSON ({e}); the adapter is corrupt") from None
    if not isinstance(cfg, dict):
        raise AdapterMismatch(f"{cfg_path}: a JSON {type(cfg).__name__}, not an object; the adapter is corrupt")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterMismatch(f"{path}: peft_type {cfg.get('peft_type')!r} is not supported; only LoRA adapters merge")
    names = {n.rsplit(".", 1)[-1] for n, _ in source.model.named_modules()}
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    missing = [t for t in targets if t not in names and not any(n.endswith(t) for n, _ in source.model.named_modules())]
    if missing:
        raise AdapterMismatch(
            f"{path}: target modules {missing} do not exist in {source.name}; the adapter was trained for another base model"
        )
    _check_shapes(path, source)
    return cfg


def _check_shapes(path: Path, source: LoadedSource) -> None:
    """peft only warns when an adapter's matrices do not fit the base; refuse that here instead."""

    files = sorted(path.glob("adapter_model*.safetensors"))
    if not files:
        return  # a .bin adapter: peft's own load checks are all we have
    modules = dict(source.model.named_modules())
    try:
        _check_file_shapes(files[0], path, source, modules)
    except AdapterMismatch:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError for a truncated or corrupt file
        raise AdapterMismatch(f"{files[0]}: cannot be read ({type(e).__name__}: {e}); the adapter is truncated or corrupt") from None


def _check_file_shapes(file: Path, path: Path, source: LoadedSource, modules: dict) -> None:
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        for key in f.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            name = key.split(".lora_")[0].removeprefix("base_model.model.")
            module = modules.get(name)
            if module is None or not hasattr(module, "in_features"):
                raise AdapterMismatch(
                    f"{path}: {name} is not a linear layer of {source.name}; the adapter was trained for another base model"
                )
            shape = tuple(f.get_slice(key).get_shape())
            want = module.in_features if ".lora_A." in key else module.out_features
            got = shape[1] if ".lora_A." in key else shape[0]
            if got != want:
                raise AdapterMismatch(
                    f"{path}: cannot apply to {source.name}: tensor shapes differ from the base model's "
                    f"({key} has {got} features, {name} has {want}); another base model?"
                )


def merge_adapters(source: LoadedSource, paths: tuple[str, ...], weights: tuple[float, ...]) -> None:
    """Merge each LoRA adapter (QLoRA ones too: the same format) into the float32 weights, in order."""
    from peft import PeftModel

    weights = weights or (1.0,) * len(paths)
    if len(weights) != len(paths):
        raise ConvertError(f"{len(paths)} --adapter but {len(weights)} --adapter-weight; give one weight per adapter")
    model = source.model
    for p, w in zip(paths, weights, strict=True):
        path = Path(p)
        _check_adapter(path, source)
        try:
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        except (RuntimeError, ValueError, KeyError, OSError, EOFError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "size mismatch" in str(e):
                first = "tensor shapes differ from the base model's (" + first[:160] + ")"
            raise AdapterMismatch(f"{path}: cannot apply to {source.name}: {first}") from None
        if w != 1.0:
            for module in peft_model.modules():
                if hasattr(module, "scaling") and isinstance(module.scaling, dict):
                    module.scaling = {k: v * w for k, v in module.scaling.items()}
        model = peft_model.merge_and_unload()
    model.eval()
    source.model = model
    adapters_sha = sha256_files([f for p in paths for f in Path(p).glob("adapter_model*")])
    source.sha256 = hashlib.sha256(f"{source.sha256}+{adapters_sha}+{weights}".encode()).hexdigest()
    source.name = f"{source.name}+{'+'.join(Path(p).name for p in paths)}"


# ------------------------------------------------------------------------------------------ context


def extend_context(source: LoadedSource, length: int, rope_type: str) -> None:
    """Stretch RoPE to `length` tokens with one of transformers' scaling types (factor = new / trained)."""
    from webllama.converter.graph.rope import rotary_class

    if rope_type not in ROPE_TYPES:
        raise ConvertError(f"--rope-scaling {rope_type!r} is not supported; use one of {', '.join(ROPE_TYPES)}")
    cfg = source.model.config
    trained = cfg.max_position_embeddings
    if length <= trained:
        raise ConvertError(f"--context-length {length} is not longer than the trained {trained}; nothing to scale")
    if getattr(cfg, "rope_scaling", None):  # Mistral's config has no such field
        raise ConvertError(f"{source.name} already uses rope_scaling {cfg.rope_scaling}; stacking scalings is not supported")
    factor = length / trained
    scaling: dict = {"rope_type": rope_type, "factor": factor}
    if rope_type == "yarn":
        scaling["original_max_position_embeddings"] = trained
    if rope_type == "llama3":
        scaling |= {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": trained}
    cfg.rope_scaling = scaling
    cfg.max_position_embeddings = length
    # The rotary module computed its frequencies from the old config: rebuild it from the new one.
    source.model.model.rotary_emb = rotary_class(type(source.model))(config=cfg)  # the family's own (archs/*)
    source.tokenizer.model_max_length = length
