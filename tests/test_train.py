"""The training stage: faithful examples (template, prompt tokens, stop token in the loss), length
accounting, padding-free packing, resume after kill -9, 2 processes == 1 process, LoRA merge.

Sample directories are written here in `ssd sample`'s exact format (RunDir manifest + shards), from
the real tokenizer; one integration test uses the real `ssd sample` output."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfdistill.chat import chat_prompt
from selfdistill.config import SampleConfig, TrainConfig, fingerprint_dict
from selfdistill.manifest import RunDir, atomic_write_jsonl, load_manifest, weights_sha256
from selfdistill.train import (
    COMPLETE,
    TrainError,
    accumulation_steps,
    build_examples,
    build_trainer,
    end_of_turn_ids,
    export_dtype,
    length_plan,
    optimizer_steps,
    prepare,
    train,
    update_fidelity,
    warmup_steps,
)

REPLY = "```python\nprint(42)\n```"  # every training reply ends here


def write_samples(
    path: Path,
    model_path: str,
    replies: list[str],
    finish: list[str] | None = None,
    template_from: str | None = None,
    store_targets: bool = False,
) -> Path:
    """A finished `ssd sample` directory: prompts rendered with `template_from`'s chat template (default:
    the model's own), replies with their token ids, ending in the stop token when finish is "stop".
    `store_targets`: the manifest says so; the caller writes the targets files."""
    tokenizer = AutoTokenizer.from_pretrained(template_from or model_path)
    run = RunDir.open(
        path, "sample", SampleConfig(model=model_path, output_dir=str(path), store_targets=store_targets)
    )
    records = []
    for i, reply in enumerate(replies):
        messages = [
            {"role": "system", "content": "Write Python."},
            {"role": "user", "content": f"Problem {i}: print {i * 7}."},
        ]
        prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        reason = finish[i] if finish else "stop"
        ids = tokenizer(reply, add_special_tokens=False).input_ids + (
            [tokenizer.eos_token_id] if reason == "stop" else []
        )
        records.append({"prompt_id": f"p{i}", "sample_index": 0, "seed": i, "messages": messages,
                        "prompt_text": prompt_text, "reply": reply, "reply_token_ids": ids,
                        "prompt_tokens": len(tokenizer(prompt_text, add_special_tokens=False).input_ids),
                        "reply_tokens": len(ids), "finish_reason": reason, "flags": [], "keep": True})  # fmt: skip
    atomic_write_jsonl(path / "shards" / "shard-00000.jsonl", records)
    template = tokenizer.chat_template
    run.finish(
        chat_template=template,
        chat_template_sha256=hashlib.sha256(template.encode()).hexdigest(),
        counts={"samples": len(records)},
    )
    return path


def tiny_cfg(samples: Path, out: Path, **overrides) -> TrainConfig:
    settings = {"model": "tiny-random", "samples": str(samples), "output_dir": str(out), "global_batch_size": 4,
                "per_device_batch_size": 2, "learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_ratio": 0.0,
                "max_steps": 4, "save_steps": 2}  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def losses(out: Path, column: str = "loss") -> list[float]:
    with open(out / "loss.csv") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def samples(tmp_path_factory, tiny_model) -> Path:
    return write_samples(tmp_path_factory.mktemp("samples") / "s", tiny_model, [REPLY] * 16)


# ---------------------------------------------------------------- examples: fast


def test_end_of_turn_is_the_templates_stop_token(tiny_model, qwen_model):
    for path in (tiny_model, qwen_model):
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert end_of_turn_ids(tokenizer, {tokenizer.eos_token_id}) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_examples_are_the_sampled_prompt_then_the_generated_reply(tmp_path, tiny_model):
    from selfdistill.sample import load_samples

    path = write_samples(tmp_path / "s", tiny_model, [REPLY, "```python\nwhile True:"], finish=["stop", "length"])
    records, _ = load_samples(path)
    records.append({**records[0], "reply_token_ids": None})  # another tool's record: reply text only
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    eos = tokenizer.eos_token_id
    examples, counts = build_examples(records, tokenizer, [eos], {eos}, path)
    for example, record in zip(examples, records, strict=True):
        prompt = tokenizer(record["prompt_text"], add_special_tokens=False).input_ids
        reply = tokenizer(record["reply"], add_special_tokens=False).input_ids
        stop = [eos] if record["finish_reason"] == "stop" else []
        assert example["input_ids"] == prompt + reply + stop
        assert example["completion_mask"] == [0] * len(prompt) + [1] * (len(reply) + len(stop))
    assert examples[1]["input_ids"][-1] != eos  # cut by max_tokens: the model never stopped there
    assert counts["no_stop_token_finish_length"] == 1


def test_samples_with_another_chat_template_are_refused(tmp_path, tiny_model, qwen_model):
    path = write_samples(tmp_path / "s", tiny_model, [REPLY] * 2, template_from=qwen_model)
    with pytest.raises(TrainError) as e:
        train(tiny_cfg(path, tmp_path / "out"))
    message = str(e.value)
    qwen_sha = hashlib.sha256(AutoTokenizer.from_pretrained(qwen_model).chat_template.encode()).hexdigest()
    tiny_sha = hashlib.sha256(AutoTokenizer.from_pretrained(tiny_model).chat_template.encode()).hexdigest()
    assert "chat template mismatch" in message and qwen_sha in message and tiny_sha in message and str(path) in message
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_prompts_with_a_pinned_date_train_on_another_day(harmony_tokenizer, clock, tmp_path):
    """GPT-OSS's template stamps a date: samples made one day are rendered the same the next day from the
    chat template arguments the samples' manifest records; without them they would not match."""
    messages = [{"role": "user", "content": "Print 42."}]
    args = {"date": "2026-04-01", "reasoning_effort": "high"}
    clock("2026-01-01")
    prompt_text = chat_prompt(harmony_tokenizer, messages, **args)
    ids = harmony_tokenizer(REPLY, add_special_tokens=False).input_ids
    record = {
        "prompt_id": "p0",
        "sample_index": 0,
        "messages": messages,
        "prompt_text": prompt_text,
        "reply": REPLY,
        "reply_token_ids": ids,
        "prompt_tokens": len(harmony_tokenizer(prompt_text, add_special_tokens=False).input_ids),
        "finish_reason": "length",
    }
    clock("2026-01-02")
    (example,), _ = build_examples([record], harmony_tokenizer, [0], {0}, tmp_path, args)
    assert example["input_ids"][-len(ids) :] == ids
    with pytest.raises(TrainError, match="differs from its messages"):
        build_examples([record], harmony_tokenizer, [0], {0}, tmp_path)


def test_prompt_tokens_must_match_sampling(tmp_path, tiny_model):
    from selfdistill.sample import load_samples

    records, _ = load_samples(write_samples(tmp_path / "s", tiny_model, [REPLY]))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(TrainError, match="tokenize to a different length"):
        build_examples(
            [{**records[0], "prompt_tokens": records[0]["prompt_tokens"] + 1}], tokenizer, [2], {2}, tmp_path
        )
    with pytest.raises(TrainError, match="differs from its messages"):
        build_examples(
            [{**records[0], "prompt_text": "<|im_start|>" + records[0]["prompt_text"]}], tokenizer, [2], {2}, tmp_path
        )
    with pytest.raises(TrainError, match="'reply' is missing"):
        build_examples([{k: v for k, v in records[0].items() if k != "reply"}], tokenizer, [2], {2}, tmp_path)


def test_holdout_sets_aside_one_sample_of_each_chosen_prompt(tmp_path, tiny_model):
    samples = write_samples(tmp_path / "s", tiny_model, [f"print({i})" for i in range(6)])
    prep = prepare(tiny_cfg(samples, tmp_path / "t", holdout=2))
    assert len(prep.holdout) == 2 and len(prep.examples) == 4
    assert prep.holdout == prepare(tiny_cfg(samples, tmp_path / "t", holdout=2)).holdout  # seeded
    assert prep.holdout != prepare(tiny_cfg(samples, tmp_path / "t", holdout=2, seed=1)).holdout
    held = {int(pid[1:]) for pid, _ in prep.holdout}
    trained = [tokenizer_text(tiny_model, e) for e in prep.examples]
    assert all(f"print({i})" not in t for i in held for t in trained) and len(trained) == 4
    assert len(prepare(tiny_cfg(samples, tmp_path / "t")).examples) == 6
    with pytest.raises(TrainError, match="holdout 6: .* has 6 prompts with kept samples; hold out 0 to 5"):
        prepare(tiny_cfg(samples, tmp_path / "t", holdout=6))
    assert "holdout" not in fingerprint_dict(TrainConfig())  # the default keeps every existing stage hash


def tokenizer_text(model_path: str, example: dict) -> str:
    return AutoTokenizer.from_pretrained(model_path).decode(example["input_ids"])


def test_max_length_comes_from_the_data_and_never_truncates():
    examples = [{"input_ids": [1] * n, "completion_mask": [0] + [1] * (n - 1), "prompt_len": 1} for n in (5, 9, 20)]
    kept, max_length, stats = length_plan(examples, None)
    assert (len(kept), max_length, stats["dropped_too_long"]) == (3, 20, 0)
    kept, max_length, stats = length_plan(examples, 10)
    assert [len(e["input_ids"]) for e in kept] == [5, 9] and stats["dropped_too_long"] == 1  # dropped whole, loudly
    with pytest.raises(TrainError, match="shorter than every example"):
        length_plan(examples, 4)


def test_global_batch_is_per_device_times_accumulation_times_processes():
    assert accumulation_steps(TrainConfig(global_batch_size=32, per_device_batch_size=4), processes=2) == 4
    with pytest.raises(TrainError, match="not a multiple"):
        accumulation_steps(TrainConfig(global_batch_size=32, per_device_batch_size=4), processes=3)


def test_training_length_in_steps_or_epochs():
    """The paper trains a fixed number of steps with a fixed warmup (instruct: 2,500 and 250); without
    them, epochs over the examples and a warmup share rounded down."""
    paper = TrainConfig(max_steps=2500, warmup_steps=250)
    assert optimizer_steps(paper, examples=10_000) == 2500 and warmup_steps(paper, 2500) == 250
    epoch = TrainConfig(num_train_epochs=1, warmup_ratio=0.05)
    assert optimizer_steps(epoch, examples=100) == 4 and warmup_steps(epoch, 4) == 0
    with pytest.raises(TrainError, match="warmup_steps 250 leaves none of the 200"):
        warmup_steps(
            TrainConfig(warmup_steps=250), 200
        )  # 200 steps from the epochs (a warmup over max_steps fails at load)


# ---------------------------------------------------------------- the stop token is in the loss


@pytest.mark.parametrize("packing", [False, True])
def test_stop_token_is_in_the_loss_even_when_pad_is_eos(tmp_path, samples, tiny_model, packing):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # SmolLM2's tokenizer: the case that bites (trl#1623)
    cfg = tiny_cfg(samples, tmp_path, per_device_batch_size=4, packing=packing)
    trainer, _ = build_trainer(cfg, prepare(cfg), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    eos = tokenizer.eos_token_id
    labels, ids = batch["labels"].flatten(), batch["input_ids"].flatten()
    stops = (ids == eos).nonzero().flatten().tolist()
    reply_ends = [
        i for i in stops if i > 0 and ids[i - 1] != eos and labels[i - 1] != -100
    ]  # eos right after a reply token
    assert len(reply_ends) == 4  # one stop token per example in the batch, each with its label
    assert all(labels[i] == eos for i in reply_ends)
    if not packing:
        assert (
            batch["labels"][batch["attention_mask"] == 0] == -100
        ).all()  # padding is masked by its label, not by its id


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_attend_only_within_their_example(tiny_model, attention):
    """Padding-free packing is correct only if the attention kernel restarts at every position-id reset."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention).eval()
    torch.manual_seed(0)
    seqs = [torch.randint(3, 1000, (n,)) for n in (7, 12, 5)]
    with torch.no_grad():
        separate = torch.cat([model(input_ids=s[None]).logits[0] for s in seqs])
        positions = torch.cat([torch.arange(len(s)) for s in seqs])[None]
        # use_cache=False, as in training (TRL sets it): with a KV cache transformers skips packed-sequence
        # detection and the examples would attend to each other
        packed = model(input_ids=torch.cat(seqs)[None], position_ids=positions, use_cache=False).logits[0]
    torch.testing.assert_close(packed, separate, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- training end to end (tiny-random)


def test_a_finished_directory_is_returned_for_its_own_config_only(tmp_path):
    """No samples, no model: a finished directory is never trained again, and never passed off as another config's."""
    from selfdistill.manifest import ManifestMismatch

    cfg = TrainConfig(samples=str(tmp_path / "samples"), output_dir=str(tmp_path / "train"))
    RunDir.open(cfg.output_dir, "train", cfg, {"samples_fingerprint": "f"}).finish(
        model_dir=str(tmp_path / "train" / "model")
    )
    assert train(replace(cfg, save_steps=1)) == tmp_path / "train" / "model"
    with pytest.raises(ManifestMismatch, match=r"config.learning_rate: 5e-06 -> 0.0001"):
        train(replace(cfg, learning_rate=1e-4))
    with pytest.raises(ManifestMismatch, match=r"config.samples: .* -> 'other-samples'"):
        train(replace(cfg, samples="other-samples"))


def test_export_keeps_the_update_or_writes_float32():
    """Rounding fp32 master weights to bf16 returns a weight moved by less than half a bf16 step to the
    base value: such an update is lost (cosine 0), and auto exports float32; a large update survives."""
    g = torch.Generator().manual_seed(0)
    base = {"w": (1 + torch.rand(64, 64, generator=g)).to(torch.bfloat16)}  # magnitudes in [1, 2): bf16 step 2^-7
    for step, kept in ((1e-4, False), (0.05, True)):
        trained = {"w": base["w"].float() + step * torch.randn(64, 64, generator=g)}
        fidelity = update_fidelity(trained, base.items(), torch.bfloat16)
        exported = trained["w"].to(torch.bfloat16).double() - base["w"].double()
        update = trained["w"].double() - base["w"].double()
        assert fidelity["cosine"] == pytest.approx(
            float((update * exported).sum() / (update.norm() * exported.norm())) if exported.any() else 0.0
        )
        assert (fidelity["cosine"] > 0.99) == kept and (fidelity["cosine"] < 0.1) == (not kept)
        assert export_dtype("auto", torch.bfloat16, fidelity) == (torch.bfloat16 if kept else torch.float32)
        assert (
            export_dtype("base", torch.bfloat16, fidelity) == torch.bfloat16
            and export_dtype("float32", torch.bfloat16, fidelity) == torch.float32
        )
    with pytest.raises(TrainError, match="matches the base model"):
        update_fidelity({"other": base["w"]}, base.items(), torch.bfloat16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, samples) -> Path:
    out = tmp_path_factory.mktemp("train") / "out"
    # 60 steps: the loss reaches ~0.01 (at 30 it is still ~1.1 and greedy decoding may not stop yet)
    cfg = tiny_cfg(samples, out, per_device_batch_size=4, max_steps=60, save_steps=100)
    model_dir = train(cfg)
    assert model_dir == out / "model"
    return out


@pytest.mark.integration
def test_trained_model_stops_where_its_training_replies_stop(trained, tiny_model):
    model_dir = trained / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    messages = [
        {"role": "system", "content": "Write Python."},
        {"role": "user", "content": "Problem 99: print 693."},
    ]  # unseen
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    out = model.generate(
        prompt,
        max_new_tokens=40,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generated = out[0, prompt.shape[1] :].tolist()
    assert generated == tokenizer(REPLY, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    # the base model, same prompt: random weights never stop there
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert (
        base.generate(
            prompt,
            max_new_tokens=40,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, prompt.shape[1] :].tolist()
        != generated
    )


@pytest.mark.integration
def test_output_is_a_plain_model_directory_with_manifest_and_loss_curve(trained, tiny_model, samples):
    model_dir = trained / "model"
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert not {"temperature", "top_k", "top_p", "do_sample"} & set(generation)
    assert AutoTokenizer.from_pretrained(model_dir).chat_template == load_manifest(samples)["chat_template"]
    assert json.loads((model_dir / "config.json").read_text())["dtype"] == "bfloat16"  # the base model's dtype
    manifest = load_manifest(trained)
    assert (
        manifest["export"]["dtype"] == "bfloat16" and manifest["export"]["update"]["cosine"] > 0.8
    )  # lr 3e-3: the update survives bf16
    assert manifest["finished_at"] and manifest["model_dir"] == str(model_dir)
    assert manifest["export"]["weights_sha256"] == weights_sha256(model_dir)
    assert set(manifest["inputs"]) == {"samples_fingerprint", "samples_data", "chat_template_sha256", "model"}
    assert manifest["lengths"]["dropped_too_long"] == 0 and manifest["plan"]["optimizer_steps"] == 60
    curve = losses(trained)
    assert len(curve) == 60 and curve[-1] < curve[0] / 5
    assert all(seconds > 0 for seconds in losses(trained, "seconds"))  # every step timed: the training rate
    compute = manifest["compute"]  # what MFU divides by: full fine-tune, 6 FLOPs per weight that multiplies
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    lookup = 0 if tied else model.get_input_embeddings().weight.numel()
    assert compute["parameters"] == compute["trainable_parameters"] == model.num_parameters()
    assert compute["flops_per_token"] == 6 * (compute["parameters"] - lookup) and compute["matmul_peak_flops"] > 1e8
    assert (trained / "loss.png").stat().st_size > 1000
    assert train(TrainConfig(**manifest["config"])) == model_dir  # rerun: already trained, nothing redone


@pytest.mark.integration
def test_an_update_lost_in_bf16_is_exported_and_served_in_float32(tmp_path, samples):
    """lr 1e-6 for 2 steps moves the tiny model's weights by far less than a bf16 step: the export is
    float32, and the engines serve it in float32 (vLLM would downcast an fp32 checkpoint by default)."""
    from selfdistill.generate import HFGenerator

    out = tmp_path / "small-lr"
    model_dir = train(
        tiny_cfg(samples, out, learning_rate=1e-6, min_learning_rate=1e-7, max_steps=2, snapshot_steps=[2])
    )
    snapshot = out / "snapshots" / "step-2"  # the fp32 weights of step 2, without optimizer state
    assert not [p for p in snapshot.iterdir() if p.name.startswith(("optimizer", "scheduler", "rng_state"))]
    final, kept = (
        AutoModelForCausalLM.from_pretrained(model_dir).state_dict(),
        AutoModelForCausalLM.from_pretrained(snapshot).state_dict(),
    )
    assert all(torch.equal(t, kept[n]) for n, t in final.items())
    export = load_manifest(out)["export"]
    assert (
        export["dtype"] == "float32" and export["update"]["dtype"] == "bfloat16" and export["update"]["cosine"] < 0.8
    )
    assert json.loads((model_dir / "config.json").read_text())["dtype"] == "float32"
    generator = HFGenerator(str(model_dir), max_model_len=256, seed=0)
    assert generator.dtype == torch.float32 and next(generator.model.parameters()).dtype == torch.float32


@pytest.mark.integration
def test_packing_gives_the_same_losses_as_padding(tmp_path, tiny_model):
    replies = [REPLY + "\n" * i + "# done" for i in range(8)]  # different lengths: padding happens
    path = write_samples(tmp_path / "s", tiny_model, replies)
    runs = {
        p: tiny_cfg(path, tmp_path / f"packing-{p}", per_device_batch_size=4, max_steps=3, save_steps=100, packing=p)
        for p in (False, True)
    }
    for cfg in runs.values():
        train(cfg)
    assert losses(tmp_path / "packing-True") == pytest.approx(losses(tmp_path / "packing-False"), rel=1e-4)


def ssd_train(cfg: TrainConfig, launcher: list[str] | None = None) -> subprocess.Popen:
    args = [f"{k}={v}" for k, v in cfg.__dict__.items() if v is not None]
    cmd = (launcher or [sys.executable]) + ["-m", "selfdistill", "train", *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


@pytest.mark.integration
def test_resume_after_kill_9_reaches_the_same_final_loss(tmp_path, samples):
    whole = tiny_cfg(samples, tmp_path / "whole", max_steps=8, save_steps=2)
    assert ssd_train(whole).wait() == 0
    killed = replace(whole, output_dir=str(tmp_path / "killed"))
    proc = ssd_train(killed)
    checkpoints = Path(killed.output_dir) / "checkpoints"
    while not any(checkpoints.glob(f"checkpoint-*/{COMPLETE}")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not load_manifest(killed.output_dir)["finished_at"]
    rerun = ssd_train(killed)
    output = " ".join(rerun.communicate()[0].split())  # rich wraps long lines
    assert rerun.returncode == 0, output
    assert "resuming from" in output
    assert losses(Path(killed.output_dir)) == pytest.approx(losses(Path(whole.output_dir)), rel=1e-5)
    assert losses(Path(killed.output_dir), "num_tokens") == losses(Path(whole.output_dir), "num_tokens")
    assert all(s > 0 for s in losses(Path(killed.output_dir), "seconds"))  # the steps' times come back too
    assert load_manifest(killed.output_dir)["resumed_from"]


@pytest.mark.integration
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, samples):
    one = tiny_cfg(samples, tmp_path / "one", max_steps=3, save_steps=100)
    two = replace(one, output_dir=str(tmp_path / "two"))
    assert ssd_train(one).wait() == 0
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    proc = ssd_train(two, launcher)
    output = proc.communicate()[0]
    assert proc.returncode == 0, output[-3000:]
    assert load_manifest(two.output_dir)["plan"]["processes"] == 2
    assert load_manifest(one.output_dir)["plan"]["gradient_accumulation_steps"] == 2
    assert losses(Path(two.output_dir)) == pytest.approx(losses(Path(one.output_dir)), rel=1e-4)


@pytest.mark.integration
def test_lora_is_merged_into_a_full_model(tmp_path, samples, tiny_model):
    out = tmp_path / "lora"
    model_dir = train(tiny_cfg(samples, out, use_lora=True, lora_r=4, lora_alpha=8, max_steps=2))
    assert not list(model_dir.glob("adapter_*"))  # merged, not an adapter
    trained = AutoModelForCausalLM.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = [n for n, p in trained.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)  # only the adapted linear layers moved
    # the adapter is kept beside the model, and `ssd models merge-lora` rebuilds the same model from it
    merged = tmp_path / "merged"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "selfdistill",
            "models",
            "merge-lora",
            str(out / "adapter"),
            str(merged),
            "--base",
            tiny_model,
        ],
        check=True,
    )
    rebuilt = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    assert all(torch.equal(p, rebuilt[n]) for n, p in trained.state_dict().items())


@pytest.mark.integration
def test_real_samples_with_another_chat_template_are_refused(tmp_path, tiny_model):
    """`ssd sample` on tiny-random, then training Qwen on those samples: refused, naming both hashes."""
    samples_dir = tmp_path / "samples"
    cmd = [
        sys.executable,
        "-m",
        "selfdistill",
        "sample",
        "model=tiny-random",
        "backend=hf",
        "limit=2",
        "max_tokens=8",
        f"output_dir={samples_dir}",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "selfdistill", "train", "model=qwen2.5-coder-0.5b-instruct",
                           f"samples={samples_dir}", f"output_dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert proc.returncode == 1 and "Traceback" not in message
    assert "chat template mismatch" in message and load_manifest(samples_dir)["chat_template_sha256"] in message
