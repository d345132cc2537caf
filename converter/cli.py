"""`webllama convert` and `webllama verify`: argparse only (the root parser is webllama/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys


def _human(n: int) -> str:
    """Binary units, named as such (the README's MB are 10^6 bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_convert(args: argparse.Namespace) -> int:
    from webllama.converter.convert import ConvertOptions, convert
    from webllama.converter.customize import Customization
    from webllama.converter.variants import parse_variants

    opts = ConvertOptions(
        variants=parse_variants(args.variant),
        quant=quant_spec(args),
        revision=args.revision,
        verify=not args.no_verify,
        force=args.force,
        graph=args.graph,
        wasm_weights=args.wasm_weights,
        customization=Customization(
            adapters=tuple(args.adapter or ()),
            adapter_weights=tuple(args.adapter_weight or ()),
            chat_template=args.chat_template,
            context_length=args.context_length,
            rope_scaling=args.rope_scaling,
        ),
    )
    bundle = convert(args.source, args.output, opts)
    _print_bundle(bundle)
    return 0


def quant_spec(args: argparse.Namespace):
    """--quant RECIPE, then the per-setting flags on top of it (each None = the recipe's own)."""
    from webllama.converter.quant.policy import OPTIONS, from_options

    return from_options(**{k: getattr(args, k) for k in OPTIONS})


def _print_bundle(bundle) -> None:
    verify_path = bundle.root / "verify.json"
    if verify_path.exists():
        from webllama.converter.verify import format_table

        print(format_table(json.loads(verify_path.read_text())))
    for name in bundle.variants:
        v = bundle.variant(name)
        print(f"  {name:<6} {_human(v['bytes']):>10}  {v['bytes_per_parameter']:.3f} bytes/param  {v['model']}")
    print(f"bundle: {bundle.root.resolve()} ({_human(bundle.size())})")


def cmd_verify(args: argparse.Namespace) -> int:
    from webllama.converter import customize
    from webllama.converter.customize import Customization
    from webllama.converter.errors import BundleError
    from webllama.converter.manifest import list_files, located_customization, open_bundle, recall_source, write_json_atomic
    from webllama.converter.sources import load_source
    from webllama.converter.sources.hf import is_hub_id
    from webllama.converter.verify import format_table, raise_if_failed, verify_bundle

    bundle = open_bundle(args.bundle, check_hashes=True)
    recorded = bundle.manifest["source"]
    local = recall_source(recorded.get("sha256")) or {}  # the manifest names its source; this machine knows where
    src_path = args.source or local.get("path") or (recorded.get("path") if is_hub_id(recorded.get("path") or "") else None)
    if not src_path:
        raise BundleError(
            f"{args.bundle}: converted elsewhere from {recorded.get('path')!r} (sha256 {str(recorded.get('sha256'))[:12]}); "
            "pass --source PATH, the model it was converted from"
        )
    source = load_source(src_path, revision=recorded.get("revision"))
    custom = located_customization(recorded.get("customization"), local.get("customization"))
    source = customize.apply(source, Customization.from_json(custom))
    variants = args.variant.split(",") if args.variant else None
    doc = verify_bundle(source, bundle, variants)
    if args.ppl or args.ppl_text:
        doc["perplexity"] = heldout_perplexity(args, source, bundle, variants or bundle.variants)
    write_json_atomic(bundle.root / "verify.json", doc)
    manifest = bundle.manifest
    for name, rep in doc["variants"].items():
        if name not in manifest["variants"]:  # e.g. q4_wasm: a graph of the q4 variant, reported beside it
            continue
        manifest["variants"][name]["verify"] = {
            k: rep[k] for k in ("max_abs_logit_diff", "mean_kl", "top1_agreement", "greedy_match", "first_divergence", "passed")
        }
    manifest["verification"] = {"passed": doc["passed"]}
    manifest["files"] = list_files(bundle.root)
    write_json_atomic(bundle.root / "manifest.json", manifest)
    print(format_table(doc))
    print(f"verify.json: {(bundle.root / 'verify.json').resolve()}")
    raise_if_failed(doc, str(bundle.root))
    return 0


def heldout_perplexity(args: argparse.Namespace, source, bundle, variants: list[str]) -> dict:
    """`verify --ppl`: WikiText-2's held-out half (or --ppl-text), native vs each variant on onnxruntime."""
    import os
    from pathlib import Path

    from webllama.converter.baselines import perplexity, wikitext_heldout
    from webllama.converter.errors import MissingFile
    from webllama.converter.ort_model import OrtModel

    if args.ppl_text:
        text, name = Path(args.ppl_text).read_text(encoding="utf-8"), Path(args.ppl_text).name
    else:
        data = Path(args.data_dir or os.environ.get("WEBLLAMA_DATA_DIR") or "")
        if not (data / "wikitext2" / "wiki.test.raw").is_file():
            raise MissingFile("--ppl needs WikiText-2 at DIR/wikitext2/wiki.test.raw; pass --data-dir DIR (or --ppl-text FILE)")
        text, name = wikitext_heldout(data), "wikitext2 test, second half of the documents"
    doc = perplexity(source, {v: OrtModel(bundle, v) for v in variants}, text, max_tokens=args.ppl_tokens)
    return {"text": name, **doc}


def register(sub: argparse._SubParsersAction) -> None:
    from webllama.converter.variants import WASM_WEIGHTS  # a data module: cheap to import for the parser

    p = sub.add_parser("convert", help="convert a Llama-family model (HF dir/hub id, GGUF, llama2.c) to a bundle")
    p.add_argument("source", help="HF model directory, hub id (org/name), .gguf file, or llama2.c checkpoint/dir")
    p.add_argument("output", help="bundle directory to create")
    p.add_argument("--variant", default="q4", help="comma-separated: fp32,fp16,q4,q4f16 (default: q4)")
    add_quant_args(p)
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) for a hub id")
    p.add_argument(
        "--graph",
        default="fused",
        choices=["fused", "optimum"],
        help="fused (default): onnxruntime fused ops, streamed layer by layer; optimum: the reference export",
    )
    p.add_argument(
        "--wasm-weights",
        default="auto",
        choices=WASM_WEIGHTS,
        help="the q4 WASM graph's weights: float32 folded at load from the int4 file (exact, 4 B/param in the page), "
        "int8 in their own shards (1.5 B/param, approximate); auto (default): float32 when it fits 2 GiB",
    )
    p.add_argument(
        "--adapter", action="append", metavar="DIR", help="PEFT LoRA/QLoRA adapter merged into the weights before export (repeatable)"
    )
    p.add_argument(
        "--adapter-weight", action="append", type=float, metavar="W", help="scale of the matching --adapter (default 1.0 each)"
    )
    p.add_argument(
        "--chat-template", default=None, help="vicuna|llama2|llama3|chatml|alpaca or a .jinja file (replaces the source's template)"
    )
    p.add_argument("--context-length", type=int, default=None, help="extend the context to N tokens via RoPE scaling")
    p.add_argument(
        "--rope-scaling",
        default=None,
        choices=["linear", "dynamic", "yarn", "llama3"],
        help="RoPE scaling type for --context-length (default linear)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the parity check against the source model")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("verify", help="parity of a bundle against its source model (torch vs onnxruntime CPU)")
    p.add_argument("bundle")
    p.add_argument("--source", default=None, help="source model (default: the path recorded in the manifest)")
    p.add_argument("--variant", default=None, help="comma-separated variants (default: all in the bundle)")
    p.add_argument("--ppl", action="store_true", help="also perplexity on WikiText-2's held-out half (native vs bundle)")
    p.add_argument("--data-dir", default=None, help="benchmarks folder holding wikitext2/ (default: $WEBLLAMA_DATA_DIR)")
    p.add_argument("--ppl-text", default=None, metavar="FILE", help="perplexity on this UTF-8 text instead")
    p.add_argument("--ppl-tokens", type=int, default=4096, help="tokens of held-out text scored (default 4096)")
    p.set_defaults(func=cmd_verify)


def add_quant_args(p: argparse.ArgumentParser) -> None:
    from webllama.converter.quant.methods import METHODS
    from webllama.converter.quant.policy import BLOCK_SIZES, DEFAULT_RECIPE, RECIPES

    q = p.add_argument_group("int4 quantization (q4, q4f16): a recipe, then per-setting changes to it")
    q.add_argument(
        "--quant",
        default=DEFAULT_RECIPE,
        choices=sorted(RECIPES),
        help=f"quantization recipe (default {DEFAULT_RECIPE}; measured in benchmarks/README.md): "
        + "; ".join(f"{k}: {r.linear.method} linears, {r.head.method} head" for k, r in RECIPES.items()),
    )
    q.add_argument("--method", default=None, help=f"method of the linear layers: {', '.join(METHODS.names())} (default: the recipe's)")
    q.add_argument("--block-size", type=int, default=None, choices=list(BLOCK_SIZES), help="block size of the linear layers")
    q.add_argument("--asymmetric", action="store_true", default=None, help="linear layers with integer zero points")
    q.add_argument("--symmetric", dest="asymmetric", action="store_false", help="linear layers without zero points")
    q.add_argument(
        "--accuracy-level",
        type=int,
        default=None,
        choices=[0, 1, 2, 3, 4],
        help="MatMulNBits accuracy_level (CPU compute type; default: kernel's own, float32). 4 = int8 "
        "activations: SmolLM2 CPU decode 1.2-1.4x, prefill ~0.78x, same top-1 (benchmarks/README.md)",
    )
    q.add_argument(
        "--lm-head-bits", type=int, default=None, choices=[0, 4, 8], help="output projection bits (0 float; 8 is slow on CPU)"
    )
    q.add_argument("--lm-head-block-size", type=int, default=None, choices=list(BLOCK_SIZES), help="output projection block size")
    q.add_argument("--lm-head-symmetric", action="store_true", help="output projection without zero points")
    q.add_argument("--lm-head-method", default=None, help=f"output projection method: {', '.join(METHODS.names())}")
    q.add_argument(
        "--override",
        action="append",
        metavar="PATTERN=BITS[:BLOCK[:sym|asym[:METHOD]]]",
        help="per-tensor storage by canonical name (layers.3.down, layers.*.v, lm_head, embed); repeatable, first match wins",
    )
    q.add_argument("--calibration", default=None, metavar="FILE", help="UTF-8 text to calibrate on (default: the built-in corpus)")
    q.add_argument("--calibration-tokens", type=int, default=None, metavar="N", help="calibration tokens (default 8192)")
    q.add_argument(
        "--float-embedding", action="store_true", help="keep the embedding lookup float (Gather): transformers.js's WASM build"
    )
    q.add_argument("--no-tie-once", action="store_true", help="store a tied embedding twice (its own int4 table)")
    q.add_argument(
        "--awq", action="store_true", default=None, help="activation-aware scales folded into the RMSNorm weights (calibrated)"
    )


def main(argv: list[str] | None = None) -> int:
    from webllama.cli import main as root_main

    return root_main(argv)


if __name__ == "__main__":
    sys.exit(main())
