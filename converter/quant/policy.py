"""The quantization recipe of an int4 variant: one `QuantSpec` (what the CLI sets), resolved per tensor.

A recipe is data: a default `TensorQuant` for the linear layers, one for the output projection (and, when the
embedding is tied, the one matrix both read), and ordered `overrides` matched against canonical tensor names
(`layers.3.down`, `layers.*.v`, `lm_head`, `embed`). The whole recipe goes into the manifest, so a
bundle says exactly how it was made. Presets (`RECIPES`) name the measured ones.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field, replace

from webllama.converter.errors import UnsupportedVariant

BLOCK_SIZES = (16, 32, 64, 128)
# Methods known and refused: their zero points are floats, which the browser's kernels (WebGPU MatMulNBits, the
# WASM graph's integer requantization) do not read.
REFUSED_METHODS = {"hqq": "HQQ's float zero points have no WebGPU kernel, so its bundles cannot run in the browser"}
BITS = (4, 8)


@dataclass(frozen=True)
class TensorQuant:
    """How one weight matrix is stored: `bits` 0 = float."""

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    method: str = "rtn"

    def validate(self, where: str) -> None:
        from webllama.converter.quant.methods import METHODS

        if self.bits == 0:
            return
        if self.bits not in BITS:
            raise UnsupportedVariant(f"{where}: {self.bits} bits is not supported; use one of {BITS} (or 0 = float)")
        if self.block_size not in BLOCK_SIZES:
            raise UnsupportedVariant(f"{where}: block size {self.block_size} is not supported; use one of {BLOCK_SIZES}")
        if self.method in REFUSED_METHODS:
            raise UnsupportedVariant(
                f"{where}: method {self.method!r} is refused: {REFUSED_METHODS[self.method]}; use one of {', '.join(METHODS.names())}"
            )
        if self.method not in METHODS:
            raise UnsupportedVariant(f"{where}: unknown quantization method {self.method!r}; use one of {', '.join(METHODS.names())}")


# The projections a recipe quantizes, by the graph's canonical names (converter/archs/base.py): per layer
# "layers.{i}.q" ... "layers.{i}.down", and the globals "lm_head" (the output projection; a tied model's embedding
# table) and "embed" (the lookup table, when it is stored on its own).
LINEAR = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class QuantSpec:
    """An int4 variant's recipe. `linear` for every projection, `head` for the output projection (with a tied
    embedding: the one stored matrix both the embedding lookup and the head read), `overrides` first match wins."""

    linear: TensorQuant = field(default_factory=lambda: TensorQuant(4, 32, True, "rtn"))
    head: TensorQuant = field(default_factory=lambda: TensorQuant(4, 16, False, "rtn"))
    overrides: tuple[tuple[str, TensorQuant], ...] = ()
    embedding: bool = True  # int4 embedding lookup (GatherBlockQuantized); False keeps it float (transformers.js WASM)
    tie_once: bool = True  # a tied embedding is stored once: the head's int4 bytes serve the lookup as well
    awq: bool = False  # activation-aware per-channel scales folded into the RMSNorm weights (calibrate.awq_scales)
    accuracy_level: int | None = None  # MatMulNBits compute type on CPU; None = kernel default
    calibration: str | None = None  # None: the built-in corpus; else a UTF-8 text file (only methods that use it)
    calibration_tokens: int = 8192
    recipe: str | None = None  # the preset's name, when one was used

    def validate(self) -> None:
        self.linear.validate("linear layers")
        self.head.validate("output projection")
        for pattern, tq in self.overrides:
            tq.validate(f"override {pattern!r}")
        if self.calibration_tokens < 256:
            raise UnsupportedVariant(f"--calibration-tokens {self.calibration_tokens} is too few; use at least 256")

    def for_tensor(self, name: str, n_layers: int | None = None) -> TensorQuant | None:
        """The storage of a weight matrix (canonical name), or None to keep it float. A pattern's `{edge}` layer
        matches the first and last eighth of the n_layers (llama.cpp's use_more_bits layers)."""
        for pattern, tq in self.overrides:
            if _matches(pattern, name, n_layers):
                return tq if tq.bits else None
        tq = self.head if name == "lm_head" else self.linear
        return tq if tq.bits else None

    @property
    def needs_calibration(self) -> str | None:
        """ "hessian" | "imatrix" | None: the statistics the recipe's methods use."""
        from webllama.converter.quant.methods import METHODS

        needs = {METHODS.get(t.method).needs for t in (self.linear, self.head, *(o for _, o in self.overrides)) if t.bits}
        if self.awq:
            needs.add("hessian")
        return "hessian" if "hessian" in needs else ("imatrix" if "imatrix" in needs else None)

    def to_json(self) -> dict:
        from webllama.converter.quant.methods import METHODS

        doc = asdict(self)
        doc["overrides"] = [{"pattern": p, **asdict(t)} for p, t in self.overrides]
        used = {t.method for t in (self.linear, self.head, *(t for _, t in self.overrides)) if t.bits}
        doc["method_params"] = {m: dict(METHODS.get(m).params) for m in sorted(used) if METHODS.get(m).params}
        doc.update(
            weight_op="MatMulNBits",
            lm_head_op="MatMulNBits" if self.head.bits else "MatMul",
            embedding_op="GatherBlockQuantized" if self.embedding else "Gather",
            zero_points="uint8 (integer)",
        )
        return doc


def _matches(pattern: str, name: str, n_layers: int | None) -> bool:
    if "{edge}" not in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    if n_layers is None or not fnmatch.fnmatchcase(name, pattern.replace("{edge}", "*")):
        return False
    i = int(name.split(".")[1])
    return i < max(1, n_layers // 8) or i >= n_layers - max(1, n_layers // 8)


def _q(bits: int, block: int, sym: bool, method: str) -> TensorQuant:
    return TensorQuant(bits, block, sym, method)


# Named, measured recipes (benchmarks/quant_recipes.py reproduces their table). `default` is the best that meets
# the size target (<= llama.cpp Q4_0's file for the same model).
RECIPES: dict[str, QuantSpec] = {
    "rtn": QuantSpec(linear=_q(4, 32, True, "rtn"), head=_q(4, 16, False, "rtn"), tie_once=False, recipe="rtn"),
    "search": QuantSpec(linear=_q(4, 32, False, "search"), head=_q(4, 32, False, "search"), recipe="search"),
    "gptq": QuantSpec(linear=_q(4, 32, False, "gptq"), head=_q(4, 32, False, "search"), recipe="gptq"),
    "awq-gptq": QuantSpec(linear=_q(4, 32, False, "gptq"), head=_q(4, 32, False, "search"), awq=True, recipe="awq-gptq"),
    # gptq plus 8 bits where SmolLM2's per-tensor sensitivity measured it pays within llama.cpp Q4_0's file size
    # (benchmarks/README.md "int4 recipes"): every v projection (the smallest matrices, the largest KL gain per MB),
    # in blocks of 128 (8-bit rounding is fine at any block; 128 keeps the scales' bytes small). Measured the same
    # sitting: v + edge-layer down projections at 8 bits block 32 gave KL 0.083 but 93.9 MB, over Q4_0's 91.7.
    # The output projection (a tied table: the embedding lookup reads the same bytes) by GPTQ on the final norm's
    # outputs (calibrate.head_stats) instead of the search: same bytes, SmolLM2 KL 0.089 -> 0.065, WikiText-2
    # 89.84 -> 88.39 (native 78.36), stories260K 0.0943 -> 0.0907 (2026-12-03 v2). Both figures are end to end,
    # so they include what the lookup loses by reading codes fitted to the head's objective.
    # Linears in blocks of 16 since the bundle stores scales as float16 (2026-12-04, same sitting as block 32):
    # SmolLM2 91.0 MB (<= Q4_0's 91.7), KL 0.065 -> 0.052, top-1 0.821 -> 0.848, WikiText-2 88.39 -> 85.38 (+9.0%).
    "mixed": QuantSpec(
        linear=_q(4, 16, False, "gptq"),
        head=_q(4, 32, False, "gptq"),
        overrides=(("layers.*.v", _q(8, 128, True, "gptq")),),
        recipe="mixed",
    ),
}
DEFAULT_RECIPE = "mixed"


def recipe(name: str = DEFAULT_RECIPE, **changes) -> QuantSpec:
    if name not in RECIPES:
        raise UnsupportedVariant(f"unknown quantization recipe {name!r}; use one of {', '.join(RECIPES)}")
    return replace(RECIPES[name], **changes)


def parse_override(text: str) -> tuple[str, TensorQuant]:
    """`PATTERN=BITS[:BLOCK[:sym|asym[:METHOD]]]`, e.g. `layers.*.down=8:32:sym:search`, `lm_head=0` (float)."""
    pattern, _, rest = text.partition("=")
    parts = rest.split(":") if rest else []
    try:
        bits = int(parts[0])
        block = int(parts[1]) if len(parts) > 1 and parts[1] else 32
    except (ValueError, IndexError):
        raise UnsupportedVariant(f"--override {text!r}: expected PATTERN=BITS[:BLOCK[:sym|asym[:METHOD]]]") from None
    if len(parts) > 2 and parts[2] not in ("sym", "asym"):
        raise UnsupportedVariant(f"--override {text!r}: the third field is sym or asym, not {parts[2]!r}")
    if not pattern:
        raise UnsupportedVariant(f"--override {text!r}: no tensor pattern before '='")
    return pattern, TensorQuant(bits, block, parts[2] != "asym" if len(parts) > 2 else True, parts[3] if len(parts) > 3 else "search")


OPTIONS = (
    "quant",
    "method",
    "block_size",
    "asymmetric",
    "accuracy_level",
    "lm_head_bits",
    "lm_head_block_size",
    "lm_head_symmetric",
    "lm_head_method",
    "override",
    "calibration",
    "calibration_tokens",
    "float_embedding",
    "no_tie_once",
    "awq",
)


def from_options(quant: str = DEFAULT_RECIPE, **opts) -> QuantSpec:
    """A recipe (`quant`) with flat changes on top: the CLI flags' names (`webllama convert --help`), also what a
    sweep spec's recipe table holds. None (or absent) keeps the recipe's own setting."""
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise UnsupportedVariant(f"unknown quantization option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    spec = recipe(quant)
    g = opts.get
    sym = None if g("asymmetric") is None else not g("asymmetric")
    linear = _changed(spec.linear, bits=None, block_size=g("block_size"), symmetric=sym, method=g("method"))
    head_sym = True if g("lm_head_symmetric") else None
    head = _changed(
        spec.head, bits=g("lm_head_bits"), block_size=g("lm_head_block_size"), symmetric=head_sym, method=g("lm_head_method")
    )
    extra = g("override") or ()
    extra = tuple(parse_override(o) for o in ([extra] if isinstance(extra, str) else extra))
    changes: dict = dict(linear=linear, head=head, overrides=extra + spec.overrides)  # the user's first: first match wins
    for key in ("accuracy_level", "calibration", "calibration_tokens"):
        if g(key) is not None:
            changes[key] = g(key)
    if g("float_embedding"):
        changes["embedding"] = False
    if g("no_tie_once"):
        changes["tie_once"] = False
    if g("awq") is not None:
        changes["awq"] = bool(g("awq"))
    return replace(spec, **changes)


def _changed(base: TensorQuant, **changes) -> TensorQuant:
    return replace(base, **{k: v for k, v in changes.items() if v is not None})
