"""Every built-in chat template renders the same two-turn conversation identically in Python
(transformers) and in the browser (@huggingface/jinja inside the engine)."""

from __future__ import annotations

import json
import shutil

import pytest
from webllama.converter import ConvertOptions, convert
from webllama.converter.chat_templates import TEMPLATES
from webllama.converter.customize import Customization
from webllama.converter.manifest import list_files, write_json_atomic
from webllama.converter.variants import parse_variants

from tests.web.conftest import load_bundle, open_eval

TWO_TURNS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And another one?"},
]


@pytest.fixture(scope="module")
def template_bundles(tmp_path_factory, stories_dir):
    """stories260K converted with --chat-template vicuna, then one copy per other template."""
    root = tmp_path_factory.mktemp("templates")
    first = root / "vicuna"
    convert(
        str(stories_dir),
        first,
        ConvertOptions(
            variants=parse_variants("q4"), progress=False, verify=False, customization=Customization(chat_template="vicuna")
        ),
    )
    for name, text in TEMPLATES.items():
        if name == "vicuna":
            continue
        dst = root / name
        shutil.copytree(first, dst)
        tc = json.loads((dst / "tokenizer_config.json").read_text())
        tc["chat_template"] = text
        (dst / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
        manifest = json.loads((dst / "manifest.json").read_text())
        manifest["files"] = list_files(dst)  # the engine checks every file's sha256
        write_json_atomic(dst / "manifest.json", manifest)
    return root


@pytest.mark.browser
def test_templates_render_identically_in_python_and_browser(template_bundles, serve, page):
    from transformers import AutoTokenizer

    server = serve(template_bundles)
    open_eval(page, server)
    for name in sorted(TEMPLATES):
        tok = AutoTokenizer.from_pretrained(template_bundles / name)
        assert tok.chat_template == TEMPLATES[name]
        want = tok.apply_chat_template(TWO_TURNS, tokenize=False, add_generation_prompt=True)
        load_bundle(page, name, device="wasm")
        got = page.evaluate("(m) => webllama.applyChatTemplate(m)", TWO_TURNS)
        assert got["text"] == want, (name, got["text"], want)
