"""`webllama convert`: the one conversion pipeline.

    source -> (reader, LoadedSource) -> quantization pass (int4 variants: calibration + methods -> QuantStore)
           -> graph per variant (fused builder, or the optimum reference export + the int4 graph pass)
           -> WASM graphs -> tokenizer + config -> verify -> manifest

Both graph builders take the same float weights and the same QuantStore, so a recipe means the same numbers
in either graph. Without verification, the optimum export and adapters/customizations, the source is never
loaded into torch (the fused builder streams it).
"""

from __future__ import annotations

import gc
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from tqdm.auto import tqdm
from webllama.converter import customize
from webllama.converter.bundle import add_wasm_graphs, build_manifest, staging_dir, write_manifest, write_model_files, write_variant
from webllama.converter.customize import Customization
from webllama.converter.graph import GRAPHS  # noqa: E402
from webllama.converter.manifest import Bundle, open_bundle
from webllama.converter.quant.calibrate import OverlayReader, QuantStore, calibration_batches, calibration_text, quantize_weights
from webllama.converter.quant.policy import QuantSpec, recipe
from webllama.converter.sources import load_source
from webllama.converter.sources.base import LoadedSource
from webllama.converter.variants import WASM_WEIGHTS, Variant, parse_variants
from webllama.converter.verify import raise_if_failed, verify_bundle


@dataclass
class ConvertOptions:
    variants: list[Variant] = field(default_factory=lambda: parse_variants("q4"))
    quant: QuantSpec = field(default_factory=recipe)
    revision: str | None = None
    verify: bool = True
    force: bool = False
    progress: bool = True
    customization: Customization = field(default_factory=Customization)
    # "fused" (converter/graph: GroupQueryAttention etc., streamed; fewer nodes, faster on CPU/WASM/WebGPU,
    # bounded memory) | "optimum" (optimum-onnx's export: the correctness reference)
    graph: str = "fused"
    wasm_weights: str = "auto"  # the q4 variants' WASM graph (variants.WASM_WEIGHTS)


def make_variant(
    base: onnx.ModelProto, variant: Variant, quant: QuantSpec, store: QuantStore | None, canonical: dict[str, list[str]]
) -> onnx.ModelProto:
    """A reference-export variant: fp16 pass, then the int4 graph pass over the quantization pass's weights."""
    from webllama.converter.quant.fp16 import to_fp16
    from webllama.converter.quant.int4 import quantize_int4

    model = onnx.ModelProto()
    model.CopyFrom(base)
    if variant.activation_dtype == "float16":
        model = to_fp16(model)
    if variant.int4:
        model = quantize_int4(model, quant, store, canonical)
    return model


def open_source(source: str | LoadedSource, opts: ConvertOptions, need_torch: bool):
    """(reader, LoadedSource): the streaming reader the graph and the quantization pass read, and the source's
    tokenizer/config (with its torch model when verification, the reference export or a customization needs it)."""
    from webllama.converter.graph.readers import StateDictReader
    from webllama.converter.graph.source import light_source, open_reader

    custom = opts.customization
    if isinstance(source, LoadedSource) or not custom.empty:
        # Adapters, templates and context extension act on the torch model (converter/customize.py):
        # the weights then come from memory, not streamed.
        src = source if isinstance(source, LoadedSource) else load_source(source, revision=opts.revision)
        src = customize.apply(src, custom)
        return StateDictReader(src.model), src
    reader = open_reader(source, opts.revision)
    src = load_source(source, revision=opts.revision) if need_torch else light_source(source, reader, opts.revision)
    return reader, src


def quantization_pass(
    reader, src: LoadedSource, opts: ConvertOptions, scratch: Path, progress
) -> tuple[QuantStore | None, dict | None]:
    """The recipe applied once to every weight (None when no variant is int4); returns the store and the
    calibration record for the manifest."""
    if not any(v.int4 for v in opts.variants):
        return None, None
    calib, record = None, None
    if opts.quant.needs_calibration:
        text, record = calibration_text(opts.quant)
        calib = calibration_batches(src.tokenizer, text, opts.quant.calibration_tokens)
        record["tokens"] = int(calib.size)
    store = quantize_weights(reader, opts.quant, calib, scratch=scratch, progress=progress)
    return store, record


def convert(source: str | LoadedSource, out_dir: str | Path, options: ConvertOptions | None = None) -> Bundle:
    """Convert a model source into a bundle at `out_dir`; returns the opened bundle."""
    from webllama.converter.errors import UnsupportedVariant

    opts = options or ConvertOptions()
    if opts.graph not in GRAPHS:
        raise UnsupportedVariant(f"--graph {opts.graph!r} is not a graph builder; use one of {', '.join(GRAPHS)}")
    if opts.wasm_weights not in WASM_WEIGHTS:
        raise UnsupportedVariant(f"--wasm-weights {opts.wasm_weights!r}: use one of {', '.join(WASM_WEIGHTS)}")
    opts.quant.validate()
    out = Path(out_dir)
    with staging_dir(out, opts.force) as tmp:
        reader, src = open_source(source, opts, need_torch=opts.verify or opts.graph == "optimum")
        n = reader.config.n_layers
        total = n * (len(opts.variants) + (1 if any(v.int4 for v in opts.variants) else 0))
        with tqdm(total=total, desc="convert", unit="layer", disable=not opts.progress) as bar:
            bar.set_postfix_str("quantize")
            store, calib = quantization_pass(reader, src, opts, tmp / ".quant", lambda _msg: bar.update())
            variants = write_graphs(reader, src, opts, tmp, store, bar)
        shutil.rmtree(tmp / ".quant", ignore_errors=True)
        add_wasm_graphs(tmp, variants, opts.wasm_weights, reader.config.tie_embeddings)
        write_model_files(src, tmp, variants)
        verify = None
        if opts.verify:
            write_manifest(tmp, build_manifest(src, tmp, variants, opts.quant, None, opts.customization, calib))
            verify = verify_bundle(src, open_bundle(tmp), [v.name for v in opts.variants])
            (tmp / "verify.json").write_text(json.dumps(verify, indent=2) + "\n")
        write_manifest(tmp, build_manifest(src, tmp, variants, opts.quant, verify, opts.customization, calib))
    bundle = open_bundle(out)
    if verify is not None:
        raise_if_failed(verify, str(out))
    return bundle


def write_graphs(reader, src: LoadedSource, opts: ConvertOptions, tmp: Path, store: QuantStore | None, bar) -> dict[str, dict]:
    """One graph per variant, by the chosen builder; returns the manifest's variant entries."""
    from webllama.converter.graph.emit import write_fused_variant
    from webllama.converter.quant.calibrate import hf_names

    variants: dict[str, dict] = {}
    base = None
    canonical = hf_names(reader)
    if opts.graph == "optimum":
        from webllama.converter.export_optimum import export_fp32

        base = export_fp32(src, tmp)
        for leftover in tmp.glob("optimum-*"):  # the exporter's scratch directory
            shutil.rmtree(leftover, ignore_errors=True)
    for v in opts.variants:
        bar.set_postfix_str(v.name)
        if base is not None:
            variants[v.name] = write_variant(make_variant(base, v, opts.quant, store, canonical), tmp, v)
            bar.update(reader.config.n_layers)
        else:
            src_reader = OverlayReader(reader, store.floats) if (v.int4 and store is not None and store.floats) else reader
            variants[v.name] = write_fused_variant(src_reader, tmp, v, opts.quant, lambda _i: bar.update(), store)
        gc.collect()
    return variants
