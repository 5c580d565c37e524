"""`ssd samples targets`: the sampling distributions of samples drawn without them, recomputed by
teacher forcing the sampling model.

- against the hf sampler: the same prompts sampled twice with the same seeds, once storing q
  (store_targets) and once not; the recomputed side files equal the stored ones at every sampled token.
  Both run the model in fp32 (a float32 copy of tiny-random), so they differ only by KV-cached decoding
  against one forward pass;
- the command refuses another model, samples that have their q, unfinished samples; resumes by shard;
- chunked teacher forcing equals one chunk;
- soft training reads the recomputed files: its first loss is CE(q, p_base) by teacher forcing.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfdistill.analyze import load_model
from selfdistill.config import TrainConfig
from selfdistill.manifest import atomic_write_json, load_manifest, read_jsonl
from selfdistill.sample import (
    RECOMPUTED_TARGETS,
    load_samples,
    sample,
    shard_files,
    shard_targets,
    targets_path,
    targets_source,
)
from selfdistill.targets import TargetsError, recompute_targets, replay
from selfdistill.train import prepare, train
from tests.test_soft import assert_targets_match, sample_config, soft_ce_by_teacher_forcing
from tests.test_train import REPLY, tiny_cfg, write_samples

TRUNCATION = {"temperature": 1.6, "top_k": 20, "top_p": 0.8, "min_p": 0.0}


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory, tiny_model) -> str:
    """tiny-random saved in float32: the hf sampler then decodes in fp32, as teacher forcing does."""
    path = tmp_path_factory.mktemp("fp32") / "model"
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, fp32_model) -> tuple[Path, Path]:
    """(samples with stored q, the same samples without), from one config apart from store_targets."""
    root = tmp_path_factory.mktemp("targets")
    (root / "a").mkdir(), (root / "b").mkdir()
    with_q = sample(sample_config(root / "a", model=fp32_model, store_targets=True, max_tokens=24))
    without = sample(sample_config(root / "b", model=fp32_model, store_targets=False, max_tokens=24))
    return with_q, without


@pytest.fixture(scope="module")
def recomputed(tmp_path_factory, sampled) -> Path:
    copy = tmp_path_factory.mktemp("recomputed") / "samples"
    shutil.copytree(sampled[1], copy)
    return recompute_targets(copy)


def test_recomputed_targets_equal_those_the_hf_sampler_stored(sampled, recomputed):
    with_q, _ = sampled
    stored_shards, recomputed_shards = shard_files(with_q), shard_files(recomputed)
    assert len(stored_shards) == len(recomputed_shards) == 2
    tokens = 0
    for stored_shard, recomputed_shard in zip(stored_shards, recomputed_shards, strict=True):
        records = read_jsonl(recomputed_shard)
        assert [r["reply_token_ids"] for r in records] == [r["reply_token_ids"] for r in read_jsonl(stored_shard)]
        for stored, ours in zip(shard_targets(stored_shard), shard_targets(recomputed_shard), strict=True):
            assert_targets_match(ours, [(ids.tolist(), probs.tolist()) for ids, probs in stored.rows()], atol=1e-5)
            tokens += len(ours)
    assert tokens == sum(r["reply_tokens"] for s in recomputed_shards for r in read_jsonl(s)) > 40
    record = json.loads((recomputed / RECOMPUTED_TARGETS).read_text())
    assert record["truncation"] == TRUNCATION and record["precision"] == "float32" and record["finished_at"]
    assert record["counts"]["reply_tokens"] == tokens and record["counts"]["sampled_outside_support"] == 0
    assert record["sessions"][0]["teacher_forced_tokens"] > tokens
    assert targets_source(recomputed) == "teacher forcing" and targets_source(with_q) == "sampling"
    assert [r["targets"].counts.tolist() for r in load_samples(recomputed, with_targets=True)[0]] == [
        r["targets"].counts.tolist() for r in load_samples(with_q, with_targets=True)[0]
    ]


def test_chunked_teacher_forcing_equals_one_pass(fp32_model, sampled):
    record = max((r for s in shard_files(sampled[1]) for r in read_jsonl(s)), key=lambda r: r["reply_tokens"])
    prompt = AutoTokenizer.from_pretrained(fp32_model)(record["prompt_text"], add_special_tokens=False).input_ids
    model = load_model(fp32_model)
    with torch.inference_mode():
        whole = replay(model, prompt, record["reply_token_ids"], TRUNCATION)
        chunked = replay(model, prompt, record["reply_token_ids"], TRUNCATION, chunk=5)
    assert len(whole) == record["reply_tokens"] > 10
    assert chunked.counts.tolist() == whole.counts.tolist() and chunked.ids.tolist() == whole.ids.tolist()
    assert chunked.probs == pytest.approx(whole.probs, abs=1e-6)


def test_a_rerun_redoes_only_the_shards_without_their_file(tmp_path, recomputed):
    copy = tmp_path / "samples"
    shutil.copytree(recomputed, copy)
    first, second = shard_files(copy)[:2]
    kept = targets_path(first).stat().st_mtime_ns
    expected = load_file(targets_path(second))
    targets_path(second).unlink()  # as a run killed while scoring shard 2 leaves it
    record = json.loads((copy / RECOMPUTED_TARGETS).read_text())
    atomic_write_json(copy / RECOMPUTED_TARGETS, {**record, "finished_at": None})
    assert targets_source(copy) is None
    recompute_targets(copy)
    assert targets_path(first).stat().st_mtime_ns == kept
    again = load_file(targets_path(second))  # the same arrays (the header's metadata order may differ)
    assert again.keys() == expected.keys() and all(np.array_equal(again[k], expected[k]) for k in expected)
    assert targets_source(copy) == "teacher forcing"
    assert len(json.loads((copy / RECOMPUTED_TARGETS).read_text())["sessions"]) == 2


def test_a_rerun_with_every_file_written_leaves_the_record_as_it_was(tmp_path, recomputed):
    copy = tmp_path / "samples"
    shutil.copytree(recomputed, copy)
    before = (copy / RECOMPUTED_TARGETS).read_text()
    recompute_targets(copy)
    assert (copy / RECOMPUTED_TARGETS).read_text() == before


def test_a_killed_run_keeps_the_time_of_the_shards_it_wrote(tmp_path, monkeypatch, sampled):
    """targets.json's session is rewritten after every shard, so a run killed mid-way (here: its second
    shard fails) still accounts for the first shard's samples and tokens."""
    import selfdistill.targets as targets_module

    copy = tmp_path / "samples"
    shutil.copytree(sampled[1], copy)
    first = read_jsonl(shard_files(copy)[0])
    write_targets, calls = targets_module.write_targets, []

    def killed_on_the_second_shard(*args):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        write_targets(*args)

    monkeypatch.setattr(targets_module, "write_targets", killed_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        recompute_targets(copy)
    record = json.loads((copy / RECOMPUTED_TARGETS).read_text())
    assert record["finished_at"] is None and len(record["sessions"]) == 1
    session = record["sessions"][0]
    assert session["samples"] == len(first) and "generated_tokens" not in session
    assert session["teacher_forced_tokens"] == sum(r["prompt_tokens"] + r["reply_tokens"] for r in first)
    monkeypatch.undo()
    recompute_targets(copy)
    record = json.loads((copy / RECOMPUTED_TARGETS).read_text())
    assert record["finished_at"] and [s["samples"] for s in record["sessions"]] == [
        len(first),
        sum(len(read_jsonl(shard)) for shard in shard_files(copy)[1:]),
    ]


def test_refusals_before_any_model_loads(tmp_path, tiny_model, sampled):
    with_q, without = sampled
    with pytest.raises(TargetsError, match="was sampled from .*only the sampling model"):
        recompute_targets(without, tiny_model)  # tiny-random in bf16: other weights than the fp32 copy sampled
    with pytest.raises(TargetsError, match="already holds the distributions"):
        recompute_targets(with_q)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(without, unfinished)
    manifest = load_manifest(unfinished)
    atomic_write_json(unfinished / "manifest.json", {**manifest, "finished_at": None})
    with pytest.raises(TargetsError, match="sampling did not finish"):
        recompute_targets(unfinished)
    greedy = tmp_path / "greedy"
    shutil.copytree(without, greedy)
    atomic_write_json(greedy / "manifest.json", {**manifest, "config": {**manifest["config"], "top_k": 0}})
    with pytest.raises(TargetsError, match="top_k > 0"):
        recompute_targets(greedy)
    assert not (greedy / RECOMPUTED_TARGETS).exists()


def test_soft_training_reads_recomputed_targets_written_replies_included(tmp_path, tiny_model):
    """Replies written here, not drawn from the model: their tokens mostly lie outside the model's
    top-20, which recomputed targets allow (the soft loss does not involve the sampled token)."""
    samples = write_samples(tmp_path / "samples", tiny_model, [REPLY] * 4)
    recompute_targets(samples)
    outside = json.loads((samples / RECOMPUTED_TARGETS).read_text())["counts"]["sampled_outside_support"]
    assert outside > 0
    prep = prepare(TrainConfig(model=tiny_model, samples=str(samples), objective="soft"))
    records, _ = load_samples(samples, with_targets=True)
    for example, r in zip(prep.examples, records, strict=True):
        targets = r["targets"]  # an end-of-turn appended after them gets a one-hot q
        assert example["target_counts"][example["prompt_len"] :][: len(targets)] == targets.counts.tolist()
        assert example["target_probs"][: len(targets.probs)] == pytest.approx(targets.probs.tolist())


@pytest.mark.integration
def test_soft_training_on_recomputed_targets_starts_at_the_teacher_forced_cross_entropy(tmp_path, tiny_model):
    samples = write_samples(tmp_path / "samples", tiny_model, [REPLY] * 4)
    recompute_targets(samples)
    records, _ = load_samples(samples, with_targets=True)
    train(tiny_cfg(samples, tmp_path / "train", objective="soft", max_steps=2, save_steps=10))
    with open(tmp_path / "train" / "loss.csv") as f:
        first = float(next(csv.DictReader(f))["loss"])
    assert first == pytest.approx(soft_ce_by_teacher_forcing(tiny_model, records), rel=1e-4)
    assert "samples_targets" in load_manifest(tmp_path / "train")["inputs"]
