"""source -> fp32 graph -> variants -> bundle (+ verification), the whole `webllama convert`."""

from __future__ import annotations

import gc
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from tqdm.auto import tqdm
from webllama.converter import customize
from webllama.converter.bundle import add_wasm_graphs, build_manifest, staging_dir, write_manifest, write_model_files, write_variant
from webllama.converter.customize import Customization
from webllama.converter.export_optimum import export_fp32
from webllama.converter.manifest import Bundle, open_bundle, write_json_atomic
from webllama.converter.quant.fp16 import to_fp16
from webllama.converter.quant.int4 import QuantSpec, quantize_int4
from webllama.converter.sources import load_source
from webllama.converter.sources.base import LoadedSource
from webllama.converter.variants import Variant, parse_variants
from webllama.converter.verify import raise_if_failed, verify_bundle


@dataclass
class ConvertOptions:
    variants: list[Variant] = field(default_factory=lambda: parse_variants("q4"))
    quant: QuantSpec = field(default_factory=QuantSpec)
    revision: str | None = None
    verify: bool = True
    force: bool = False
    progress: bool = True
    customization: Customization = field(default_factory=Customization)
    # "fused" (converter/graph: GroupQueryAttention etc., streamed; fewer nodes, faster on CPU/WASM/WebGPU,
    # bounded memory) | "optimum" (optimum-onnx's export: the correctness reference)
    graph: str = "fused"


def make_variant(base: onnx.ModelProto, variant: Variant, quant: QuantSpec) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(base)
    if variant.activation_dtype == "float16":
        model = to_fp16(model)
    if variant.int4:
        model = quantize_int4(model, quant)
    return model


def convert(source: str | LoadedSource, out_dir: str | Path, options: ConvertOptions | None = None) -> Bundle:
    """Convert a model source into a bundle at `out_dir`; returns the opened bundle."""
    opts = options or ConvertOptions()
    if opts.graph == "fused":
        from webllama.converter.graph.convert import convert_fused

        return convert_fused(source, out_dir, opts)
    opts.quant.validate()
    out = Path(out_dir)
    steps = ["load source", "export fp32 graph", *[f"write {v.name}" for v in opts.variants], "tokenizer + config"]
    steps += ["verify"] if opts.verify else []
    with staging_dir(out, opts.force) as tmp, tqdm(total=len(steps), desc="convert", unit="step", disable=not opts.progress) as bar:
        bar.set_postfix_str(steps[0])
        src = source if isinstance(source, LoadedSource) else load_source(source, revision=opts.revision)
        src = customize.apply(src, opts.customization)
        bar.update()
        bar.set_postfix_str(steps[1])
        base = export_fp32(src, tmp)
        bar.update()
        variants = {}
        for v in opts.variants:
            bar.set_postfix_str(f"write {v.name}")
            variants[v.name] = write_variant(make_variant(base, v, opts.quant), tmp, v)
            gc.collect()
            bar.update()
        del base
        for leftover in tmp.glob("optimum-*"):  # the exporter's scratch directory
            shutil.rmtree(leftover, ignore_errors=True)
        add_wasm_graphs(tmp, variants)
        write_model_files(src, tmp, variants)
        bar.update()
        verify = None
        if opts.verify:
            bar.set_postfix_str("verify")
            write_manifest(tmp, build_manifest(src, tmp, variants, opts.quant, None, opts.customization))
            verify = verify_bundle(src, open_bundle(tmp), [v.name for v in opts.variants])
            write_json_atomic(tmp / "verify.json", verify)  # strict JSON: a NaN figure is null
            bar.update()
        write_manifest(tmp, build_manifest(src, tmp, variants, opts.quant, verify, opts.customization))
        if verify is not None:  # inside: a failed bundle is kept aside, never installed at `out` (bundle.py)
            raise_if_failed(verify, str(out))
    return open_bundle(out)
