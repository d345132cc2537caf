"""Offline tasks: same prompts, choices, targets, few-shot contexts and metrics as lm-eval's stock tasks.

The stock task is built from lm-eval's own YAML with only its data source replaced by a local JSON file
in the hub schema (written from our adapter's rows), i.e. "the stock task on the same documents". Our
task goes through the generated YAML + TaskManager(include_path). Their requests must be identical.
Known differences in the *data* (HellaSwag's joined context, WikiText's dropped blank lines, GSM8K
few-shot from test) are documented in evalsuite/tasks/loaders.py; they do not show here by design.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from webllama.evalsuite import tasks
from webllama.evalsuite.tasks import loaders

MMLU_SAMPLE = ["mmlu_abstract_algebra", "mmlu_high_school_us_history", "mmlu_world_religions"]
CHECKED = [n for n in tasks.TASKS if not n.startswith("mmlu_")] + MMLU_SAMPLE
K = 4  # documents compared per task


def _stock_task(name: str, data_dir: Path, tmp: Path):
    """lm-eval's stock task for `name`, reading hub-schema JSON files made from our local files."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    t = tasks.TASKS[name]
    cfg = load_yaml(tasks.stock_tasks_dir() / t.stock_yaml, resolve_func=True)
    rows = getattr(loaders, t.loader)(str(data_dir), **t.kwargs)
    files = {}
    for split, ds in rows.items():
        files[split] = str(tmp / f"{name}-{split}.jsonl")
        ds.to_json(files[split], lines=True, force_ascii=False)
    cfg |= {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    for key in tasks.SPLIT_KEYS:  # splits without a local file, exactly as the generated YAML does
        if cfg.get(key) is not None and cfg[key] not in t.splits:
            cfg[key] = None
    cfg |= t.overrides
    for key in ("tag", "group"):
        cfg.pop(key, None)
    return ConfigurableTask(config=cfg)


def _requests(task) -> list[tuple]:
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=K, rank=0, world_size=1)
    return [(i.request_type, i.doc_id, i.idx, i.arguments) for i in task.instances]


@pytest.mark.parametrize("name", CHECKED)
def test_requests_match_the_stock_task(name, small_tasks, small_data_dir, tmp_path):
    tm, _ = small_tasks
    ours = tm.load([name])["tasks"][name]
    stock = _stock_task(name, small_data_dir, tmp_path)
    assert ours.OUTPUT_TYPE == stock.OUTPUT_TYPE
    for key in (
        "doc_to_text",
        "doc_to_target",
        "doc_to_choice",
        "num_fewshot",
        "description",
        "metric_list",
        "generation_kwargs",
        "filter_list",
        "target_delimiter",
        "fewshot_delimiter",
        "process_results",
    ):
        a, b = ours.config[key], stock.config[key]
        if callable(a):
            assert (a.__module__, a.__name__) == (b.__module__, b.__name__), key
        else:
            assert a == b, key
    got, want = _requests(ours), _requests(stock)
    assert got and got == want


def test_every_request_type_is_covered():
    from lm_eval.tasks._yaml_loader import load_yaml

    types = {load_yaml(tasks.stock_tasks_dir() / tasks.TASKS[n].stock_yaml, resolve_func=False)["output_type"] for n in CHECKED}
    assert types == {"multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until"}


def test_generated_yaml_only_swaps_the_data_source(tmp_path, small_data_dir):
    names = tasks.write_task_dir(small_data_dir, tmp_path)
    assert set(names) == set(tasks.TASKS)
    assert len([n for n in names if n.startswith("mmlu_")]) == 57
    cfg = (tmp_path / "arc_easy.yaml").read_text()
    assert "custom_dataset: !function 'webllama.evalsuite.tasks.loaders.arc'" in cfg
    doc = yaml.safe_load(cfg.replace("!function ", ""))
    assert set(doc) == {"include", "task", "custom_dataset", "dataset_kwargs", "training_split", "validation_split"}
    assert doc["training_split"] is None and doc["dataset_kwargs"]["subset"] == "ARC-Easy"
    for group in ("mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_other", "mmlu_social_sciences"):
        assert (tmp_path / f"{group}.yaml").is_file()


def test_mmlu_group_has_57_subjects_5_shot(small_tasks):
    tm, _ = small_tasks
    loaded = tm.load(["mmlu"])
    assert len(loaded["tasks"]) == 57
    assert set(loaded["groups"]) == {"mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_other", "mmlu_social_sciences"}
    assert all(t.config.num_fewshot == 5 for t in loaded["tasks"].values())


# -------------------------------------------------------------------------------- adapters (full files)


def test_adapters_reproduce_the_hub_schema(benchmarks_dir):
    d = str(benchmarks_dir)
    arc = loaders.arc(d, "ARC-Easy")["test"]
    assert len(arc) == 2376 and arc[0]["answerKey"] == "A" and arc[0]["choices"]["label"] == ["A", "B", "C", "D"]
    hs = loaders.hellaswag(d)["validation"]
    assert len(hs) == 10042 and hs[0]["activity_label"] == "Roof shingle removal" and hs[0]["label"] == "3"
    assert len(hs[0]["endings"]) == 4
    assert len(loaders.piqa(d)["validation"]) == 1838
    assert len(loaders.winogrande(d)["validation"]) == 1267
    assert len(loaders.lambada(d)["test"]) == 5153
    bq = loaders.boolq(d)["validation"]
    assert len(bq) == 3270 and not bq[0]["question"].endswith("?") and "\nQuestion:" not in bq[0]["passage"]
    assert bq[0]["question"] == "does ethanol take more energy make that produces" and bq[0]["label"] == 0
    assert len(loaders.truthfulqa(d)["validation"]) == 817
    assert len(loaders.gsm8k(d)["test"]) == 1319
    mm = loaders.mmlu(d, "anatomy")
    assert (len(mm["dev"]), len(mm["validation"]), len(mm["test"])) == (5, 14, 135)
    assert mm["dev"][0]["answer"] == 3 and mm["dev"][0]["subject"] == "anatomy"
    wt = loaders.wikitext(d)["test"]
    assert len(wt) == 62 and wt[0]["page"].startswith(" = Robert Boulter = \n") and "\r" not in wt[0]["page"]


def test_mmlu_subject_list_matches_the_files(benchmarks_dir):
    files = {p.name.removesuffix("_test.csv") for p in (benchmarks_dir / "mmlu/test").glob("*_test.csv")}
    assert files == set(tasks.MMLU_SUBJECTS)


def test_unknown_task_names_the_closest(small_tasks, small_data_dir):
    from webllama.evalsuite.errors import UnknownTask

    tm, _ = small_tasks
    with pytest.raises(UnknownTask, match="arc_easy"):
        tasks.check_tasks(["arc_esay"], tm, small_data_dir)


def test_missing_file_is_a_one_line_error(tmp_path):
    from webllama.evalsuite.errors import DataMissing

    with pytest.raises(DataMissing, match="not found"):
        loaders.piqa(str(tmp_path))
    assert tasks.available(tmp_path) == []
    json.dumps(tasks.task_config(tasks.TASKS["piqa"], tmp_path, tasks.stock_tasks_dir()))
