"""The variants a bundle can hold: data, not code (one row per variant)."""

from __future__ import annotations

from dataclasses import dataclass

from webllama.converter.errors import UnsupportedVariant


@dataclass(frozen=True)
class Variant:
    name: str
    onnx_name: str  # transformers.js naming: model{suffix}.onnx
    activation_dtype: str  # "float32" | "float16"
    int4: bool
    webgpu_features: tuple[str, ...]  # adapter features the browser needs
    exact: bool  # must be token-exact with torch (fp32 only)
    # The floor of a variant that is not exact: verification fails below this top-1 agreement with torch on verify's
    # text. Far under what a working conversion gives (SmolLM2 q4 0.81, stories260K rtn 0.75, fp16 ~1.0) and far
    # over what a broken one does (a wrong layout or scale: ~0), so it catches garbage, not a weaker recipe.
    min_top1: float = 1.0


# What a quantized float32 variant's WASM graph stores (converter/quant/unpack.py write_wasm_graph): "auto" picks
# float32 (folded at load from the int4 file) where it fits the budget, else int8 in the graph's own shards.
WASM_WEIGHTS = ("auto", "float32", "int8")

VARIANTS: dict[str, Variant] = {
    "fp32": Variant("fp32", "model.onnx", "float32", False, (), True),
    "fp16": Variant("fp16", "model_fp16.onnx", "float16", False, ("shader-f16",), False, 0.9),
    "q4": Variant("q4", "model_q4.onnx", "float32", True, (), False, 0.4),
    "q4f16": Variant("q4f16", "model_q4f16.onnx", "float16", True, ("shader-f16",), False, 0.4),
}


def parse_variants(spec: str | list[str]) -> list[Variant]:
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for name in (n.strip() for n in names if n.strip()):
        if name not in VARIANTS:
            raise UnsupportedVariant(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)} (comma-separated)")
        if VARIANTS[name] not in out:
            out.append(VARIANTS[name])
    if not out:
        raise UnsupportedVariant(f"no variant given; choose from {', '.join(VARIANTS)}")
    return out
