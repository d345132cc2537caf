"""Field-mapping adapters: the offline benchmark files -> the Hugging Face hub schema of lm-eval's stock task.

Each loader reads the files of one benchmark under `data_dir` (the folder given with --data-dir or
$WEBLLAMA_DATA_DIR, laid out as the project's shared/data/benchmarks; its SOURCES.md names the files)
and returns a `datasets.DatasetDict` whose split names and columns are exactly those of the hub dataset
that the stock lm-eval YAML loads. The stock YAML, its `process_docs`, prompts, choices, filters and
metrics are then used unchanged: the generated task config only swaps the data source
(`custom_dataset` + `dataset_kwargs`) and blanks splits we do not have.

lm-eval calls a `custom_dataset` with the task's metadata merged into the keyword arguments, so every
loader takes `**_meta` and ignores it.

Known differences from the hub data are stated in each loader's docstring.
"""

from __future__ import annotations

import bz2
import csv
import json
from pathlib import Path

import datasets
from webllama.evalsuite.errors import DataMissing

# ---------------------------------------------------------------------------------------------------------
# helpers


def _path(data_dir: str | Path, rel: str) -> Path:
    path = Path(data_dir) / rel
    if not path.is_file():
        raise DataMissing(f"benchmark file {path} not found; pass --data-dir with the layout of SOURCES.md")
    return path


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _dd(**splits: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


# ---------------------------------------------------------------------------------------------------------
# loaders (one per benchmark); the name is referenced from the task table in evalsuite/tasks/__init__.py


def arc(data_dir: str, subset: str, **_meta) -> datasets.DatasetDict:
    """allenai/ai2_arc {subset}, test split only. Same rows and fields as the hub (AI2 jsonl, flattened).

    No train/validation split offline, so few-shot examples (only with --num-fewshot) come from test.
    """
    rows = _jsonl(_path(data_dir, f"arc/{subset}-Test.jsonl"))
    return _dd(
        test=[
            {
                "id": r["id"],
                "question": r["question"]["stem"],
                "choices": {
                    "text": [c["text"] for c in r["question"]["choices"]],
                    "label": [c["label"] for c in r["question"]["choices"]],
                },
                "answerKey": r["answerKey"],
            }
            for r in rows
        ]
    )


def hellaswag(data_dir: str, **_meta) -> datasets.DatasetDict:
    """Rowan/hellaswag validation split (10042 rows), rebuilt from the 6-line text format.

    Known difference: the text file has ctx_a and ctx_b already joined ("ctx"), so the adapter puts the
    whole context in ctx_a and leaves ctx_b empty. The stock process_docs computes
    `ctx_a + " " + ctx_b.capitalize()`; capitalize() also lower-cases the rest of ctx_b, which we cannot
    redo, so a few queries differ in letter case and scores are close to, not identical with, the hub's.
    """
    text = bz2.decompress(_path(data_dir, "hellaswag/hellaswag_val_full.txt.bz2").read_bytes())
    lines = text.decode("utf-8").split("\n")
    rows = []
    for i in range(0, len(lines) - 5, 6):
        head, label, *endings = lines[i : i + 6]
        activity, _, ctx = head.partition(": ")
        rows.append(
            {
                "ind": i // 6,
                "activity_label": activity,
                "ctx_a": ctx,
                "ctx_b": "",
                "ctx": ctx,
                "endings": endings,
                "label": label.strip(),
            }
        )
    return _dd(validation=rows)


def piqa(data_dir: str, **_meta) -> datasets.DatasetDict:
    """baber/piqa validation split: valid.jsonl joined with valid-labels.lst (identical to the hub)."""
    rows = _jsonl(_path(data_dir, "piqa/valid.jsonl"))
    labels = _lines(_path(data_dir, "piqa/valid-labels.lst"))
    if len(rows) != len(labels):
        raise DataMissing(f"piqa: {len(rows)} questions but {len(labels)} labels; the files do not match")
    return _dd(
        validation=[
            {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(lab)} for r, lab in zip(rows, labels, strict=True)
        ]
    )


def winogrande(data_dir: str, **_meta) -> datasets.DatasetDict:
    """allenai/winogrande winogrande_xl validation split (1267 rows, = dev.jsonl; identical to the hub)."""
    rows = _jsonl(_path(data_dir, "winogrande/dev.jsonl"))
    return _dd(
        validation=[{"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "answer": r["answer"]} for r in rows]
    )


def lambada(data_dir: str, **_meta) -> datasets.DatasetDict:
    """EleutherAI/lambada_openai default, test split (the OpenAI detokenized file; identical to the hub)."""
    return _dd(test=[{"text": r["text"]} for r in _jsonl(_path(data_dir, "lambada/lambada_test.jsonl"))])


def boolq(data_dir: str, **_meta) -> datasets.DatasetDict:
    """aps/super_glue boolq validation split (3270 rows), from llm-foundry's reformatted file.

    The file holds "Passage: P\\nQuestion: Q?"; the adapter splits it back into passage P and question Q
    (the hub's questions carry no "?"; the stock prompt adds it). gold 0/1 = no/yes = the hub's label.
    """
    rows = []
    for i, r in enumerate(_jsonl(_path(data_dir, "boolq/boolq.jsonl"))):
        passage, _, question = r["query"].rpartition("\nQuestion: ")
        passage = passage.removeprefix("Passage: ")
        question = question.rstrip().removesuffix("?")
        rows.append({"question": question, "passage": passage, "idx": i, "label": int(r["gold"])})
    return _dd(validation=rows)


def truthfulqa(data_dir: str, **_meta) -> datasets.DatasetDict:
    """truthfulqa/truthful_qa multiple_choice, validation split (817 rows; identical to the hub)."""
    rows = json.loads(_path(data_dir, "truthfulqa/validation.json").read_text(encoding="utf-8"))
    return _dd(
        validation=[{"question": r["question"], "mc1_targets": r["mc1_targets"], "mc2_targets": r["mc2_targets"]} for r in rows]
    )


def gsm8k(data_dir: str, **_meta) -> datasets.DatasetDict:
    """openai/gsm8k main: test split, plus train when gsm8k/train.jsonl exists.

    Known difference: the shared data has no train split, so the 5 few-shot examples are drawn from the
    test split (lm-eval's fallback: random with the fixed few-shot seed, never the evaluated question
    itself) instead of from train. Scores are therefore not comparable with published gsm8k numbers.
    """
    splits = {"test": _jsonl(_path(data_dir, "gsm8k/test.jsonl"))}
    train = Path(data_dir) / "gsm8k/train.jsonl"
    if train.is_file():
        splits["train"] = _jsonl(train)
    return _dd(**{k: [{"question": r["question"], "answer": r["answer"]} for r in v] for k, v in splits.items()})


def _is_title(line: str) -> bool:
    """A top-level wikitext heading: ' = Title = ' (not ' = = Section = = ')."""
    rline = line.replace("= = =", "===").replace("= =", "==").strip()
    return rline.startswith("= ") and rline.endswith(" =")


def wikitext(data_dir: str, **_meta) -> datasets.DatasetDict:
    """EleutherAI/wikitext_document_level wikitext-2-raw-v1, test split: one "page" per article.

    Pages are cut at top-level headings as the hub's builder does. Known difference: the shared file has
    its empty lines dropped (and CRLF endings, stripped here), so each page lacks the blank lines of the
    hub's page text: token counts and byte counts are slightly lower, and word/byte perplexity are close
    to, not identical with, published lm-eval wikitext numbers.
    """
    lines = _path(data_dir, "wikitext2/wiki.test.raw").read_text(encoding="utf-8").replace("\r", "").split("\n")
    pages, current = [], []
    for line in lines:
        if _is_title(line) and current:
            pages.append("\n".join(current) + "\n")
            current = []
        if line:
            current.append(line)
    if current:
        pages.append("\n".join(current) + "\n")
    return _dd(test=[{"page": p} for p in pages])


def _mmlu_rows(path: Path, subject: str) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            {"question": q, "subject": subject, "choices": [a, b, c, d], "answer": "ABCD".index(ans.strip())}
            for q, a, b, c, d, ans in csv.reader(fh)
        ]


def mmlu(data_dir: str, subject: str, **_meta) -> datasets.DatasetDict:
    """cais/mmlu {subject}: dev (few-shot, first 5), validation and test splits (identical to the hub)."""
    return _dd(
        **{
            split: _mmlu_rows(_path(data_dir, f"mmlu/{folder}/{subject}_{folder}.csv"), subject)
            for split, folder in (("dev", "dev"), ("validation", "val"), ("test", "test"))
        }
    )
