"""Chat templates for sources that declare none (`--chat-template NAME|FILE`).

Each is the jinja string its model family publishes (tokenizer_config.json of the reference
checkpoints), so transformers (Python) and @huggingface/jinja (browser) render them identically.
"""

from __future__ import annotations

from pathlib import Path

from webllama.converter.errors import ConvertError

VICUNA_V11 = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}{% set loop_messages = messages[1:] %}"
    "{% else %}{{ 'A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user\\'s questions. ' }}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ALPACA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% set loop_messages = messages[1:] %}"
    "{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\\n\\n' }}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)

TEMPLATES: dict[str, str] = {"vicuna": VICUNA_V11, "llama2": LLAMA2, "llama3": LLAMA3, "chatml": CHATML, "alpaca": ALPACA}


def resolve_template(spec: str) -> str:
    """A template name from TEMPLATES, or a path to a .jinja/.txt file holding one."""
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    path = Path(spec)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if "{%" not in text and "{{" not in text:
            raise ConvertError(f"{path}: does not look like a jinja chat template (no {{% or {{{{)")
        return text
    raise ConvertError(f"--chat-template {spec!r}: neither a known template ({', '.join(TEMPLATES)}) nor a file")
