"""Fixtures for the evalsuite tests: a tiny random Llama as an HF dir, stories260K, the offline data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("WEBLLAMA_TEST_DATA", "/work/shared/data"))
BENCH = DATA / "benchmarks"
STORIES = DATA / "models" / "stories260K"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"offline data {path} not present")
    return path


@pytest.fixture(scope="session")
def bench_dir() -> Path:
    return _need(BENCH)


@pytest.fixture(scope="session")
def stories_dir() -> Path:
    return _need(STORIES)


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, stories_dir) -> Path:
    """A random tiny Llama (seeded) saved with save_pretrained, with the stories260K tokenizer (vocab 512)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from converter.sources import load_source

    out = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = load_source(str(stories_dir)).tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(cfg).eval().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def task_work_dir(tmp_path_factory, bench_dir):
    """A TaskManager over the offline tasks (built once; indexing is the slow part)."""
    from evalsuite import tasks

    work = tmp_path_factory.mktemp("tasks")
    tasks.quiet_index_logs()
    return tasks.task_manager(bench_dir, work), work
