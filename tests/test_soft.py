"""Soft targets (beyond the paper): the sampler stores, per reply token, the truncated distribution q it
was drawn from; `train.objective: soft` minimises CE(q, p) over it.

- the stored q is generate.truncate_logits's distribution on the same logits (hf backend, and vLLM's
  processed logprobs under the flock);
- the chunked soft loss against a hand computation, and its gradient against full-vocabulary autograd;
- a real soft training run on the tiny model: its first loss is CE(q, p_base) computed here by teacher
  forcing, padded and padding-free alike. (The random tiny model's own replies are one-line stubs, which
  sampling drops, so training runs on written samples with made-up distributions in the stored format.)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from selfdistill.config import SampleConfig, TrainConfig, load_run_config
from selfdistill.generate import Completion, Targets, truncate_logits, truncated_support
from selfdistill.manifest import load_manifest, read_jsonl
from selfdistill.pipeline import Stages
from selfdistill.sample import load_samples, sample, shard_files, shard_targets, targets_path, write_targets
from selfdistill.train import TrainError, prepare, soft_cross_entropy, train
from tests.test_train import REPLY, write_samples

T_TRAIN, TOP_K, TOP_P = 1.6, 20, 0.8
STATEMENTS = [
    "Return the sum of two integers a and b.",
    "Reverse a string s.",
    "Count the vowels in a string.",
    "Check whether n is prime.",
]


def sample_config(tmp_path: Path, **kw) -> SampleConfig:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "question": s}) + "\n" for i, s in enumerate(STATEMENTS)))
    base = SampleConfig(
        model="tiny-random",
        prompts=str(prompts),
        decontaminate=[],
        temperature=T_TRAIN,
        top_k=TOP_K,
        top_p=TOP_P,
        n=2,
        max_tokens=16,
        max_model_len=256,
        backend="hf",
        shard_size=2,
        store_targets=True,
        output_dir=str(tmp_path / "samples"),
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def soft_samples(tmp_path_factory) -> Path:
    """8 replies of the tiny model (hf backend) with their stored distributions."""
    return sample(sample_config(tmp_path_factory.mktemp("soft")))


def every_record(samples: Path) -> list[dict]:
    """All records, dropped ones included, each with its stored distributions."""
    return [
        {**r, "targets": t}
        for shard in shard_files(samples)
        for r, t in zip(read_jsonl(shard), shard_targets(shard), strict=True)
    ]


def teacher_forced_logits(model_path: str, record: dict) -> torch.Tensor:
    """The model's logits at each reply position (the ones that predicted the reply's tokens), fp32."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompt = tokenizer(record["prompt_text"], add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + record["reply_token_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(record["reply_token_ids"])]


def assert_targets_match(stored: Targets, expected: list[tuple[list[int], list[float]]], atol: float) -> None:
    """Same survivors with the same probabilities, except that where tokens tie exactly at the top-k or
    top-p boundary (the random model's bf16 weights make exact ties common), which of them survives is
    the sort's choice: a token kept in place of another must have its probability."""
    assert len(stored) == len(expected)
    for t, ((ids, probs), (want_ids, want_probs)) in enumerate(zip(stored.rows(), expected, strict=True)):
        got, want = dict(zip(ids.tolist(), probs.tolist(), strict=True)), dict(zip(want_ids, want_probs, strict=True))
        assert sorted(got.values()) == pytest.approx(sorted(want.values()), abs=atol), f"token {t}"
        assert [got[i] for i in want if i in got] == pytest.approx([want[i] for i in want if i in got], abs=atol), (
            f"token {t}"
        )
        swapped_in, swapped_out = (
            sorted(got[i] for i in set(got) - set(want)),
            sorted(want[i] for i in set(want) - set(got)),
        )
        assert swapped_in == pytest.approx(swapped_out, abs=atol), f"token {t}: survivors differ beyond a tie"
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- storing q (sample)


def test_targets_round_trip_through_the_journal_and_split_by_reply(tmp_path):
    a = Targets.from_rows([([5, 7], [0.75, 0.25]), ([3], [1.0])])
    b = Targets.from_rows([([9, 1, 2], [0.5, 0.3, 0.2])])
    completion = Completion("x", [5, 3], 10, "stop", a)
    back = Completion.from_json(json.loads(json.dumps(completion.to_json())))
    assert back.targets.rows()[0][0].tolist() == [5, 7] and back.targets.probs.tolist() == [0.75, 0.25, 1.0]
    left, right = Targets.concat([a, b]).split([2, 1])
    assert left.ids.tolist() == [5, 7, 3] and right.ids.tolist() == [9, 1, 2] and right.counts.tolist() == [3]
    with pytest.raises(ValueError, match="top_k > 0"):
        sample(sample_config(tmp_path, top_k=0))  # before any model loads


def test_hf_targets_are_truncate_logits_of_the_logits_each_token_was_drawn_from(tiny_model):
    """The hf backend's stored q at each step is truncate_logits on the very logits the model produced
    there (observed on the model's forward)."""
    from selfdistill.generate import SamplingSpec, load_generator

    with load_generator(tiny_model, "hf", max_model_len=256) as generator:
        seen = []
        forward = generator.model.forward

        def observed(*args, **kwargs):
            out = forward(*args, **kwargs)
            seen.append(out.logits[:, -1].detach().clone())
            return out

        generator.model.forward = observed
        prompt = generator.chat_prompt([{"role": "user", "content": STATEMENTS[0]}])
        ((completion,),) = generator.generate(
            [prompt], SamplingSpec(T_TRAIN, TOP_K, TOP_P, max_tokens=12, targets=True), seeds=[3]
        )
    assert len(completion.targets) == len(completion.token_ids) == 12
    expected = [truncated_support(truncate_logits(logits, T_TRAIN, TOP_K, TOP_P))[0] for logits in seen[:12]]
    assert_targets_match(completion.targets, expected, atol=1e-6)
    for token, (ids, _) in zip(completion.token_ids, completion.targets.rows(), strict=True):
        assert token in ids.tolist()


def test_the_stage_stores_each_tokens_distribution_beside_its_shard(soft_samples):
    records, manifest = every_record(soft_samples), load_manifest(soft_samples)
    assert sum(r["reply_tokens"] for r in records) > 40
    for r in records:
        assert len(r["targets"]) == r["reply_tokens"]
        for token, (ids, probs) in zip(r["reply_token_ids"], r["targets"].rows(), strict=True):
            assert token in ids.tolist() and len(ids) <= TOP_K and probs.sum() == pytest.approx(1.0, abs=1e-5)
            assert (np.diff(probs) <= 0).all()  # most likely first
    cost = manifest["counts"]["targets"]
    assert cost["reply_tokens"] == sum(r["reply_tokens"] for r in records)
    assert cost["file_bytes"] == sum(targets_path(s).stat().st_size for s in shard_files(soft_samples))
    assert 1 <= cost["mean_survivors"] <= TOP_K


def test_a_shard_without_its_targets_file_is_refused_on_rerun(tmp_path, soft_samples):
    import shutil

    copy = tmp_path / "samples"
    shutil.copytree(soft_samples, copy)
    targets_path(shard_files(copy)[0]).unlink()
    with pytest.raises(FileNotFoundError, match="targets.safetensors"):
        every_record(copy)


@pytest.mark.integration
def test_vllm_stores_its_processed_distributions(tmp_path, tiny_model):
    """vLLM's processed logprobs (after temperature, top-k and top-p, renormalised) are the stored q: on
    the tokens both keep, the same probabilities as truncate_logits on transformers' teacher-forced
    logits. The survivor sets themselves often differ by a token: the random model's distributions are
    nearly flat, so the two engines' small logit differences move tokens across the top-p boundary."""
    out = sample(sample_config(tmp_path, backend="vllm"))
    records, manifest = every_record(out), load_manifest(out)
    assert manifest["effective_params"]["logprobs_mode"] == "processed_logprobs"
    for r in records:
        expected = truncated_support(truncate_logits(teacher_forced_logits(tiny_model, r), T_TRAIN, TOP_K, TOP_P))
        for (ids, probs), (want_ids, want_probs) in zip(r["targets"].rows(), expected, strict=True):
            got = dict(zip(ids.tolist(), probs.tolist(), strict=True))
            assert probs.sum() == pytest.approx(1.0, abs=1e-4) and len(got) <= TOP_K
            # on the tokens both keep, renormalised there: one survivor more or less rescales all the others
            common = [i for i in want_ids if i in got]
            ours, theirs = (
                np.array([got[i] for i in common]),
                np.array([p for i, p in zip(want_ids, want_probs, strict=True) if i in got]),
            )
            assert ours / ours.sum() == pytest.approx(theirs / theirs.sum(), abs=2e-3)
        for token, (ids, _) in zip(r["reply_token_ids"], r["targets"].rows(), strict=True):
            assert token in ids.tolist()


# ---------------------------------------------------------------- the loss


def test_soft_cross_entropy_by_hand():
    """Two positions, a 3-token vocabulary, hidden size 2. Logits: h1 W^T = [1, 0, 1], h2 W^T = [0, 2, 2].
    Position 1, q = {0: 0.75, 1: 0.25}: logsumexp = log(2e + 1) = 1.861995, so
        CE = 0.75 (1.861995 - 1) + 0.25 (1.861995 - 0) = 1.111995.
    Position 2, q = {2: 1} (one-hot, as on an appended end-of-turn): logsumexp = log(1 + 2e^2) = 2.758624,
        CE = 2.758624 - 2 = 0.758624.
    Sum 1.870618."""
    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    ids = torch.tensor([[0, 1], [2, 0]])  # the second row's second entry is padding (probability 0)
    probs = torch.tensor([[0.75, 0.25], [1.0, 0.0]])
    for chunk in (1, 2, 256):
        assert soft_cross_entropy(hidden, weight, None, ids, probs, chunk=chunk).item() == pytest.approx(
            1.870618, abs=1e-6
        )
    loss = soft_cross_entropy(hidden, weight, None, ids, probs, chunk=1)
    loss.backward()
    chunked = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad, weight.grad = None, None
    full = (hidden @ weight.T).log_softmax(-1)  # the full-vocabulary reference
    (-(probs * full.gather(-1, ids)).sum()).backward()
    assert torch.allclose(chunked[0], hidden.grad) and torch.allclose(chunked[1], weight.grad)
    # d CE / d logits = softmax - q: at position 1, softmax = (e, 1, e) / (2e + 1)
    e = math.e
    assert chunked[0][0].tolist() == pytest.approx(
        [e / (2 * e + 1) - 0.75 + e / (2 * e + 1), 1 / (2 * e + 1) - 0.25 + e / (2 * e + 1)], abs=1e-6
    )


def test_soft_training_without_stored_targets_is_refused(tmp_path, tiny_model):
    samples = write_samples(tmp_path / "hard", tiny_model, [REPLY] * 2)
    with pytest.raises(TrainError, match="store_targets=true"):
        prepare(TrainConfig(model="tiny-random", samples=str(samples), objective="soft"))


def test_the_soft_objective_turns_on_stored_targets_in_a_run():
    hard = Stages.of(load_run_config("smollm2-135m-instruct"))
    soft = Stages.of(load_run_config("smollm2-135m-instruct", overrides=["train.objective=soft"]))
    assert not hard.sample().store_targets and soft.sample().store_targets
    assert hard.dirs["samples"] != soft.dirs["samples"]


def write_soft_samples(path: Path, model_path: str, replies: int = 8) -> Path:
    """A samples directory with stored distributions: reply token t of sample i has q = 0.6 on itself and
    0.3 / 0.1 on two other tokens (a one-hot q on every third token), in the side file `ssd sample` writes."""
    write_samples(path, model_path, [REPLY] * replies, store_targets=True)
    (shard,) = shard_files(path)
    records = read_jsonl(shard)
    targets = [
        Targets.from_rows(
            ([token], [1.0]) if t % 3 == 2 else ([token, 100 + t + i, 7 * t + 1], [0.6, 0.3, 0.1])
            for t, token in enumerate(r["reply_token_ids"])
        )
        for i, r in enumerate(records)
    ]
    write_targets(shard, records, targets)
    return path


def soft_ce_by_teacher_forcing(model_path: str, records: list[dict]) -> float:
    """Mean over reply tokens of -sum_v q(v) log p(v), p the base model at T=1."""
    total, tokens = 0.0, 0
    for r in records:
        log_p = teacher_forced_logits(model_path, r).log_softmax(-1)
        for t, (ids, probs) in enumerate(r["targets"].rows()):
            total -= float((torch.from_numpy(probs) * log_p[t, torch.from_numpy(ids).long()]).sum())
            tokens += 1
    return total / tokens


@pytest.mark.integration
@pytest.mark.parametrize("packing", [False, True])
def test_soft_training_starts_at_the_teacher_forced_cross_entropy(tmp_path, tiny_model, packing):
    """One global batch of all 8 samples: the first logged loss is CE(q, p_base) over every reply token
    (the stop token included), computed here by teacher forcing; training lowers it."""
    samples = write_soft_samples(tmp_path / "samples", tiny_model)
    records, _ = load_samples(samples, with_targets=True)
    expected = soft_ce_by_teacher_forcing(tiny_model, records)
    cfg = TrainConfig(
        model="tiny-random",
        samples=str(samples),
        output_dir=str(tmp_path / "train"),
        objective="soft",
        global_batch_size=len(records),
        per_device_batch_size=4,
        learning_rate=3e-3,
        min_learning_rate=3e-4,
        warmup_ratio=0.0,
        max_steps=4,
        save_steps=10,
        packing=packing,
    )
    train(cfg)
    with open(tmp_path / "train" / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["loss"]) == pytest.approx(expected, rel=1e-4)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[0]["target_entropy"]) < float(rows[0]["loss"])  # CE(q, p) = H(q) + KL(q || p)
    assert load_manifest(tmp_path / "train")["config"]["objective"] == "soft"
    assert np.isfinite([float(r["loss"]) for r in rows]).all()
