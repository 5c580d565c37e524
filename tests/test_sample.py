"""`ssd sample`: records, filters, manifest, bad input, and resume after kill -9 (byte-identical)."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from selfdistill.config import SampleConfig
from selfdistill.decoding import request_seed
from selfdistill.generate import JOURNAL, Generator
from selfdistill.manifest import ManifestMismatch, load_manifest
from selfdistill.sample import (
    _drop_shortest,
    is_looping,
    load_samples,
    reply_flags,
    sample,
)

STATEMENTS = [
    "Return the sum of two integers a and b.",
    "Reverse a string s.",
    "Count the vowels in a string.",
    "Return the n-th Fibonacci number.",
    "Check whether n is prime.",
    "Return the maximum of a list.",
]


def prompts_file(tmp_path: Path, extra: list[str] = ()) -> Path:
    lines = [json.dumps({"id": f"p{i}", "question": s}) for i, s in enumerate(STATEMENTS)] + list(extra)
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, **kw) -> SampleConfig:
    if "prompts" not in kw:
        kw["prompts"] = str(prompts_file(tmp_path))
    base = SampleConfig(
        model="tiny-random",
        decontaminate=[],
        temperature=1.6,
        top_k=20,
        top_p=0.8,
        n=2,
        max_tokens=24,
        max_model_len=256,
        backend="hf",
        max_num_seqs=4,
        shard_size=2,
        output_dir=str(tmp_path / "out"),
    )
    return replace(base, **kw)


# ---------------------------------------------------------------------------- pure parts


def test_flags():
    assert reply_flags("", [1], "stop") == ["empty"]
    assert reply_flags("  return a + b  ", [1, 2], "stop") == ["stub"]
    assert reply_flags("```python\nprint(1)\n```", [1, 2, 3], "length") == ["truncated"]
    assert reply_flags("", [], "prompt_too_long") == ["prompt_too_long"]
    loop = [5, 6, 7] * 30
    assert is_looping(loop) and is_looping([9] * 64) and not is_looping([9] * 40)
    assert not is_looping(list(range(300)))
    assert reply_flags("a\nb", [1, 2] + loop, "length") == ["truncated", "looping"]
    assert reply_flags("a\nb", loop + [0], "stop") == ["looping"]  # the stop token after a loop


def test_drop_shortest_is_recomputed_from_scratch():
    records = [
        {"prompt_id": f"p{i}", "sample_index": 0, "reply_tokens": n, "flags": [], "keep": True}
        for i, n in enumerate([50, 10, 30, 10, 90])
    ]
    records.append({"prompt_id": "p9", "sample_index": 0, "reply_tokens": 0, "flags": ["empty"], "keep": False})
    assert _drop_shortest(records, 0.4)  # 40% of the 5 kept: the two 10-token replies
    assert [r["prompt_id"] for r in records if "shortest" in r["flags"]] == ["p1", "p3"]
    keep = [r["keep"] for r in records]
    _drop_shortest(records, 0.4)  # a rerun recomputes the same choice
    assert [r["keep"] for r in records] == keep == [True, False, True, False, True, False]
    assert _drop_shortest(records, 0.0) and all(r["keep"] for r in records[:5])


# ---------------------------------------------------------------------------- the stage (hf backend, tiny model)


def test_sample_records_manifest_and_bad_input(tmp_path):
    extra = [
        "{broken",
        json.dumps({"id": "long", "question": "word " * 400}),
        json.dumps({"id": "p0", "question": "A new statement under a taken id."}),
    ]
    prompts = prompts_file(tmp_path, extra)
    out = sample(config(tmp_path, prompts=str(prompts)))
    manifest = load_manifest(out)
    records = [
        json.loads(line)
        for shard in sorted((out / "shards").glob("*.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    assert len(records) == 7 * 2 and len(list((out / "shards").glob("*.jsonl"))) == 4
    assert [(r["prompt_id"], r["sample_index"]) for r in records] == [
        (f"p{i}", j) for i in range(6) for j in range(2)
    ] + [("long", 0), ("long", 1)]
    first = records[0]
    assert set(first) >= {
        "prompt_id",
        "sample_index",
        "seed",
        "messages",
        "prompt_text",
        "reply",
        "prompt_tokens",
        "reply_tokens",
        "finish_reason",
        "flags",
        "keep",
    }
    assert first["seed"] == request_seed(0, "p0", 0) and first["prompt_text"].endswith("<|im_start|>assistant\n")
    assert (
        first["messages"][1]["content"] == STATEMENTS[0]
        and first["reply_tokens"] == len(first["reply_token_ids"]) <= 24
    )
    long = [r for r in records if r["prompt_id"] == "long"]
    assert all(
        r["finish_reason"] == "prompt_too_long" and not r["keep"] and r["flags"] == ["prompt_too_long"] for r in long
    )
    # the manifest: effective params, template, tokenizer, sources, skips, errors with file:line, counts
    params = manifest["effective_params"]
    assert params["backend"] == "hf" and params["spec"]["temperature"] == 1.6 and params["spec"]["top_k"] == 20
    assert manifest["chat_template_sha256"] and "im_start" in manifest["chat_template"]
    assert manifest["tokenizer"]["eos_token"] == "<|im_end|>"
    errors = manifest["prompt_source"]["errors_first"]
    assert [e["where"] for e in errors] == [f"{prompts}:7", f"{prompts}:9"]
    assert manifest["skipped"] == [
        {
            "prompt_id": "long",
            "prompt_tokens": long[0]["prompt_tokens"],
            "reason": "prompt_too_long: no room in max_model_len",
        }
    ]
    counts = manifest["counts"]
    assert counts["samples"] == 14 and counts["prompt_too_long"] == 2 and counts["kept"] + counts["dropped"] == 14
    assert sum(b["samples"] for b in manifest["length_histogram"]) == 12
    kept, loaded = load_samples(out)
    assert kept == [r for r in records if r["keep"]] and loaded["finished_at"]
    # another config never mixes into the same directory
    with pytest.raises(ManifestMismatch, match="temperature"):
        sample(config(tmp_path, prompts=str(prompts), temperature=1.0))


def _ssd_sample(cfg: SampleConfig) -> subprocess.Popen:
    args = [
        f"{k}={v}"
        for k, v in [
            ("model", cfg.model),
            ("prompts", cfg.prompts),
            ("decontaminate", "[]"),
            ("n", cfg.n),
            ("max_tokens", cfg.max_tokens),
            ("max_model_len", cfg.max_model_len),
            ("backend", cfg.backend),
            ("max_num_seqs", cfg.max_num_seqs),
            ("shard_size", cfg.shard_size),
            ("output_dir", cfg.output_dir),
        ]
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "selfdistill", "sample", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_resume_after_kill_is_byte_identical(tmp_path):
    """kill -9 after the first shard, rerun the same command: the shards equal an uninterrupted run's.
    (max_num_seqs=4 is one shard's requests: the hf backend's stream finishes shards one by one.)"""
    whole, killed = (
        config(tmp_path, output_dir=str(tmp_path / "whole")),
        config(tmp_path, output_dir=str(tmp_path / "killed")),
    )
    assert _ssd_sample(whole).wait(timeout=600) == 0
    proc = _ssd_sample(killed)
    first = Path(killed.output_dir) / "shards" / "shard-00000.jsonl"
    deadline = time.time() + 600
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (Path(killed.output_dir) / "shards").glob("shard-*.jsonl"))
    assert done and len(done) < 3, f"the kill should land mid-run, found {done}"
    assert not load_manifest(killed.output_dir)["finished_at"]
    assert _ssd_sample(killed).wait(timeout=600) == 0
    names = sorted(p.name for p in (Path(whole.output_dir) / "shards").glob("*.jsonl"))
    assert names == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    for name in names:
        assert (Path(killed.output_dir) / "shards" / name).read_bytes() == (
            Path(whole.output_dir) / "shards" / name
        ).read_bytes()
    assert load_samples(killed.output_dir)[0] == load_samples(whole.output_dir)[0]
    assert len(load_manifest(killed.output_dir)["resumed_at"]) == 1


# ------------------------------------------------------------------ one stream per job (one hf engine for these tests)


def shard_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((Path(out) / "shards").iterdir())}


class CrashingStream:
    """A generator whose stream raises after `results` results (None: never), counting the requests it is asked for."""

    def __init__(self, generator, results: int | None = None):
        self.generator, self.results, self.requested = generator, results, []

    def __getattr__(self, name):
        return getattr(self.generator, name)

    stream_units = Generator.stream_units  # the stage's entry, which streams through the stream below

    def stream(self, requests, max_in_flight=None):
        self.requested.append(len(requests))
        for n, result in enumerate(self.generator.stream(requests, max_in_flight)):
            if n == self.results:
                raise KeyboardInterrupt("crash mid-stream")
            yield result


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, hf_generator) -> Path:
    """An uninterrupted run with short replies, the reference of the tests below."""
    tmp_path = tmp_path_factory.mktemp("short")
    return sample(config(tmp_path, max_tokens=8, output_dir=str(tmp_path / "whole")), generator=hf_generator)


@pytest.mark.parametrize("max_num_seqs", [1, 4, 64])
def test_records_do_not_depend_on_concurrency(tmp_path, hf_generator, short_run, max_num_seqs):
    out = sample(config(tmp_path, max_tokens=8, max_num_seqs=max_num_seqs), generator=hf_generator)
    assert shard_bytes(out) == shard_bytes(short_run)


def test_crash_mid_stream_then_rerun_loses_and_duplicates_nothing(tmp_path, hf_generator, short_run):
    """A crash after 6 of 12 results: the first shard (4 requests) is on disk, whole; the second's 2
    finished requests are in the journal. The rerun asks only for the 6 requests never finished."""
    cfg = config(tmp_path, max_tokens=8)
    crashing = CrashingStream(hf_generator, results=6)
    with pytest.raises(KeyboardInterrupt):
        sample(cfg, generator=crashing)
    out = Path(cfg.output_dir)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.jsonl"]  # no torn or temporary file
    assert shard_bytes(out)["shard-00000.jsonl"] == shard_bytes(short_run)["shard-00000.jsonl"]
    assert not load_manifest(out)["finished_at"] and len((out / JOURNAL).read_text().splitlines()) == 6
    resumed = CrashingStream(hf_generator)
    sample(cfg, generator=resumed)
    assert crashing.requested == [12] and resumed.requested == [6]
    assert shard_bytes(out) == shard_bytes(short_run) and not (out / JOURNAL).exists()
    assert load_samples(out)[0] == load_samples(short_run)[0]


# ---------------------------------------------------------------------------- vLLM (one engine for the module)


@pytest.fixture(scope="module")
def vllm_generator():
    pytest.importorskip("vllm")
    from selfdistill.generate import load_generator

    with load_generator("tiny-random", "vllm", max_model_len=256) as generator:
        yield generator


@pytest.mark.integration
def test_vllm_stage_with_a_shared_engine(tmp_path, vllm_generator):
    """The vLLM engine: explicit params, a too-long prompt skipped without aborting the batch, and a
    lost shard regenerated byte for byte by the same command."""
    prompts = prompts_file(tmp_path, [json.dumps({"id": "long", "question": "word " * 400})])
    cfg = config(tmp_path, prompts=str(prompts), backend="vllm", max_tokens=32)
    out = sample(cfg, generator=vllm_generator)
    params = load_manifest(out)["effective_params"]
    assert (
        params["generation_config"] == "vllm"
        and params["sampling_params"]["top_k"] == 20
        and params["sampling_params"]["top_p"] == 0.8
    )
    assert params["sampling_params"]["stop_token_ids"] == vllm_generator.stop_token_ids
    manifest = load_samples(out)[1]
    assert manifest["counts"]["samples"] == 14 and manifest["counts"]["prompt_too_long"] == 2
    shards = sorted((out / "shards").glob("*.jsonl"))
    before = {p.name: p.read_bytes() for p in shards}
    shards[1].unlink()
    sample(cfg, generator=vllm_generator)
    assert {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.jsonl"))} == before
    with pytest.raises(ValueError, match="holds"):
        sample(replace(cfg, model="smollm2-135m-instruct"), generator=vllm_generator)
