"""`ssd train`: plain SFT on the raw samples (stage 2), on TRL's `SFTTrainer`.

Faithful to the samples by construction, because failed SSD reproductions trained on something other
than what was sampled (another chat template, another sequence length; apple/ml-ssd#7):
- The chat template is the one the samples were made with: the samples' manifest records it, and a
  model whose tokenizer carries another template is refused, naming both hashes.
- Each example is, token for token, what the sampler saw and produced: `prompt_text` (the template
  applied with add_generation_prompt=True) tokenized as the sampler tokenized it, then the reply's
  generated token ids, which end in the stop token the model emitted. The loss covers the reply and
  that stop token, never the prompt. Labels are built before padding, so the stop token stays in the
  loss even where pad == eos (trl#1623). A reply cut by max_tokens (finish_reason "length") has no
  stop token and gets none: the model never stopped there.
- Samples made elsewhere (cfg.samples a messages JSONL or parquet file, samples_made_elsewhere) are
  rendered with the model's template; a row that records its prompt_text must render to it.
- max_length is the longest example unless configured; a configured max_length that is shorter
  drops the longer examples, counted loudly, and never truncates one (a truncated reply would teach
  the model to stop, or to continue, where the sampler did not).

Paper defaults (all in TrainConfig): full fine-tune, AdamW (0.9, 0.95), weight decay 0.1, cosine
5e-6 -> 1e-6 with warmup, global batch 32 = per-device batch x accumulation x processes; the paper
presets add its length in optimizer steps (max_steps, warmup_steps). LoRA is an option; the adapter
is merged into a full model at the end. bf16 where the hardware computes it natively (CUDA, or a
CPU with AVX512-BF16/AMX); elsewhere fp32, because emulated bf16 is slower.
`packing` flattens each per-device batch into one padding-free row with position ids restarting
per example, so padding costs nothing and the batch is still counted in samples. The loss never
holds a full-vocabulary logits tensor: TRL's SFTTrainer computes it through a fused LM head, in tiles
of 4,096 tokens x 32,768 vocabulary entries. GPT-OSS trains with attention that trains its sinks and
with its MXFP4 experts dequantized (model_load_kwargs).

`objective: soft` (beyond the paper) trains on the truncated distribution q each reply token was drawn
from, stored at sampling (`sample.store_targets`): CE(q, p) = -sum_{v in S} q(v) log p(v) per reply
position, p the model's distribution at T=1, with the hard loss's masking (prompt out; an end-of-turn
token appended after a stop string, which was never drawn, gets a one-hot q). Its expectation over
the sampled token is the hard loss's, so the fixed point is SSD's, with less variance. The head runs in
chunks of SOFT_CHUNK_TOKENS positions, each recomputed in the backward pass (SoftTargetTrainer).

Output directory (`output_dir`):
  manifest.json       config, inputs (samples fingerprint and data hash, model hash), length stats,
                      batch plan, precision, final loss, wall time; `holdout`: the (prompt_id,
                      sample_index) of the samples set aside (train.holdout), never trained on;
                      `compute`: FLOPs per token and the matmul peak measured at the latest sitting (MFU);
                      `export`: the dtype written, the update's fidelity to it, and weights_sha256 (the
                      weight files' hash, which a rebuild from this manifest and its seeds can be checked by)
  model/              the trained model: weights in the base model's dtype, tokenizer with the
                      samples' chat template, a generation_config.json holding only token ids, and
                      README.md, its model card (hub.write_model_card; `ssd report` adds the results)
  adapter/            LoRA runs: the adapter alone (PEFT format), small enough to share
  loss.csv, loss.png  the loss curve (step, loss, learning rate, grad norm, tokens, ..., the step's seconds)
  snapshots/step-N/   weights of the steps in snapshot_steps, kept after their checkpoints rotate away
  checkpoints/        checkpoint-N/ (Trainer's; sharded under FSDP), each marked complete by
                      `selfdistill-complete.json` once every process has written it, with the batch
                      plan; rerunning the same command resumes from the newest complete one, even after
                      kill -9, and only with the same processes x per-device batch x accumulation.

Multi-GPU and multi-node: `accelerate launch --config_file <selfdistill/accelerate/*.yaml> -m
selfdistill train ...` (docs/training.md); `ssd run` launches it itself (launch.train_command).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import shutil
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from transformers import TrainerCallback

from . import SelfdistillError
from .chat import chat_prompt, stop_token_ids
from .config import CHAT_DATE, TrainConfig
from .hub import write_model_card
from .manifest import (
    RunDir,
    atomic_write_json,
    atomic_write_text,
    finished,
    hash_inputs,
    load_manifest,
    sha256_json,
    weights_sha256,
)
from .models import native_bf16, resolve_model
from .peak import matmul_peak
from .sample import load_samples, prompt_ids, read_samples_file, shard_files, targets_path, targets_source

console = Console(stderr=True, highlight=False)
COMPLETE = "selfdistill-complete.json"  # written into a checkpoint once all processes have saved it


class TrainError(SelfdistillError, RuntimeError):
    pass


# ---------------------------------------------------------------- samples -> examples


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()


def check_chat_template(tokenizer, manifest: dict, samples_dir: Path, model: str) -> str:
    """The samples' chat template must be the model's: train on the format that was sampled, or refuse."""
    sampled = manifest.get("chat_template")
    if not sampled:
        raise TrainError(
            f"{samples_dir}/manifest.json records no chat_template: "
            "these samples cannot be checked against the model's template"
        )
    recorded = manifest.get("chat_template_sha256")
    if recorded and recorded != template_sha256(sampled):
        raise TrainError(
            f"{samples_dir}/manifest.json: chat_template_sha256 {recorded} does not match its own chat_template text "
            f"({template_sha256(sampled)}); the manifest is corrupted"
        )
    ours = tokenizer.chat_template
    if isinstance(ours, dict):  # several named templates: the default one formats chat prompts
        ours = ours.get("default")
    if ours != sampled:
        ours_sha = template_sha256(ours) if ours else "none"
        raise TrainError(
            f"chat template mismatch: the samples in {samples_dir} were made with chat template sha256 "
            f"{template_sha256(sampled)}, but model {model} has chat template sha256 {ours_sha}. Training on one "
            "format and sampling with another is the failure mode of apple/ml-ssd#7; train the model the samples "
            "came from, or resample with this model."
        )
    return sampled


def end_of_turn_ids(tokenizer, stop_ids: set[int]) -> list[int]:
    """What the chat template writes after an assistant reply, up to and including its first stop token
    (Qwen and SmolLM2: <|im_end|>; Llama 3: <|eot_id|>). Generation halts at that token, so the model
    never produces what follows it (a newline, say), and neither do we train on it."""
    marker = "\u2063SSD-END-OF-REPLY\u2063"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    if marker not in rendered:
        raise TrainError(
            "the chat template does not render the assistant's reply verbatim; cannot locate its end-of-turn"
        )
    suffix = tokenizer(rendered.split(marker, 1)[1], add_special_tokens=False).input_ids
    for i, token in enumerate(suffix):
        if token in stop_ids:
            return suffix[: i + 1]
    if tokenizer.eos_token_id is None:
        raise TrainError(
            f"the chat template ends a reply with {suffix!r}, which holds no stop token, and the tokenizer has no eos"
        )
    return suffix + [tokenizer.eos_token_id]  # templates without an end-of-turn: the model stops at eos


def build_examples(
    records: list[dict],
    tokenizer,
    eot: list[int],
    stop_ids: set[int],
    samples_dir: Path,
    template_args: dict | None = None,
) -> tuple[list[dict], dict]:
    """Token ids and completion masks: the prompt exactly as the sampler fed it, then the reply's
    generated tokens, which end in the stop token the model emitted (finish_reason "stop").

    The prompt is `prompt_text` tokenized without added special tokens, as the sampler tokenized it, and
    must give the token count it recorded. The reply is `reply_token_ids`, the model's own tokens; a
    record without them (written by another tool) has its reply text tokenized instead. A reply that
    stopped without a stop token among its ids (a stop string ended it) gets the template's end-of-turn;
    a reply cut by max_tokens gets none: the model never stopped there. `template_args`: the chat
    template's arguments at sampling (its pinned date), so a template that stamps a date renders the
    prompts of another day's samples as they were."""
    examples, mismatch, truncated = [], [], 0
    for r in records:
        where = f"{samples_dir}: sample {r.get('prompt_id')!r}#{r.get('sample_index')}"
        for key, kind in (("prompt_text", str), ("reply", str), ("finish_reason", str)):
            if not isinstance(r.get(key), kind):
                raise TrainError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
        if (
            isinstance(r.get("messages"), list)
            and chat_prompt(tokenizer, r["messages"], **(template_args or {})) != r["prompt_text"]
        ):
            raise TrainError(
                f"{where}: prompt_text differs from its messages rendered with the chat template; the samples were "
                "not made with this template"
            )
        prompt, differs = prompt_ids(tokenizer, r)
        if differs:
            mismatch.append(f"{where}: {differs}")
        reply = r.get("reply_token_ids")
        if reply is None:
            reply = tokenizer(r["reply"], add_special_tokens=False).input_ids
        stopped = r["finish_reason"] == "stop"
        truncated += not stopped
        completion = list(reply) + (eot if stopped and not (reply and reply[-1] in stop_ids) else [])
        if not completion:
            raise TrainError(
                f"{where}: empty reply without a stop token; the sampler should have dropped it (keep=false)"
            )
        examples.append(
            {
                "input_ids": prompt + completion,
                "completion_mask": [0] * len(prompt) + [1] * len(completion),
                "prompt_len": len(prompt),
            }
        )
    if mismatch:
        raise TrainError(
            f"{len(mismatch)} prompts tokenize to a different length than at sampling (a BOS token added "
            f"twice?), e.g. {mismatch[0]}"
        )
    return examples, {"no_stop_token_finish_length": truncated}


def length_plan(examples: list[dict], max_length: int | None) -> tuple[list[dict], int, dict]:
    """max_length from the data unless configured; longer examples are dropped and counted, never truncated."""
    lengths = np.array([len(e["input_ids"]) for e in examples])
    longest = int(lengths.max())
    if max_length is None:
        max_length = longest
    kept = [e for e in examples if len(e["input_ids"]) <= max_length]
    dropped = len(examples) - len(kept)
    if not kept:
        raise TrainError(
            f"max_length {max_length} is shorter than every example (shortest {int(lengths.min())} "
            "tokens): nothing to train on"
        )
    prompt = np.array([e["prompt_len"] for e in examples])

    def summary(x):
        return {
            "min": int(x.min()),
            "p50": int(np.percentile(x, 50)),
            "p90": int(np.percentile(x, 90)),
            "max": int(x.max()),
            "mean": round(float(x.mean()), 1),
        }

    stats = {"examples": len(examples), "max_length": max_length, "longest": longest, "dropped_too_long": dropped,
             "prompt": summary(prompt), "completion": summary(lengths - prompt),
             "total": summary(lengths)}  # fmt: skip
    return kept, max_length, stats


def print_length_report(stats: dict) -> None:
    table = Table(
        "tokens",
        "min",
        "p50",
        "p90",
        "max",
        "mean",
        title=f"{stats['examples']} examples (completion = reply + end-of-turn)",
    )
    for row in ("prompt", "completion", "total"):
        table.add_row(row, *(str(stats[row][k]) for k in ("min", "p50", "p90", "max", "mean")))
    console.print(table)
    console.print(
        f"max_length {stats['max_length']} (longest example {stats['longest']}); "
        f"{stats['no_stop_token_finish_length']} replies cut by max_tokens train without a stop token"
    )
    if stats["dropped_too_long"]:
        console.print(
            f"[bold yellow]warning:[/] dropping {stats['dropped_too_long']} of {stats['examples']} examples longer "
            f"than max_length {stats['max_length']} (never truncated); unset max_length to train on all of them"
        )


# ---------------------------------------------------------------- hardware and batch


def use_bf16(requested: bool) -> bool:
    """bf16 only where it is computed natively: emulated bf16 runs matmuls far slower than fp32."""
    return requested and native_bf16()


def accumulation_steps(cfg: TrainConfig, processes: int) -> int:
    """Processes that split one sequence (context parallelism) share its batch: the batch is counted over
    processes / context_parallel_size data-parallel ranks."""
    if processes % cfg.context_parallel_size:
        raise TrainError(
            f"context_parallel_size {cfg.context_parallel_size} does not divide the {processes} processes"
        )
    ranks = processes // cfg.context_parallel_size
    per_step = cfg.per_device_batch_size * ranks
    if cfg.global_batch_size % per_step:
        raise TrainError(
            f"global_batch_size {cfg.global_batch_size} is not a multiple of per_device_batch_size "
            f"{cfg.per_device_batch_size} x {ranks} data-parallel ranks; global batch = per-device batch x gradient "
            "accumulation x processes / context_parallel_size"
        )
    return cfg.global_batch_size // per_step


def optimizer_steps(cfg: TrainConfig, examples: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_train_epochs * math.ceil(examples / cfg.global_batch_size)))


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    """warmup_steps when set (the paper counts warmup in steps), else warmup_ratio of the steps rounded
    down (transformers rounds up: a 4-step run would spend a step at learning rate 0)."""
    if cfg.warmup_steps > 0:
        if cfg.warmup_steps >= steps:
            raise TrainError(
                f"warmup_steps {cfg.warmup_steps} leaves none of the {steps} optimizer steps after warmup"
            )
        return cfg.warmup_steps
    return int(cfg.warmup_ratio * steps)


# ---------------------------------------------------------------- callbacks


class StepSeconds(TrainerCallback):
    """Writes each logged step's wall seconds (since this process's previous log, or since training began
    or resumed) into the trainer's log history, so loss.csv and every checkpoint keep the training rate
    across sittings (report.training_rate). Listed first: the callbacks after it read the seconds."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        now = time.perf_counter()
        if "loss" in (logs or {}):
            logs["seconds"] = state.log_history[-1]["seconds"] = round(now - self.last, 3)
        self.last = now


class RichProgress(TrainerCallback):
    """Steps done/total, loss, tokens/s (prompt + reply tokens, all processes) and ETA."""

    def __init__(self):
        self.progress = None
        self.tokens = 0  # num_tokens at the previous log

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        columns = [
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
        self.progress = Progress(*columns, console=console)
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")
        self.tokens = tokens_logged(state.log_history)
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.progress or "loss" not in (logs or {}):
            return
        tokens = logs.get("num_tokens", 0)
        speed = f"{(tokens - self.tokens) / logs['seconds']:.0f} tok/s"
        self.tokens = tokens
        info = f"loss {logs['loss']:.4f}  lr {logs.get('learning_rate', 0):.2e}  {speed}"
        self.progress.update(self.task, info=info)
        self.progress.console.print(f"step {state.global_step}/{state.max_steps}  {info}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.stop()


def training_flops(model) -> dict:
    """FLOPs per trained token: forward 2N, input gradients 2N, weight gradients 2 x the trainable N, N
    counting the weights that multiply (an untied input embedding is a lookup: left out, as attention's own
    FLOPs are)."""
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    lookup = embedding.numel() if output is None or output.weight.data_ptr() != embedding.data_ptr() else 0
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    matmul = parameters - lookup
    trainable_matmul = trainable - (lookup if embedding.requires_grad else 0)
    return {
        "parameters": parameters,
        "trainable_parameters": trainable,
        "matmul_parameters": matmul,
        "flops_per_token": 4 * matmul + 2 * trainable_matmul,
    }


def compute_budget(model, plan: dict) -> dict:
    """What MFU divides by, measured in this sitting (report.training_rate): FLOPs per trained token and the
    matmul peak of one device in the training precision, measured now on this machine."""
    dtype = torch.bfloat16 if plan["precision"].startswith("bf16") else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        **training_flops(model),
        "peak_dtype": str(dtype).removeprefix("torch."),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "matmul_peak_flops": matmul_peak(dtype, device, target_s=0.1),
    }


def tokens_logged(history: list[dict]) -> int:
    return next((h["num_tokens"] for h in reversed(history) if "num_tokens" in h), 0)


class LossCurve(TrainerCallback):
    """Rewrites loss.csv (atomically) from the trainer's log history at every log; after a resume the
    history comes back from the checkpoint, so the curve has no gaps or repeats."""

    FIELDS = (
        "step",
        "epoch",
        "loss",
        "learning_rate",
        "grad_norm",
        "num_tokens",
        "mean_token_accuracy",
        "entropy",
        "target_entropy",
        "seconds",  # the step's wall time (StepSeconds); empty for steps logged before it was recorded
    )

    def __init__(self, out: Path):
        self.out = out

    def on_log(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_loss_csv(self.out / "loss.csv", state.log_history)


def write_loss_csv(path: Path, history: list[dict]) -> list[dict]:
    rows = [{k: h.get(k) for k in LossCurve.FIELDS} for h in history if "loss" in h]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LossCurve.FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return rows


class MarkComplete(TrainerCallback):
    """Trainer writes a checkpoint in place, so a kill -9 can leave half of one. Mark it complete once
    every process has saved its part; resume only ever starts from a marked checkpoint. The marker
    records the batch plan, which a resume must keep (check_resume_plan)."""

    def __init__(self, batch_plan: dict):
        self.batch_plan = batch_plan

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        if state.is_world_process_zero:
            marker = {"step": state.global_step, "time": time.time(), "batch_plan": self.batch_plan}
            atomic_write_json(Path(args.output_dir) / f"checkpoint-{state.global_step}" / COMPLETE, marker)


class KeepSnapshots(TrainerCallback):
    """Copies the weights of chosen steps' checkpoints to snapshots/step-N before the rotation deletes
    them: a long run can be checked (`ssd analyze`'s fit) while it trains. Weights and config only, no
    optimizer state; FSDP's sharded checkpoints are copied as they are."""

    SKIP = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args", COMPLETE)

    def __init__(self, out: Path, steps: list[int]):
        self.out, self.steps = out, set(steps)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or state.global_step not in self.steps:
            return
        source = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        final = self.out / "snapshots" / f"step-{state.global_step}"
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=lambda _, names: [n for n in names if n.startswith(self.SKIP)])
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)


def batch_plan(cfg: TrainConfig, processes: int) -> dict:
    plan = {
        "processes": processes,
        "per_device_batch_size": cfg.per_device_batch_size,
        "gradient_accumulation_steps": accumulation_steps(cfg, processes),
    }
    if cfg.context_parallel_size > 1:  # only then: checkpoints marked before the field existed still resume
        plan["context_parallel_size"] = cfg.context_parallel_size
    return plan


def describe_batch_plan(plan: dict) -> str:
    return (
        f"{plan['processes']} processes x {plan['per_device_batch_size']} per device x "
        f"{plan['gradient_accumulation_steps']} accumulation"
    )


def check_resume_plan(checkpoint: Path, current: dict) -> None:
    """Trainer resumes on another world size without a word: the accumulation changes with it, and the
    batches it skips to reach the checkpoint's place in the data are another process count's batches.
    So a checkpoint resumes only with the batch plan it recorded (older checkpoints recorded none)."""
    recorded = json.loads((checkpoint / COMPLETE).read_text()).get("batch_plan")
    if recorded is not None and recorded != current:
        raise TrainError(
            f"cannot resume {checkpoint}: it was trained with {describe_batch_plan(recorded)}, this launch has "
            f"{describe_batch_plan(current)}; "
            f"launch {recorded['processes']} processes again, or train into a new output_dir"
        )


def last_complete_checkpoint(checkpoints: Path) -> Path | None:
    marked = [p for p in checkpoints.glob("checkpoint-*") if (p / COMPLETE).is_file()]
    return max(marked, key=lambda p: int(p.name.split("-")[-1]), default=None)


def remove_incomplete_checkpoints(checkpoints: Path) -> None:
    for p in checkpoints.glob("checkpoint-*"):
        if not (p / COMPLETE).is_file():
            console.print(f"removing incomplete checkpoint {p} (interrupted while saving)")
            shutil.rmtree(p)


# ---------------------------------------------------------------- the trainer


@dataclass
class Prepared:
    model_path: str
    tokenizer: object
    examples: list[dict]
    stats: dict
    template: str
    samples_manifest: dict
    holdout: list[tuple[str, int]] = field(default_factory=list)  # (prompt_id, sample_index) of the samples set aside


def prepare(cfg: TrainConfig) -> Prepared:
    from transformers import AutoTokenizer

    samples_dir = Path(cfg.samples)
    model_path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    try:
        if samples_dir.is_file():
            if cfg.objective == "soft":
                raise TrainError(
                    f"{samples_dir}: objective soft trains on the distributions `ssd sample` stores "
                    "(store_targets=true), not on a file of replies"
                )
            records, manifest = samples_made_elsewhere(samples_dir, tokenizer)
        else:
            records, manifest = load_samples(samples_dir, with_targets=cfg.objective == "soft")
    except (ValueError, FileNotFoundError) as e:  # not a samples directory, or an unfinished one
        raise TrainError(str(e)) from None
    template = check_chat_template(tokenizer, manifest, samples_dir, cfg.model)
    if not records:
        raise TrainError(f"{samples_dir} holds no kept samples to train on")
    set_aside = choose_holdout(records, cfg.holdout, cfg.seed, samples_dir)
    records = [r for r in records if sample_key(r) not in set_aside]
    examples, counts = training_examples(records, model_path, tokenizer, manifest, samples_dir)
    if cfg.objective == "soft":
        examples = with_soft_targets(examples, records, samples_dir, targets_source(samples_dir) == "sampling")
    examples, _, stats = length_plan(examples, cfg.max_length)
    stats.update(counts)
    return Prepared(model_path, tokenizer, examples, stats, template, manifest, sorted(set_aside))


def training_examples(
    records: list[dict], model_path: str, tokenizer, samples_manifest: dict, samples_dir: Path
) -> tuple[list[dict], dict]:
    """The examples `ssd train` makes of sample records (build_examples, with the model's stop tokens and
    end-of-turn), and their counts."""
    stop_ids = set(stop_token_ids(model_path, tokenizer))
    eot = end_of_turn_ids(tokenizer, stop_ids)
    examples, counts = build_examples(
        records, tokenizer, eot, stop_ids, samples_dir, samples_manifest.get("chat_template_args")
    )
    return examples, {**counts, "end_of_turn": tokenizer.convert_ids_to_tokens(eot)}


def sample_key(record: dict) -> tuple[str, int]:
    return str(record["prompt_id"]), int(record.get("sample_index", 0))


def choose_holdout(records: list[dict], count: int, seed: int, samples_dir: Path) -> set[tuple[str, int]]:
    """`count` (prompt_id, sample_index) keys, one sample of each of `count` prompts, a seeded choice: they
    are never trained on, so the distillation fit can compare held-out with training contexts."""
    by_prompt: dict[str, list[tuple[str, int]]] = {}
    for r in records:
        by_prompt.setdefault(str(r["prompt_id"]), []).append(sample_key(r))
    if count < 0 or count >= len(by_prompt):
        raise TrainError(
            f"holdout {count}: {samples_dir} has {len(by_prompt)} prompts with kept samples; hold out 0 to "
            f"{len(by_prompt) - 1} of them"
        )
    rng = random.Random(seed)
    return {rng.choice(by_prompt[p]) for p in rng.sample(sorted(by_prompt), count)}


def held_out(train_dir: str | Path) -> list[tuple[str, int]]:
    """The (prompt_id, sample_index) of the samples a train directory set aside (train.holdout)."""
    return [tuple(k) for k in load_manifest(train_dir).get("holdout", [])]


def samples_made_elsewhere(path: Path, tokenizer) -> tuple[list[dict], dict]:
    """A messages JSONL or parquet file (the official pipeline's, `ssd samples export`'s) as training
    records and a stand-in manifest: the prompts are rendered with the model's chat template, and a row
    that records the prompt it was sampled with (prompt_text) must render to it (build_examples checks),
    so samples of another template are refused as ours are. Their sampling is unknown."""
    records = read_samples_file(path)
    args = {"date": CHAT_DATE}  # as `ssd sample` renders by default
    for r in records:
        r["prompt_text"] = r["prompt_text"] or chat_prompt(tokenizer, r["messages"], **args)
    template = (
        tokenizer.chat_template.get("default")
        if isinstance(tokenizer.chat_template, dict)
        else tokenizer.chat_template
    )
    if not template:
        raise TrainError(f"{path}: the model's tokenizer has no chat template to render these messages with")
    return records, {
        "provenance": "unknown",
        "source_file": str(path),
        "chat_template": template,
        "chat_template_args": args,
    }


def build_trainer(cfg: TrainConfig, prep: Prepared, out: Path, callbacks: list = ()):
    """The SFTTrainer for these examples: the one place where our config meets TRL and transformers."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    on_cpu = not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    launched = batch_plan(cfg, state.num_processes)
    fsdp = state.distributed_type == DistributedType.FSDP
    if cfg.cpu_offload and not fsdp:
        raise TrainError("cpu_offload needs FSDP: launch with accelerate_config fsdp (docs/training.md)")
    steps = optimizer_steps(cfg, len(prep.examples))
    bf16 = use_bf16(cfg.bf16)
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=launched["gradient_accumulation_steps"],
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": cfg.min_learning_rate},
        warmup_steps=warmup_steps(cfg, steps),
        # fused on GPU: the foreach AdamW allocates a temporary as large as the optimizer state's shard
        # (sqrt of exp_avg_sq) at every step, 15 GiB for a 4B model on one GPU
        optim="adamw_torch" if on_cpu else "adamw_torch_fused",
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        weight_decay=cfg.weight_decay,
        bf16=bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,  # TRL's default is on; ours is the config's
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,  # the newest complete checkpoint survives while the next one is written
        completion_only_loss=True,
        max_length=None,  # lengths are enforced in length_plan, by dropping, never by truncating
        padding_free=cfg.packing,
        **context_parallel_args(cfg, state.num_processes, fsdp),
        report_to=cfg.report_to or "none",
        run_name=out.name,  # the stage directory, as trackers list it
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=not on_cpu,
        # without it, a CPU run launched on 2 processes trains twice alone (transformers sees no distributed setup)
        use_cpu=on_cpu,
    )
    # Master weights in fp32 (a 5e-6 update vanishes in bf16); autocast computes in bf16. A frozen LoRA
    # base needs no master copy. Under FSDP with bf16 the checkpoint loads in its own dtype and accelerate
    # upcasts each shard to fp32 after sharding: the main process never holds the whole model in fp32.
    dtype = (
        torch.bfloat16
        if (bf16 and cfg.use_lora)
        else checkpoint_dtype(prep.model_path)
        if (bf16 and fsdp)
        else torch.float32
    )
    load = load_kwargs(prep.model_path, cfg)
    if cfg.context_parallel_size > 1 and cfg.attn_implementation is None:
        load["attn_implementation"] = "sdpa"  # the only attention transformers' context parallelism runs
    model = AutoModelForCausalLM.from_pretrained(prep.model_path, dtype=dtype, **load)
    peft_config = None
    if cfg.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            task_type="CAUSAL_LM",
        )
    columns = ("input_ids", "completion_mask") + (SOFT_TARGET_COLUMNS if cfg.objective == "soft" else ())
    dataset = Dataset.from_list([{k: e[k] for k in columns} for e in prep.examples])
    trainer_class = soft_target_trainer() if cfg.objective == "soft" else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=prep.tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    if len(trainer.train_dataset) != len(dataset):  # TRL silently drops examples without loss tokens
        raise TrainError(f"TRL dropped {len(dataset) - len(trainer.train_dataset)} examples during preparation")
    trainer.remove_callback(PrinterCallback)  # RichProgress prints the logs
    if fsdp:  # read when the trainer wraps the model, at train()
        for name, value in fsdp_policies(cfg, bf16).items():
            setattr(trainer.accelerator.state.fsdp_plugin, name, value)
    plan = {**launched, "global_batch_size": cfg.global_batch_size, "optimizer_steps": steps,
            "warmup_steps": args.warmup_steps, "precision": "bf16 autocast" if bf16 else "fp32",
            "weights_dtype": str(dtype).removeprefix("torch."), "attention": load["attn_implementation"]}  # fmt: skip
    return trainer, plan


def checkpoint_dtype(model_path: str) -> torch.dtype:
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(model_path), "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def context_parallel_args(cfg: TrainConfig, processes: int, fsdp: bool) -> dict:
    """SFTConfig arguments for context parallelism: accelerate's ParallelismConfig over FSDP2, each
    sequence split across context_parallel_size processes and padded to a multiple of twice that
    (torch's load-balanced split cuts it into 2 x cp_size chunks; padding carries no loss)."""
    cp = cfg.context_parallel_size
    if cp == 1:
        return {}
    if not fsdp:
        raise TrainError(
            f"context_parallel_size {cp} needs FSDP2: launch with accelerate_config fsdp (docs/training.md)"
        )
    from accelerate.parallelism_config import ParallelismConfig

    return {
        "parallelism_config": ParallelismConfig(dp_shard_size=processes // cp, cp_size=cp),
        "pad_to_multiple_of": 2 * cp,
    }


def fsdp_policies(cfg: TrainConfig, bf16: bool) -> dict:
    """FSDP2 plugin settings from the config: gradients reduced in gradient_reduce_dtype under bf16
    (accelerate's default reduces in bf16; Megatron, the paper's trainer, in fp32), and parameters,
    gradients and optimizer state in CPU memory with cpu_offload."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

    policies = {"cpu_offload": CPUOffloadPolicy()} if cfg.cpu_offload else {}
    if bf16:
        reduce = torch.float32 if cfg.gradient_reduce_dtype == "fp32" else torch.bfloat16
        policies["mixed_precision_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=reduce)
    return policies


# ---------------------------------------------------------------- soft targets (objective: soft)

SOFT_TARGET_COLUMNS = ("target_counts", "target_ids", "target_probs")
SOFT_CHUNK_TOKENS = 256  # positions per head chunk: 256 x V fp32 logits, about 156 MB for Qwen's 152k vocabulary


def with_soft_targets(examples: list[dict], records: list[dict], samples_dir: Path, drawn: bool) -> list[dict]:
    """Each example with the distributions its completion tokens are trained towards, flat per token of
    input_ids (SOFT_TARGET_COLUMNS): none on the prompt, the stored q on each sampled reply token, and a
    one-hot q on an end-of-turn token that build_examples appended (it was never drawn). `drawn`: the
    tokens were drawn from these very distributions (store_targets), so each must be among its survivors;
    recomputed ones (`ssd samples targets`) may miss a token the sampler's precision kept at a boundary."""
    out = []
    for e, r in zip(examples, records, strict=True):
        where = f"{samples_dir}: sample {r['prompt_id']!r}#{r['sample_index']}"
        reply, targets = r.get("reply_token_ids"), r["targets"]
        if reply is None or len(targets) != len(reply):
            raise TrainError(f"{where}: {len(targets)} stored distributions for {len(reply or [])} reply tokens")
        rows = targets.rows()
        for t, (token, (ids, _)) in enumerate(zip(reply, rows, strict=True)):
            if drawn and token not in ids:
                raise TrainError(
                    f"{where}: reply token {t} ({token}) is not among the survivors of its stored distribution"
                )
        appended = e["input_ids"][e["prompt_len"] + len(reply) :]
        rows += [([token], [1.0]) for token in appended]
        out.append(
            {
                **e,
                "target_counts": [0] * e["prompt_len"] + [len(ids) for ids, _ in rows],
                "target_ids": [int(i) for ids, _ in rows for i in ids],
                "target_probs": [float(p) for _, probs in rows for p in probs],
            }
        )
    return out


def soft_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ids: torch.Tensor,
    probs: torch.Tensor,
    chunk: int = SOFT_CHUNK_TOKENS,
) -> torch.Tensor:
    """sum_n -sum_k probs[n, k] log softmax(hidden[n] @ weight.T + bias)[ids[n, k]], in chunks of `chunk`
    positions whose logits are recomputed in the backward pass: the head never holds more than chunk x V
    logits (and their gradient). Padding entries have probability 0."""
    from torch.utils.checkpoint import checkpoint

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        part = slice(start, start + chunk)
        total = total + checkpoint(
            _soft_cross_entropy_chunk, hidden[part], weight, bias, ids[part], probs[part], use_reentrant=False
        )
    return total


def _soft_cross_entropy_chunk(hidden, weight, bias, ids, probs):
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    return -(probs * (logits.gather(-1, ids) - logits.logsumexp(-1, keepdim=True))).sum()


def add_soft_target_head(model) -> None:
    """model(..., soft_targets=(ids, probs)) returns the summed soft cross-entropy of the positions with a
    target (ids, probs: batch x tokens x K, aligned with input_ids like labels, shifted here), computed
    from the backbone's hidden states by soft_cross_entropy; without soft_targets, the forward is the one
    before. Patched on the instance, like TRL's fused head, so DDP and PEFT wrappers call it."""
    from transformers.modeling_outputs import CausalLMOutput

    text_config = model.config.get_text_config()
    for scaling in (
        "final_logit_softcapping",
        "logit_scale",
        "logits_scaling",
        "output_multiplier",
        "lm_head_multiplier",
    ):
        if getattr(text_config, scaling, None) not in (None, 1, 1.0):
            raise TrainError(
                f"objective soft: {text_config.model_type}'s head applies {scaling}, which the soft loss does not "
                "reproduce; use objective hard"
            )
    forward = model.forward

    def soft_forward(self, *args, soft_targets=None, **kwargs):
        if soft_targets is None:
            return forward(*args, **kwargs)
        from torch.distributed.tensor import DTensor
        from trl.trainer.utils import maybe_gather_lm_head_ctx

        ids, probs = (t[:, 1:] for t in soft_targets)
        hidden = self.base_model(*args, **{**kwargs, "use_cache": False}).last_hidden_state[:, :-1]
        head = self.get_output_embeddings()
        weight, bias = head.weight, head.bias
        if isinstance(weight, DTensor):  # FSDP2 shards the head: gather it once, as TRL's fused head does
            weight, bias = weight.full_tensor(), bias.full_tensor() if bias is not None else None
        mask = probs.sum(-1) > 0
        with maybe_gather_lm_head_ctx(weight, bias):  # ZeRO-3
            loss = soft_cross_entropy(hidden[mask].to(weight.device), weight, bias, ids[mask], probs[mask])
        return CausalLMOutput(loss=loss)

    model.forward = types.MethodType(soft_forward, model)


def soft_target_trainer():
    """SFTTrainer with objective soft: the target columns pass through TRL's data preparation and
    collator, and compute_loss is CE(q, p) averaged over the reply tokens (of the whole accumulated batch,
    as the hard loss). Logs the target's own entropy beside it: loss - target_entropy is KL(q || p)."""
    from accelerate.utils import is_peft_model
    from trl import SFTTrainer

    class SoftTargetTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            add_soft_target_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)
            self.data_collator = SoftTargetCollator(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, *SOFT_TARGET_COLUMNS]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, probs = inputs.pop("target_ids"), inputs.pop("target_probs")
            labels = inputs.pop("labels")
            positions = (labels[:, 1:] != -100).sum()
            total = model(**inputs, soft_targets=(ids, probs)).loss
            loss = total / (positions.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients across ranks
            mode = "train" if self.model.training else "eval"
            with torch.no_grad():
                entropy = -(probs * probs.clamp(min=1e-30).log()).sum(-1)[:, 1:][labels[:, 1:] != -100].sum()
            gathered = self.accelerator.gather_for_metrics(
                torch.stack([entropy.float(), positions.float()]).unsqueeze(0)
            ).sum(0)
            self._metrics[mode]["target_entropy"].append((gathered[0] / gathered[1].clamp(min=1)).item())
            if mode == "train":
                tokens = (
                    inputs["attention_mask"].sum()
                    if "attention_mask" in inputs
                    else torch.tensor(inputs["input_ids"].numel())
                )
                self._total_train_tokens += int(self.accelerator.gather_for_metrics(tokens.reshape(1)).sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return SoftTargetTrainer


class SoftTargetCollator:
    """TRL's collator, then the targets laid out like its input_ids (padded, or concatenated when padding
    free): target_ids and target_probs of batch x tokens x K, K the most survivors in the batch, padded
    with probability 0."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collator([{k: v for k, v in e.items() if k not in SOFT_TARGET_COLUMNS} for e in examples])
        rows = [tuple(np.asarray(e[k]) for k in SOFT_TARGET_COLUMNS) for e in examples]
        if getattr(self.collator, "padding_free", False):  # one row of every example, in order
            rows = [tuple(np.concatenate(column) for column in zip(*rows, strict=True))]
        width = max(int(counts.max(initial=0)) for counts, _, _ in rows) or 1
        ids = np.zeros((*batch["input_ids"].shape, width), dtype=np.int64)
        probs = np.zeros((*batch["input_ids"].shape, width), dtype=np.float32)
        for b, (counts, flat_ids, flat_probs) in enumerate(rows):
            position = np.repeat(np.arange(len(counts)), counts)
            slot = np.arange(len(flat_ids)) - np.repeat(np.cumsum(counts) - counts, counts)
            ids[b, position, slot], probs[b, position, slot] = flat_ids, flat_probs
        return {**batch, "target_ids": torch.from_numpy(ids), "target_probs": torch.from_numpy(probs)}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# Attention that trains GPT-OSS's sinks: transformers applies them in eager attention and, through the
# log-sum-exp, after flex attention, both differentiable. Any other kernel is refused: flash-attn 2 drops
# the sinks, and kernels-community/vllm-flash-attn3 uses them forward but its backward returns no gradient
# for them (Dao-AILab/flash-attention#1797), so they would silently stay at their initial values.
SINK_TRAINING_ATTENTION = ("flex_attention", "eager")


def model_load_kwargs(config, cuda: bool, flash_attn: bool, attention: str | None = None) -> dict:
    """from_pretrained arguments that make `config`'s architecture trainable.

    Attention (unless `attention` names one): varlen flash attention on CUDA where flash_attn is
    installed, else sdpa; both keep packed examples apart. GPT-OSS adds a learned sink to every
    attention softmax, which must get its gradient (SINK_TRAINING_ATTENTION): flex attention on CUDA
    (blockwise: no L x L scores), eager on CPU, where PyTorch's flex attention has no backward; any
    other kernel is refused. MXFP4 weights (GPT-OSS's experts) cannot be trained: they are dequantized
    on load, explicitly rather than by transformers' fallbacks."""
    if config.model_type == "gpt_oss":
        attention = attention or ("flex_attention" if cuda else "eager")
        if attention not in SINK_TRAINING_ATTENTION:
            raise ValueError(
                f"train.attn_implementation={attention}: GPT-OSS's attention sinks would get no gradient from it "
                "(flash-attn 2 drops them; vllm-flash-attn3's backward returns none: "
                "Dao-AILab/flash-attention#1797); "
                f"use one of {', '.join(SINK_TRAINING_ATTENTION)}, or leave it unset"
            )
    elif attention is None:
        attention = "flash_attention_2" if cuda and flash_attn else "sdpa"
    kwargs = {"attn_implementation": attention}
    quantization = getattr(config, "quantization_config", None) or {}
    method = (
        quantization.get("quant_method")
        if isinstance(quantization, dict)
        else getattr(quantization, "quant_method", None)
    )
    if method == "mxfp4":
        from transformers import Mxfp4Config

        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    return kwargs


def load_kwargs(model_path: str, cfg: TrainConfig) -> dict:
    from transformers import AutoConfig

    return model_load_kwargs(
        AutoConfig.from_pretrained(model_path),
        torch.cuda.is_available(),
        _installed("flash_attn"),
        cfg.attn_implementation,
    )


# ---------------------------------------------------------------- export


def plain_generation_config(model_path: str, tokenizer):
    """Only token ids: no temperature/top-k/top-p for vLLM's or transformers' "auto" defaults to pick up."""
    from transformers import GenerationConfig

    try:
        base = GenerationConfig.from_pretrained(model_path)
        bos, eos, pad = base.bos_token_id, base.eos_token_id, base.pad_token_id
    except OSError:
        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    return GenerationConfig(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad if pad is not None else tokenizer.pad_token_id
    )


def export_model(trainer, cfg: TrainConfig, prep: Prepared, out: Path) -> tuple[Path, dict]:
    """Write model/: the trained weights in the base model's dtype (a LoRA adapter merged into them),
    the samples' chat template, a generation config with token ids only; atomically, by rename.

    Every process takes part in gathering the weights to the main process's CPU (FSDP trains and
    checkpoints sharded; only this export asks for the full state). What follows runs on the main process
    alone, with no barrier after it: writing a 30B model takes minutes, and processes waiting for it in
    a collective would hit the distributed timeout. Nothing is reloaded in fp32: the gathered fp32 master
    weights are cast tensor by tensor, and a LoRA base is loaded in its own dtype (its merge adds the
    fp32 delta in fp32 and rounds once, as a merge in fp32 would). A LoRA run also keeps its adapter/:
    a few MB that anyone can merge onto the base model (`ssd models merge-lora`)."""
    from transformers import AutoConfig

    accelerator, final = trainer.accelerator, out / "model"
    export: dict = {}
    # FSDP: the full state whatever fsdp_state_dict_type says (that governs the checkpoints), on the main process's CPU
    state = accelerator.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)
    if not accelerator.is_main_process:
        return final, export
    base_dtype = getattr(AutoConfig.from_pretrained(prep.model_path), "dtype", None) or torch.float32
    export["dtype"] = str(base_dtype).removeprefix("torch.")
    model = accelerator.unwrap_model(trainer.model)
    prep.tokenizer.chat_template = prep.template
    tmp, adapter = out / ".model.tmp", out / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if cfg.use_lora:
        shutil.rmtree(adapter, ignore_errors=True)
        model.save_pretrained(adapter, state_dict=state)  # the adapter's tensors only
        prep.tokenizer.save_pretrained(adapter)
        load = {
            **load_kwargs(prep.model_path, cfg),
            "attn_implementation": "eager",
        }  # weights only: no forward pass here
        model, state = merge_lora(prep.model_path, adapter, load), None
    else:
        export["update"] = update_fidelity(state, base_tensors(prep.model_path), base_dtype)
        export["dtype"] = str(export_dtype(cfg.export_dtype, base_dtype, export["update"])).removeprefix("torch.")
        state = cast_state_dict(state, getattr(torch, export["dtype"]))
    model.generation_config = plain_generation_config(prep.model_path, prep.tokenizer)
    model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    model.config.dtype = getattr(
        torch, export["dtype"]
    )  # save_pretrained recorded the dtype of the fp32 master weights
    model.config.save_pretrained(tmp)
    prep.tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    export["weights_sha256"] = weights_sha256(final)
    if cfg.use_lora:
        shutil.rmtree(out / "adapter", ignore_errors=True)
        os.replace(adapter, out / "adapter")
    return final, export


UPDATE_KEPT_MIN = 0.8  # export_dtype auto: below this cosine the rounded update is not the trained one


def base_tensors(model_path: str):
    """(name, tensor) of the base model's checkpoint, one tensor at a time: a local model directory's
    safetensors, or a hub model's from the local hub cache (training loaded it from there)."""
    from safetensors import safe_open

    root = Path(model_path)
    if not root.is_dir():
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(model_path, allow_patterns=["*.safetensors"]))
    for file in sorted(root.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - a safetensors file is no dict: keys() is its API
                yield name, f.get_tensor(name)


def update_fidelity(trained: dict, base, dtype: torch.dtype) -> dict:
    """How much of the training update survives rounding the fp32 master weights to `dtype`.

    The update is trained - base; the exported update is round(trained) - base. A small learning rate
    moves a weight by less than half of bf16's step at its magnitude (2^-9 relative), so rounding can
    put it back exactly where it started: the model evaluated would not be the model trained. Returns
    the cosine between the two updates, the norm of the exported one relative to the trained one,
    and the share of moved weights whose exported value still differs from the base."""
    dot = trained_sq = exported_sq = 0.0
    moved = kept = tensors = 0
    for name, base_tensor in base:
        if name not in trained or not base_tensor.is_floating_point():
            continue
        b = base_tensor.double()
        w = trained[name].to("cpu")
        update, exported = w.double() - b, w.to(dtype).double() - b
        dot += float((update * exported).sum())
        trained_sq += float((update * update).sum())
        exported_sq += float((exported * exported).sum())
        moved += int((update != 0).sum())
        kept += int((exported != 0).sum())
        tensors += 1
    if not tensors:
        raise TrainError(
            "no tensor of the trained model matches the base model's checkpoint by name: "
            "cannot measure the exported update"
        )
    if trained_sq == 0:
        return {
            "dtype": str(dtype).removeprefix("torch."),
            "cosine": 1.0,
            "norm_ratio": 1.0,
            "moved_weights_kept": 1.0,
            "tensors": tensors,
        }
    return {"dtype": str(dtype).removeprefix("torch."),
            "cosine": dot / math.sqrt(trained_sq * exported_sq) if exported_sq else 0.0,
            "norm_ratio": math.sqrt(exported_sq / trained_sq), "moved_weights_kept": kept / moved,
            "tensors": tensors}  # fmt: skip


def export_dtype(choice: str, base_dtype: torch.dtype, fidelity: dict) -> torch.dtype:
    """The dtype model/ is written in: the base model's, unless (auto) rounding to it loses the update."""
    if choice == "float32" or (choice == "auto" and fidelity["cosine"] < UPDATE_KEPT_MIN):
        return torch.float32
    return base_dtype


def cast_state_dict(state: dict, dtype: torch.dtype) -> dict:
    """Floating tensors cast to `dtype` on the CPU, one at a time; tensors that share storage (tied
    embeddings) stay shared, which is how save_pretrained recognizes the alias it must drop."""
    copies: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in copies:
            copies[key] = tensor.to(device="cpu", dtype=dtype if tensor.is_floating_point() else tensor.dtype)
        out[name] = copies[key]
    return out


def merge_adapter(adapter_dir: str | Path, out: str | Path, base_model: str) -> Path:
    """`ssd models merge-lora`: a shared adapter/ directory merged onto its base model (a registry name,
    model dir or hub id) and written as a plain model directory that vLLM and `ssd eval` load."""
    from transformers import AutoConfig, AutoTokenizer

    from .models import resolve_model

    adapter_dir, out = Path(adapter_dir), Path(out)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainError(
            f"{adapter_dir}: no adapter_config.json; pass the adapter/ directory of a LoRA `ssd train` run"
        )
    base_path = resolve_model(base_model)
    model = merge_lora(base_path, adapter_dir).to(
        getattr(AutoConfig.from_pretrained(base_path), "dtype", None) or torch.float32
    )
    tokenizer_dir = (
        adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_path
    )  # the samples' chat template, when saved
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


def merge_lora(base_model_path: str, adapter_dir: str | Path, load: dict | None = None):
    """The base model, in its own dtype, with a LoRA adapter merged in. The adapter's weights stay fp32,
    so each merged weight is their fp32 sum rounded once to the base dtype, what a merge in fp32 then a
    cast gives (tested), without holding the model in fp32. `load`: more from_pretrained arguments."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model_path, dtype="auto", **(load or {}))
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def plot_loss(rows: list[dict], path: Path, title: str) -> None:
    from .plots import figure, save

    fig, ax = figure()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over reply tokens)")
    ax.set_title(title, fontsize=9)
    save(fig, path)


# ---------------------------------------------------------------- the stage


def quiet_library_progress_bars() -> None:
    """One progress display: ours. transformers and datasets would add a tqdm bar per load, map and save."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def trained_model_dir(train_dir: str | Path) -> Path:
    """The model a finished train directory holds."""
    return Path(load_manifest(train_dir)["model_dir"])


def trained_on(model_dir: str | Path) -> Path | None:
    """The samples directory a model of `ssd train` (TRAIN_DIR/model) was trained on; None for another
    model, or one trained on a file of samples made elsewhere (their sampling is unknown)."""
    try:
        manifest = load_manifest(Path(model_dir).parent)
    except FileNotFoundError:
        return None
    samples = Path(manifest["config"]["samples"])
    return samples if manifest.get("stage") == "train" and not samples.is_file() else None


def train(cfg: TrainConfig) -> Path:
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu: gloo across processes when launched on several
    out = Path(cfg.output_dir)
    quiet_library_progress_bars()
    if finished(out, cfg):  # a finished directory of another config is refused, not returned
        console.print(f"{out} is already trained (model at {trained_model_dir(out)}); delete it to train again")
        return trained_model_dir(out)

    prep = prepare(cfg)
    samples_dir = Path(cfg.samples)
    inputs = {
        "samples_fingerprint": prep.samples_manifest.get("fingerprint_sha256")
        or sha256_json(prep.samples_manifest.get("config")),
        "samples_data": sha256_json(
            hash_inputs(shard_files(samples_dir) or [samples_dir])
        ),  # a file made elsewhere: itself
        "chat_template_sha256": template_sha256(prep.template),
        "model": hash_inputs([prep.model_path]).get(prep.model_path, prep.model_path),  # a hub id hashes to itself
    }
    if cfg.objective == "soft":  # what it trains towards: sampled or recomputed distributions
        inputs["samples_targets"] = sha256_json(hash_inputs(map(targets_path, shard_files(samples_dir))))
    run = (
        RunDir.open(out, "train", cfg, inputs, extra={"samples": str(samples_dir), "model_path": prep.model_path})
        if state.is_main_process
        else None
    )
    if state.is_main_process:
        print_length_report(prep.stats)
        remove_incomplete_checkpoints(out / "checkpoints")
    state.wait_for_everyone()

    launched = batch_plan(cfg, state.num_processes)
    resume = last_complete_checkpoint(out / "checkpoints")
    if resume:
        check_resume_plan(resume, launched)
    trainer, plan = build_trainer(
        cfg,
        prep,
        out,
        callbacks=[
            StepSeconds(),
            RichProgress(),
            LossCurve(out),
            KeepSnapshots(out, cfg.snapshot_steps),
            MarkComplete(launched),
        ],
    )
    if resume:  # TRL restarts its token counter at 0 on resume; continue it so num_tokens stays cumulative
        history = json.loads((resume / "trainer_state.json").read_text())["log_history"]
        trainer._total_train_tokens = int(tokens_logged(history))
    if state.is_main_process:
        console.print(
            f"{len(prep.examples)} examples, {plan['optimizer_steps']} optimizer steps of {cfg.global_batch_size} "
            f"({plan['per_device_batch_size']} x {plan['gradient_accumulation_steps']} accumulation x "
            f"{plan['processes']} processes), "
            f"{plan['precision']}, {'LoRA r=' + str(cfg.lora_r) if cfg.use_lora else 'full fine-tune'}"
            + (f"; resuming from {resume}" if resume else "")
        )
        run.update(
            lengths=prep.stats,
            plan=plan,
            resumed_from=str(resume) if resume else None,
            holdout=prep.holdout,
            compute=compute_budget(trainer.model, plan),
        )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    model_dir, export = export_model(trainer, cfg, prep, out)

    if state.is_main_process:
        rows = write_loss_csv(out / "loss.csv", trainer.state.log_history)
        plot_loss(rows, out / "loss.png", f"{cfg.model} on {samples_dir}")
        tokens = rows[-1]["num_tokens"] if rows else None
        run.finish(
            model_dir=str(model_dir),
            final_loss=rows[-1]["loss"] if rows else None,
            train_loss=result.training_loss,
            steps=trainer.state.global_step,
            train_seconds_this_session=round(seconds, 1),
            tokens_trained=tokens,
            export=export,
        )
        if "update" in export:
            u = export["update"]
            console.print(
                f"export: {export['dtype']} (rounding to {u['dtype']} keeps the update at cosine {u['cosine']:.3f}, "
                f"norm {u['norm_ratio']:.2f}, {u['moved_weights_kept']:.0%} of moved weights)"
            )
        write_model_card(out)
        console.print(
            f"[bold green]trained[/] {model_dir}  final loss {rows[-1]['loss'] if rows else float('nan'):.4f}  "
            f"({seconds:.0f} s this session)"
        )
    return model_dir
