"""The `webllama` command: argparse only. Each package registers its own subcommands; every user
error is a WebllamaError, printed as one line with a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from converter.errors import WebllamaError

# Subcommand providers: module -> register(subparsers). Imported lazily so `webllama convert` does not
# pay for Flask or lm-eval, and a package that is absent does not break the others.
SUBCOMMAND_MODULES = ("converter.cli", "web.cli", "evalsuite.cli", "evalsuite.bench_cli", "evalsuite.pipeline_cli")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GB"


def cmd_convert(args: argparse.Namespace) -> int:
    from converter.convert import ConvertOptions, convert
    from converter.customize import Customization
    from converter.quant.int4 import QuantSpec
    from converter.variants import parse_variants

    opts = ConvertOptions(
        variants=parse_variants(args.variant),
        quant=QuantSpec(
            method=args.method,
            block_size=args.block_size,
            symmetric=not args.asymmetric,
            accuracy_level=args.accuracy_level,
            lm_head_bits=args.lm_head_bits,
            lm_head_block_size=args.lm_head_block_size,
            lm_head_symmetric=args.lm_head_symmetric,
        ),
        revision=args.revision,
        verify=not args.no_verify,
        force=args.force,
        graph=args.graph,
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


def _print_bundle(bundle) -> None:
    verify_path = bundle.root / "verify.json"
    if verify_path.exists():
        from converter.verify import format_table

        print(format_table(json.loads(verify_path.read_text())))
    for name in bundle.variants:
        v = bundle.variant(name)
        print(f"  {name:<6} {_human(v['bytes']):>10}  {v['bytes_per_parameter']:.3f} bytes/param  {v['model']}")
    print(f"bundle: {bundle.root.resolve()} ({_human(bundle.size())})")


def cmd_verify(args: argparse.Namespace) -> int:
    from converter import customize
    from converter.customize import Customization
    from converter.manifest import list_files, open_bundle, write_json_atomic
    from converter.sources import load_source
    from converter.verify import format_table, raise_if_failed, verify_bundle

    bundle = open_bundle(args.bundle, check_hashes=True)
    src_path = args.source or bundle.manifest["source"]["path"]
    source = load_source(src_path, revision=bundle.manifest["source"].get("revision"))
    source = customize.apply(source, Customization.from_json(bundle.manifest["source"].get("customization")))
    variants = args.variant.split(",") if args.variant else None
    doc = verify_bundle(source, bundle, variants)
    write_json_atomic(bundle.root / "verify.json", doc)
    manifest = bundle.manifest
    for name, rep in doc["variants"].items():
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a Llama-family model (HF dir/hub id, GGUF, llama2.c) to a bundle")
    p.add_argument("source", help="HF model directory, hub id (org/name), .gguf file, or llama2.c checkpoint/dir")
    p.add_argument("output", help="bundle directory to create")
    p.add_argument("--variant", default="q4", help="comma-separated: fp32,fp16,q4,q4f16 (default: q4)")
    p.add_argument("--block-size", type=int, default=32, choices=[16, 32, 64, 128], help="int4 block size")
    p.add_argument("--asymmetric", action="store_true", help="int4 with uint8 zero points (default: symmetric)")
    p.add_argument("--method", default="rtn", help="int4 method (rtn; hqq is refused: no browser kernel)")
    p.add_argument(
        "--accuracy-level",
        type=int,
        default=None,
        choices=[0, 1, 2, 3, 4],
        help="MatMulNBits accuracy_level (CPU compute type; default: kernel's own, float32). 4 = int8 "
        "activations: SmolLM2 CPU decode 1.2-1.4x, prefill ~0.78x, same top-1 (benchmarks/README.md)",
    )
    p.add_argument(
        "--lm-head-bits",
        type=int,
        default=4,
        choices=[0, 4, 8],
        help="bits of the output projection in int4 variants (default 4; 8 is slow on CPU/WASM; 0 float)",
    )
    p.add_argument(
        "--lm-head-block-size",
        type=int,
        default=16,
        choices=[16, 32, 64, 128],
        help="block size of the output projection (default 16)",
    )
    p.add_argument(
        "--lm-head-symmetric", action="store_true", help="symmetric output projection (default: asymmetric, uint8 zero points)"
    )
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) for a hub id")
    p.add_argument(
        "--graph",
        default="fused",
        choices=["fused", "optimum"],
        help="fused (default): onnxruntime fused ops, streamed layer by layer; optimum: the reference export",
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
    p.set_defaults(func=cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webllama", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.description = "Llama-family models -> int4 ONNX bundles for the browser, verified and evaluated."
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # that part of the toolkit is not there (yet)
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        handler = getattr(args, "func", None) or args.handler  # packages name it either way
        return int(handler(args) or 0)
    except WebllamaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
