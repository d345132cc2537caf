"""Offline tasks: lm-eval's stock task YAMLs with the data source swapped to local files.

`write_task_dir(data_dir, out_dir)` writes one small YAML per task into `out_dir`. Each one `include`s the
stock YAML from the installed lm-eval (so prompts, answer choices, filters and metrics are lm-eval's own)
and overrides only the data source:

    include: <site-packages>/lm_eval/tasks/arc/arc_easy.yaml
    task: arc_easy
    custom_dataset: !function webllama.evalsuite.tasks.loaders.arc     # field-mapping adapter -> hub schema
    dataset_kwargs: {data_dir: ..., subset: ARC-Easy}
    training_split: null                                       # splits that have no local file

MMLU subjects also get `num_fewshot: 5` (see MMLU_OVERRIDES). `task_manager(data_dir, work_dir)`
returns an lm-eval TaskManager over that folder (include_path), or the stock TaskManager (hub
datasets) when no data dir is given; the user's own task folders (`--include-path`) are added to
either. Task names are the stock names, so results line up with any other lm-eval run. The known
differences from the hub data are in loaders.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from webllama.evalsuite.errors import DataMissing, UnknownTask

DATA_DIR_ENV = "WEBLLAMA_DATA_DIR"
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


@dataclass(frozen=True)
class LocalTask:
    """One offline task: which stock YAML, which adapter, which local files."""

    name: str  # lm-eval task name, e.g. "arc_easy"
    stock_yaml: str  # relative to lm_eval/tasks/
    loader: str  # function in webllama.evalsuite.tasks.loaders
    files: tuple[str, ...]  # relative to the data dir; all must exist
    splits: tuple[str, ...]  # splits the loader returns
    kwargs: dict = field(default_factory=dict)  # loader arguments besides data_dir
    overrides: dict = field(default_factory=dict)  # deliberate config changes (documented in the docstring)


MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing medical_genetics "
    "miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations security_studies "
    "sociology us_foreign_policy virology world_religions"
).split()

# MMLU group YAMLs (stock): mmlu -> mmlu_{stem,other,social_sciences,humanities} -> tags of the subjects.
MMLU_GROUPS = ("_mmlu", "_mmlu_stem", "_mmlu_other", "_mmlu_social_sciences", "_mmlu_humanities")


# The only deliberate change to a stock config: MMLU is scored 5-shot (from dev, first 5) as the
# leaderboards report it; lm-eval's stock mmlu default is 0-shot. --num-fewshot still overrides it.
MMLU_OVERRIDES = {"num_fewshot": 5}


def _table() -> dict[str, LocalTask]:
    tasks = [
        LocalTask("arc_easy", "arc/arc_easy.yaml", "arc", ("arc/ARC-Easy-Test.jsonl",), ("test",), {"subset": "ARC-Easy"}),
        LocalTask(
            "arc_challenge", "arc/arc_challenge.yaml", "arc", ("arc/ARC-Challenge-Test.jsonl",), ("test",), {"subset": "ARC-Challenge"}
        ),
        LocalTask("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag", ("hellaswag/hellaswag_val_full.txt.bz2",), ("validation",)),
        LocalTask("piqa", "piqa/piqa.yaml", "piqa", ("piqa/valid.jsonl", "piqa/valid-labels.lst"), ("validation",)),
        LocalTask("winogrande", "winogrande/default.yaml", "winogrande", ("winogrande/dev.jsonl",), ("validation",)),
        LocalTask("lambada_openai", "lambada/lambada_openai.yaml", "lambada", ("lambada/lambada_test.jsonl",), ("test",)),
        LocalTask("boolq", "super_glue/boolq/default.yaml", "boolq", ("boolq/boolq.jsonl",), ("validation",)),
        LocalTask("truthfulqa_mc1", "truthfulqa/truthfulqa_mc1.yaml", "truthfulqa", ("truthfulqa/validation.json",), ("validation",)),
        LocalTask("truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml", "truthfulqa", ("truthfulqa/validation.json",), ("validation",)),
        LocalTask("gsm8k", "gsm8k/gsm8k.yaml", "gsm8k", ("gsm8k/test.jsonl",), ("test",)),
        LocalTask("wikitext", "wikitext/wikitext.yaml", "wikitext", ("wikitext2/wiki.test.raw",), ("test",)),
    ]
    tasks += [
        LocalTask(
            f"mmlu_{s}",
            f"mmlu/default/mmlu_{s}.yaml",
            "mmlu",
            tuple(f"mmlu/{d}/{s}_{d}.csv" for d in ("dev", "val", "test")),
            ("dev", "validation", "test"),
            {"subject": s},
            MMLU_OVERRIDES,
        )
        for s in MMLU_SUBJECTS
    ]
    return {t.name: t for t in tasks}


TASKS: dict[str, LocalTask] = _table()
GROUPS: dict[str, str] = {g.lstrip("_"): f"mmlu/default/{g}.yaml" for g in MMLU_GROUPS}


def stock_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """--data-dir, else $WEBLLAMA_DATA_DIR, else None (stock hub datasets)."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise DataMissing(f"data dir {path} does not exist (from --data-dir or ${DATA_DIR_ENV})")
    return path


def available(data_dir: Path) -> list[str]:
    """Names of the tasks whose files are all present under data_dir."""
    return [name for name, t in TASKS.items() if all((data_dir / f).is_file() for f in t.files)]


def task_config(task: LocalTask, data_dir: Path, stock_dir: Path) -> dict:
    """The override YAML (as a dict) for one task; `!function` is added by the writer."""
    stock = _stock_splits(stock_dir / task.stock_yaml)
    cfg = {
        "include": str(stock_dir / task.stock_yaml),
        "task": task.name,
        "custom_dataset": f"webllama.evalsuite.tasks.loaders.{task.loader}",
        "dataset_kwargs": {"data_dir": str(data_dir), **task.kwargs},
        **task.overrides,
    }
    for key, split in stock.items():
        if split is not None and split not in task.splits:
            cfg[key] = None
    return cfg


def _stock_splits(path: Path) -> dict[str, str | None]:
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(path, resolve_func=False)
    return {key: cfg.get(key) for key in SPLIT_KEYS}


class _FunctionTag(str):
    pass


def _dump(cfg: dict) -> str:
    dumper = type("Dumper", (yaml.SafeDumper,), {})
    dumper.add_representer(_FunctionTag, lambda d, v: d.represent_scalar("!function", str(v)))
    cfg = {**cfg, "custom_dataset": _FunctionTag(cfg["custom_dataset"])}
    return yaml.dump(cfg, Dumper=dumper, sort_keys=False, allow_unicode=True)


def write_task_dir(data_dir: Path, out_dir: Path) -> list[str]:
    """Write the override YAMLs of every task available under data_dir; returns their names."""
    stock_dir = stock_tasks_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = available(data_dir)
    for name in names:
        cfg = task_config(TASKS[name], data_dir, stock_dir)
        (out_dir / f"{name}.yaml").write_text(_dump(cfg), encoding="utf-8")
    if all(f"mmlu_{s}" in names for s in MMLU_SUBJECTS):
        for group, rel in GROUPS.items():
            (out_dir / f"{group}.yaml").write_text(f"include: {stock_dir / rel}\n", encoding="utf-8")
    return names


def resolve_include_paths(paths: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """--include-path folders as absolute paths (recorded and resumed on); one-line error for a bad one."""
    out: list[str] = []
    for given in paths or ():
        path = Path(given).expanduser().resolve()
        if not path.is_dir():
            raise DataMissing(f"--include-path {given}: no such folder (give a folder of lm-eval task YAML files)")
        if not any(path.rglob("*.yaml")):
            raise DataMissing(f"--include-path {given}: no *.yaml task file in {path}")
        if str(path) not in out:
            out.append(str(path))
    return tuple(out)


def task_manager(data_dir: Path | None, work_dir: Path, include_paths: tuple[str, ...] = ()):
    """TaskManager over the offline tasks of data_dir (written to work_dir/tasks), or the stock one;
    plus the user's task folders (lm-eval's include_path, scanned last so they win on a name clash)."""
    from lm_eval.tasks import TaskManager

    user = [str(p) for p in include_paths]
    if data_dir is None:
        return TaskManager(include_path=user or None)
    write_task_dir(data_dir, work_dir / "tasks")
    return TaskManager(include_path=[str(work_dir / "tasks"), *user], include_defaults=False)


def check_tasks(names: list[str], tm, data_dir: Path | None, include_paths: tuple[str, ...] = ()) -> list[str]:
    """Expand globs/commas and validate task names against the manager; one-line error on a miss."""
    import difflib

    out = []
    for name in names:
        matched = tm.match_tasks([name])
        if not matched:
            known = tm.all_tasks
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            where = f" in data dir {data_dir}" if data_dir else ""
            offline = ", ".join(sorted(set(TASKS) - {t for t in TASKS if t.startswith("mmlu_")})) + ", mmlu"
            user = _user_tasks(tm, include_paths)
            mine = f" Tasks in --include-path: {', '.join(user) or 'none'}." if include_paths else ""
            raise UnknownTask(f"unknown task {name!r}{where}.{hint} Offline tasks: {offline}.{mine}")
        out += [m for m in matched if m not in out]
    return out


def _user_tasks(tm, include_paths: tuple[str, ...]) -> list[str]:
    roots = [Path(p) for p in include_paths]
    found = []
    for name, entry in tm.task_index.items():
        if entry.yaml_path and any(Path(entry.yaml_path).resolve().is_relative_to(r) for r in roots):
            found.append(name)
    return sorted(found)


def quiet_index_logs() -> None:
    """The index warns once per stock task we override; that is the point, so silence it."""
    logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)
