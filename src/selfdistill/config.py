"""Typed stage configs: dataclasses, loaded from a preset or YAML file, then `key=value` overrides.

Resolution order (later wins): dataclass defaults -> preset -> --config FILE -> CLI flags / key=value.
A preset or config file is shaped like a `RunConfig` (top-level `model`, `output_dir` and one
section per stage); a stage command reads its own section. Unknown keys are errors that name
the key, the file and its line, and suggest the closest valid key. Every value is then checked
against the range declared beside its field (`option(..., check=Within("(0, 1]"))`) and its
config's cross-field `relations()`, before any stage loads a model or writes a directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import SelfdistillError
from .chat import PROMPT_FORMATS


class ConfigError(SelfdistillError, ValueError):
    exit_code = 2  # as click's usage errors


CHAT_DATE = (
    "2026-04-01"  # the date chat templates that stamp one see, by default: fixed, so prompts never change with the day
)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    volatile: bool = False,
    choices: tuple[str, ...] = (),
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A config field with its help text (`ssd <stage> --help` prints it, as TRL's dataclasses do);
    `factory` for mutable defaults; `choices`, and `check` (value -> what is wrong with it, or None;
    never called with None), are checked when the config loads, before any stage writes a directory."""
    metadata = {"help": help, "volatile": volatile, "choices": choices, "check": check}
    return field(default=default, default_factory=factory, metadata=metadata)


def volatile(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: tuple[str, ...] = (),
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A field that does not change a stage's outputs (paths, worker counts): it is left out of the
    fingerprint that decides whether an existing run directory may be reused."""
    return option(default, help, volatile=True, choices=choices, check=check)


@dataclass(frozen=True)
class Within:
    """A field's check: the number, or every number of a list, lies in `interval`, written as in
    mathematics ("[0, 1)", "(0, inf)"); `nonempty`: a list needs at least one."""

    interval: str
    nonempty: bool = False

    def __call__(self, value: Any) -> str | None:
        low, high = (float(bound) for bound in self.interval[1:-1].split(","))
        values = value if isinstance(value, list) else [value]
        if self.nonempty and not values:
            return "needs at least one value"
        for v in values:
            above_low = low < v or (self.interval[0] == "[" and v == low)
            below_high = v < high or (self.interval[-1] == "]" and v == high)
            if not (above_low and below_high):  # written so that nan fails too
                return f"{v!r} is not in {self.interval}"
        return None


def iso_date(value: str) -> str | None:
    """A field's check: a date YYYY-MM-DD (release windows compare dates as text)."""
    try:
        valid = bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)) and bool(datetime.date.fromisoformat(value))
    except ValueError:  # 2025-02-30
        valid = False
    return None if valid else f"{value!r} is not a date YYYY-MM-DD"


def pass_at_k(value: str) -> str | None:
    """A field's check: a metric of the eval's summary, pass@K."""
    return None if re.fullmatch(r"pass@[1-9][0-9]*", value) else f"{value!r} is not pass@K (a k of eval.ks)"


Broken = tuple[
    tuple[str, ...], str
]  # a broken cross-field rule: its fields (the one it is about first), what is wrong


class Checked:
    """Base of the configs: a config is checked (fields, then `relations()`) whenever it is built, so
    a config made in code or by `dataclasses.replace` holds the same guarantees as a loaded one."""

    def __post_init__(self) -> None:
        validate(self, prefix=f"{type(self).__name__}.")

    def relations(self) -> Iterator[Broken]:
        """The cross-field rules this config breaks."""
        return iter(())


def _reply_fits(cfg: SampleConfig | EvalConfig) -> Iterator[Broken]:
    if cfg.max_tokens >= cfg.max_model_len:
        yield (
            ("max_tokens", "max_model_len"),
            f"{cfg.max_tokens} leaves no room for the prompt in max_model_len {cfg.max_model_len}",
        )


BACKENDS = ("vllm", "hf")
LOCAL_REPLICAS_HELP = (
    "without ray_address: replicas of the model on a Ray instance the stage starts on this machine and stops "
    "(distributed.py); None = one per tensor_parallel_size visible GPUs when that makes several, else one engine "
    "in this process; 1 = one engine in this process"
)
REPLY_FORMATS = ("selfdistill", "evalplus", "lcb")  # files of replies made elsewhere (replies.py)


@dataclass
class SampleConfig(Checked):
    model: str = option(
        "qwen2.5-coder-0.5b-instruct",
        "the model that answers: a registry name (`ssd models`), a model directory or a hub id",
    )
    prompts: str = option("leetcode-train", "a dataset name (see `selfdistill.prompts`), a local file or a hub id")
    prompt_field: str | None = option(None, "the field holding the statement; None = the dataset's default")
    prompt_selection: str = option(
        "all",
        choices=("paper", "all"),
        help="'paper': rows with is_passed true, deduplicated by question text (rStar-Coder seed_sft -> the "
        "paper's ~10.2k prompts); 'all': every row, deduplicated on statement + starter code",
    )
    limit: int | None = option(None, "first N prompts after dedup and decontamination", check=Within("[1, inf)"))
    prompt_format: str = option(
        "system",
        "'system' (our wording of the paper's description) or 'lcb' (the paper's eval prompt)",
        choices=PROMPT_FORMATS,
    )
    chat_date: str = option(
        CHAT_DATE,
        "YYYY-MM-DD, given to templates that stamp today's date (GPT-OSS); training reuses it",
        check=iso_date,
    )
    reasoning_effort: str | None = option(
        None, "given to templates that read it (GPT-OSS: the paper's 'high'); None = the template's"
    )
    # The registry's benchmarks with data of their own, one per problem set. Config cannot import the
    # registry (it writes through manifest, which imports config), so tests/test_architecture.py checks
    # that this list and EvalConfig.benchmark's help keep up with it.
    decontaminate: list[str] = option(
        factory=lambda: ["humaneval", "mbpp", "leetcode", "livecodebench"],
        help="benchmarks whose problems are removed from the prompts: NAME, NAME:FILE_OR_HUB_ID, each optionally "
        "@FROM..TO (`ssd run` adds the evaluated one)",
    )
    temperature: float = option(
        1.6, "T_train: sampling temperature, applied first (paper Table 3)", check=Within("[0, inf)")
    )
    top_k: int = option(20, "keep the k most likely tokens after temperature; 0 = off", check=Within("[0, inf)"))
    top_p: float = option(
        0.8, "then keep the smallest head of those with this much probability; 1.0 = off", check=Within("(0, 1]")
    )
    min_p: float = option(
        0.0,
        "min-p truncation (vLLM order: after temperature, before top-k); the paper uses none",
        check=Within("[0, 1)"),
    )
    n: int = option(1, "samples per prompt (the paper: 1)", check=Within("[1, inf)"))
    max_tokens: int = option(
        2048, "new tokens per reply; a reply cut here is kept and counted as truncated", check=Within("[1, inf)")
    )
    max_model_len: int = option(4096, "context length of the engine: prompt plus reply", check=Within("[2, inf)"))
    seed: int = option(0, "run seed; each request gets its own seed from it, the prompt id and the sample index")
    stop: list[str] = option(factory=list, help="stop strings besides the stop tokens")
    drop_shortest_fraction: float = option(
        0.0, "the official code drops the shortest 10%: set 0.1 to match it", check=Within("[0, 1)")
    )
    per_request_seeds: bool = option(
        True,
        "a seed per request: reproducible replies; false lets vLLM on GPU use FlashInfer's sampler, and replies then "
        "depend on batching (docs/training.md)",
    )
    store_targets: bool = option(
        False,
        "also store, per reply token, the truncated distribution it was drawn from (shards/*.targets.safetensors), "
        "for train.objective=soft; needs top_k > 0",
    )
    backend: str = volatile("vllm", "'vllm' or 'hf'; both give the same truncated distribution", choices=BACKENDS)
    tensor_parallel_size: int = volatile(1, "GPUs per vLLM engine", check=Within("[1, inf)"))
    max_num_seqs: int | None = volatile(
        None,
        "sequences decoding at once; None = the engine's limit (vLLM's scheduler default, hf 16)",
        check=Within("[1, inf)"),
    )
    ray_address: str | None = volatile(
        None, "auto or HOST:PORT of a Ray cluster: shards go to replicas of the model on its nodes (distributed.py)"
    )
    local_replicas: int | None = volatile(None, LOCAL_REPLICAS_HELP, check=Within("[1, inf)"))
    shard_size: int = volatile(32, "prompts per shard: the unit of atomic writes and resume", check=Within("[1, inf)"))
    output_dir: str = volatile("runs/samples", "where the samples go")

    def relations(self) -> Iterator[Broken]:
        yield from _reply_fits(self)
        if self.store_targets and (self.temperature == 0 or self.top_k == 0):
            yield (
                ("store_targets", "temperature", "top_k"),
                (
                    "needs temperature > 0 (a greedy token's target is the token) and top_k > 0, got "
                    f"{self.temperature} and {self.top_k}"
                ),
            )


# what train.objective fits the samples with, in the reports' and model cards' words
OBJECTIVES = {
    "hard": "SFT on the raw samples",
    "soft": "soft-target training on the samples (cross-entropy against the truncated distribution each sampled "
    "token was drawn from: train.objective soft, a variant beyond the paper)",
}


@dataclass
class TrainConfig(Checked):
    model: str = option("qwen2.5-coder-0.5b-instruct", "the base model to fine-tune (the one that sampled)")
    samples: str = option("runs/samples", "an `ssd sample` output directory")
    use_lora: bool = option(
        False,
        "train a LoRA adapter, merged into the model at the end, instead of every weight (the paper: full fine-tune)",
    )
    lora_r: int = option(16, "LoRA rank", check=Within("[1, inf)"))
    lora_alpha: int = option(32, "LoRA scaling numerator (scale = alpha / r)", check=Within("(0, inf)"))
    lora_dropout: float = option(0.0, "dropout on the LoRA branch", check=Within("[0, 1)"))
    lora_target_modules: str = option(
        "all-linear", "modules that get adapters (PEFT syntax; all-linear = every linear layer but the head)"
    )
    learning_rate: float = option(5e-6, "peak learning rate (paper: 5e-6, full fine-tune)", check=Within("(0, inf)"))
    min_learning_rate: float = option(1e-6, "cosine decays to this floor, not to zero", check=Within("[0, inf)"))
    warmup_ratio: float = option(
        0.05, "share of the optimizer steps spent warming up, unless warmup_steps is set", check=Within("[0, 1)")
    )
    warmup_steps: int = option(
        0,
        "> 0 overrides warmup_ratio (paper: 250 for instruct models, 50 for thinking models)",
        check=Within("[0, inf)"),
    )
    adam_beta1: float = option(0.9, "AdamW beta1 (paper: 0.9)", check=Within("[0, 1)"))
    adam_beta2: float = option(0.95, "AdamW beta2 (paper: 0.95)", check=Within("[0, 1)"))
    weight_decay: float = option(0.1, "AdamW weight decay (paper: 0.1)", check=Within("[0, inf)"))
    global_batch_size: int = option(
        32, "reached through gradient accumulation over processes", check=Within("[1, inf)")
    )
    per_device_batch_size: int = option(1, "samples per process per forward pass", check=Within("[1, inf)"))
    num_train_epochs: float = option(1.0, "passes over the samples, unless max_steps is set", check=Within("(0, inf)"))
    max_steps: int = option(
        -1, "optimizer steps; > 0 overrides epochs (paper: 2,500 for instruct models, 300 for thinking models)"
    )
    max_length: int | None = option(
        None, "None = the longest sample; never a library default", check=Within("[1, inf)")
    )
    packing: bool = option(False, "padding-free packing (position ids reset per sample)")
    bf16: bool = option(True, "train in bf16 where the hardware computes it natively (else fp32)")
    gradient_checkpointing: bool = option(
        False, "recompute activations in the backward pass: long sequences fit at ~30% more compute"
    )
    objective: str = option(
        "hard",
        choices=tuple(OBJECTIVES),
        help="'hard': cross-entropy on the sampled tokens (the paper); 'soft': cross-entropy against the stored "
        "truncated distribution each token was drawn from (samples made with sample.store_targets; `ssd run` turns "
        "it on), the same fixed point with less variance",
    )
    seed: int = option(0, "data order and initialisation seed")
    export_dtype: str = option(
        "auto",
        choices=("auto", "base", "float32"),
        help="dtype of the exported full fine-tune: 'base' (the base model's), 'float32', or 'auto': the base "
        "model's unless rounding the fp32 master weights to it keeps the update at a cosine below 0.8 "
        "(manifest: export.update)",
    )
    gradient_reduce_dtype: str = option(
        "fp32",
        choices=("fp32", "bf16"),
        help="dtype FSDP2 reduces gradients in (MixedPrecisionPolicy reduce_dtype) under bf16: fp32, as Megatron "
        "(the paper's trainer) does; bf16 is accelerate's default, half the traffic",
    )
    context_parallel_size: int = volatile(
        1,
        "GPUs that split each sequence (accelerate's ParallelismConfig cp_size, FSDP2): activations per GPU / N, and "
        "the data-parallel size is processes / N. Needs sdpa attention, so not GPT-OSS, and no packing (`ssd plan`)",
        check=Within("[1, inf)"),
    )
    cpu_offload: bool = volatile(
        False,
        "FSDP2 CPU offload: parameters, gradients and AdamW state in CPU memory (16 bytes per parameter on the host), "
        "the optimizer step on the CPU: fits what does not, much slower (`ssd plan`)",
    )
    holdout: int = option(
        0,
        "samples set aside and never trained on (one per prompt, a seeded choice by seed); the manifest "
        "records them, and `ssd analyze fit` scores them as held-out contexts",
        check=Within("[0, inf)"),
    )
    attn_implementation: str | None = volatile(
        None, "attention kernel; None = chosen per architecture (train.model_load_kwargs)"
    )
    num_processes: int = volatile(
        0,
        "processes `ssd run` and `ssd sweep` launch to train (`ssd train` runs in whatever launched it); "
        "0 = one per visible GPU, 1 on a CPU",
        check=Within("[0, inf)"),
    )
    accelerate_config: str = volatile(
        "ddp",
        "how `ssd run` and `ssd sweep` launch training: ddp, fsdp, zero3 (selfdistill/accelerate/NAME.yaml) "
        "or an accelerate config file",
    )
    logging_steps: int = volatile(1, "log the loss every this many optimizer steps", check=Within("[1, inf)"))
    report_to: list[str] = option(
        factory=list,
        volatile=True,
        help="experiment trackers that get the loss, learning rate and grad norm (TRL's report_to): tensorboard, "
        "trackio, wandb, mlflow...; the run is named after output_dir; empty = none",
    )
    save_steps: int = volatile(
        10, "checkpoint every this many optimizer steps (the unit of resume)", check=Within("[1, inf)")
    )
    snapshot_steps: list[int] = option(
        factory=list,
        volatile=True,
        help="optimizer steps whose weights are kept in snapshots/step-N (checkpoints rotate away), e.g. for the "
        "distillation fit while a long run trains; each a multiple of save_steps",
        check=Within("[1, inf)"),
    )
    output_dir: str = volatile("runs/train", "where the model, loss curve and checkpoints go")

    def relations(self) -> Iterator[Broken]:
        if self.min_learning_rate > self.learning_rate:
            yield (
                ("min_learning_rate", "learning_rate"),
                f"{self.min_learning_rate} is above learning_rate {self.learning_rate}",
            )
        if (
            self.global_batch_size % self.per_device_batch_size
        ):  # the processes are known at launch (train.accumulation_steps)
            yield (
                ("global_batch_size", "per_device_batch_size"),
                (f"{self.global_batch_size} is not a multiple of per_device_batch_size {self.per_device_batch_size}"),
            )
        if 0 < self.max_steps <= self.warmup_steps:
            yield (
                ("warmup_steps", "max_steps"),
                f"{self.warmup_steps} leaves none of the max_steps {self.max_steps} after warmup",
            )
        if any(step % self.save_steps for step in self.snapshot_steps):
            yield (
                ("snapshot_steps", "save_steps"),
                f"{self.snapshot_steps}: each must be a multiple of save_steps {self.save_steps} (a "
                "snapshot is a checkpoint kept)",
            )
        if self.packing and self.context_parallel_size > 1:
            yield (
                ("packing", "context_parallel_size"),
                "context parallelism cannot keep packed examples apart (it drops the "
                "attention mask): set packing false",
            )


@dataclass
class EvalConfig(Checked):
    model: str = option(
        "qwen2.5-coder-0.5b-instruct", "the model to evaluate: registry name, model directory or hub id"
    )
    benchmark: str = option(
        "humaneval", "a registry name: humaneval, humaneval_plus, mbpp, leetcode, livecodebench, jsonl"
    )
    benchmark_path: str | None = option(None, "a local file or hub id instead of the registry default")
    limit: int | None = option(None, "a fixed, seeded subset of this many problems", check=Within("[1, inf)"))
    release_from: str | None = option(
        None, "date window (YYYY-MM-DD) for dated benchmarks such as livecodebench", check=iso_date
    )
    release_to: str | None = option(None, "end of the date window (YYYY-MM-DD), inclusive", check=iso_date)
    platforms: list[str] = option(factory=list, help="e.g. ['leetcode', 'atcoder']; empty = all")
    prompt_format: str = option(
        "system",
        "as in sampling: 'system' or 'lcb' (the paper's eval prompt: LiveCodeBench's, user only)",
        choices=PROMPT_FORMATS,
    )
    chat_date: str = option(CHAT_DATE, "as in sampling; base and SSD models see the same prompts", check=iso_date)
    reasoning_effort: str | None = option(None, "as in sampling")
    t_eval: float | None = option(
        None,
        "the preset's recommended T_eval for the SSD model (paper Table 3); always swept",
        check=Within("[0, inf)"),
    )
    temperatures: list[float] = option(
        factory=lambda: [0.0],
        help="T_eval grid; 0 = greedy (one sample per problem)",
        check=Within("[0, inf)", nonempty=True),
    )
    top_k: int = option(0, "eval truncation after temperature; 0 = off", check=Within("[0, inf)"))
    top_p: float = option(1.0, "eval top-p after top-k; 1.0 = off", check=Within("(0, 1]"))
    min_p: float = option(0.0, "eval min-p; 0 = off", check=Within("[0, 1)"))
    base_temperature: float | None = option(
        None,
        "The base model's recommended decoding (its model card; paper Table 4). `ssd run` and `ssd sweep` "
        "also evaluate the base model at it, reported beside its best T_eval. None: no recommended setting.",
        check=Within("[0, inf)"),
    )
    base_top_k: int = option(
        0, "top-k of the base model's recommended decoding (with base_temperature)", check=Within("[0, inf)")
    )
    base_top_p: float = option(
        1.0, "top-p of the base model's recommended decoding (with base_temperature)", check=Within("(0, 1]")
    )
    n: int = option(1, "samples per problem at each temperature", check=Within("[1, inf)"))
    test_n: int = option(
        0,
        "> 0: the two-phase protocol. The temperatures are decoded on the dev split only (n samples each), "
        "then the test split only at the temperature chosen on dev (best pass@1), with test_n samples: the "
        "fair selection at a fraction of the full grid's cost. 0: every temperature on every problem.",
        check=Within("[0, inf)"),
    )
    ks: list[int] = option(
        factory=lambda: [1],
        help="the k of pass@k to report (each <= the samples per problem)",
        check=Within("[1, inf)", nonempty=True),
    )
    max_tokens: int = option(1024, "new tokens per reply", check=Within("[1, inf)"))
    max_model_len: int = option(4096, "context length of the engine: prompt plus reply", check=Within("[2, inf)"))
    seed: int = option(0, "seed of the subset, the dev/test split and every request's seed")
    dev_fraction: float = option(
        0.3, "problems used to choose T_eval; scores are reported on the rest", check=Within("[0, 1]")
    )
    oracle: bool = option(False, "grade the benchmark's reference solutions instead of the model's")
    per_request_seeds: bool = option(True, "as in sampling")
    replies: str | None = volatile(
        None,
        "grade these replies instead of a model's: our JSONL (problem_id, reply, temperature), EvalPlus samples.jsonl "
        "or LiveCodeBench custom-evaluator JSON (replies.py); its sha256 is an input",
    )
    replies_format: str | None = volatile(
        None, "the replies file's format; None = detected from its content", choices=REPLY_FORMATS
    )
    grading: str | None = option(
        None, "'strict' or 'lcb' (docs/grading.md); None = the benchmark's own (lcb for livecodebench)"
    )
    sanitize: bool | None = option(
        None,
        "function-style replies keep only the imports and definitions their entry point reaches, as EvalPlus's "
        "sanitize (docs/grading.md); None = the profile's (strict: on, lcb: off). Stdio programs are never sanitized",
    )
    timeout: float | None = option(
        None, "seconds per execution (strict: 10) or per test (lcb: 6); None = the profile's", check=Within("(0, inf)")
    )
    memory_mb: int | None = option(
        None,
        "address-space limit per execution; None = the profile's (strict: 1024, lcb: 8192)",
        check=Within("[1, inf)"),
    )
    dtype: str = option(
        "auto",
        choices=("auto", "float32"),
        help="precision the engine serves the model in: 'auto', the checkpoint's (float32 for a float32 checkpoint, "
        "else bf16 where the hardware computes it natively); 'float32' whatever the checkpoint (weights upcast "
        "exactly). `ssd run` evaluates both models in float32 when the SSD export is float32 (train.export_dtype)",
    )
    backend: str = volatile("vllm", "'vllm' or 'hf'", choices=BACKENDS)
    tensor_parallel_size: int = volatile(1, "GPUs per vLLM engine", check=Within("[1, inf)"))
    max_num_seqs: int | None = volatile(
        None,
        "sequences decoding at once; None = the engine's limit (vLLM's scheduler default, hf 16)",
        check=Within("[1, inf)"),
    )
    ray_address: str | None = volatile(
        None,
        "auto or HOST:PORT of a Ray cluster: blocks go to replicas of the model, "
        "grading to every node (distributed.py)",
    )
    local_replicas: int | None = volatile(None, LOCAL_REPLICAS_HELP, check=Within("[1, inf)"))
    workers: int | None = volatile(
        None, "sandbox workers (per node with ray_address); None = CPU count", check=Within("[1, inf)")
    )
    output_dir: str = volatile("runs/eval", "where results, summary.json and the manifest go")

    def relations(self) -> Iterator[Broken]:
        yield from _reply_fits(self)
        if self.oracle and self.replies:
            yield (
                ("oracle", "replies"),
                "oracle and replies exclude each other: grade either the references or the replies",
            )
        if self.replies and self.test_n:
            yield (
                ("test_n", "replies"),
                "the two-phase decoding protocol does not apply to replies made elsewhere; leave it 0",
            )
        samples = min(self.n, self.test_n or self.n)
        if not self.replies and max(self.ks) > samples:  # replies: checked against the file
            yield (
                ("ks", "n", "test_n"),
                f"pass@{max(self.ks)} needs as many samples per problem, n is {self.n}"
                + (f" and test_n {self.test_n}" if self.test_n else ""),
            )
        if self.release_from and self.release_to and self.release_from > self.release_to:
            yield ("release_from", "release_to"), f"{self.release_from} is after release_to {self.release_to}"


@dataclass
class AnalyzeConfig(Checked):
    """The paper's Figure 6: base and SSD models score the same held-out replies by teacher forcing."""

    base_model: str = option("qwen2.5-coder-0.5b-instruct", "the base model")
    ssd_model: str = option("runs/train/model", "the SSD model (a trained model directory)")
    replies: str = option(
        "runs/eval-base", "an eval dir (held-out problems) or a samples dir: replies neither model trained on"
    )
    limit: int = option(16, "replies scored; each gives hundreds of token positions", check=Within("[1, inf)"))
    # The truncations default to those the models' data were drawn with: only a model trained elsewhere needs them
    # given.
    t_train: float | None = option(
        None,
        "T_train of the training truncation, which defines fork-like and lock-like positions; None: the temperature "
        "of the samples the SSD model was trained on (the manifest of its `ssd train` directory names them)",
        check=Within("[0, inf)"),
    )
    top_k: int | None = option(
        None, "training top-k (with t_train); None: the SSD model's training samples'", check=Within("[0, inf)")
    )
    top_p: float | None = option(
        None, "training top-p (with t_train); None: the SSD model's training samples'", check=Within("(0, 1]")
    )
    t_evals: list[float] = option(
        factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6],
        help="T_eval values of the entropy curves",
        check=Within("[0, inf)", nonempty=True),
    )
    eval_top_k: int | None = option(
        None,
        "top-k of the entropy curves; None: the one the replies were decoded with (their eval's or samples')",
        check=Within("[0, inf)"),
    )
    eval_top_p: float | None = option(
        None, "top-p of the entropy curves; None: the one the replies were decoded with", check=Within("(0, 1]")
    )
    seed: int = option(0, "which replies are scored")
    bf16_on_gpu: bool = option(
        False,
        "teacher-force in bf16 weights on GPUs (fp32 logits per chunk): faster, but bf16 logits tie "
        "top tokens and move survivor counts; CPUs always use fp32",
    )
    output_dir: str = volatile("runs/analysis", "where analysis.json and the Figure 6 plots go")


@dataclass
class FitConfig(Checked):
    """`ssd analyze fit`: how closely a trained model (or one of its checkpoints) matches the SSD target, on
    held-out and training samples. Everything else (base model, samples, truncation, held-out samples)
    is read from the train directory."""

    train_dir: str = option("runs/train", "an `ssd train` output directory (finished or still training)")
    heldout: str | None = option(
        None,
        "a samples dir whose samples are all held out (prompts the model never trained on); "
        "None: the samples the train directory set aside (train.holdout)",
    )
    train_samples: int = option(
        32, "training samples scored beside the held-out ones (a seeded choice)", check=Within("[0, inf)")
    )
    heldout_samples: int | None = option(
        None, "held-out samples scored (a seeded choice); None: all of them", check=Within("[1, inf)")
    )
    seed: int = option(0, "which samples are scored")
    step: int | None = volatile(
        None,
        "the optimizer step to fit: TRAIN_DIR/checkpoints/checkpoint-N or TRAIN_DIR/snapshots/step-N "
        "(0: the base model); None: the finished TRAIN_DIR/model",
        check=Within("[0, inf)"),
    )
    model: str | None = volatile(
        None,
        "a model directory to fit instead of the train directory's (e.g. a merged LoRA "
        "adapter); give --step as its label",
    )
    bf16_on_gpu: bool = volatile(
        False, "teacher-force in bf16 weights on GPUs (fp32 logits per chunk); CPUs always use fp32"
    )
    output_dir: str | None = volatile(None, "where the cached target and the rows go; None: TRAIN_DIR/fit")
    target_from: str | None = volatile(
        None,
        "another fit's output directory that scored the same samples of the same data with the same base model and "
        "truncation (another training run on these samples): its cached target is reused instead of "
        "teacher-forcing the base model again",
    )

    def relations(self) -> Iterator[Broken]:
        if self.model and self.step is None:
            yield ("step", "model"), f"give the training step that model {self.model} holds (the row's label)"


@dataclass
class SweepConfig(Checked):
    """The paper's T_train x T_eval grid (section 3.4): one SSD model per T_train, each evaluated at every T_eval."""

    t_trains: list[float] = option(
        factory=lambda: [1.0, 1.6],
        help="T_train values: one sample set and one SSD model each",
        check=Within("[0, inf)", nonempty=True),
    )
    t_evals: list[float] = option(
        factory=lambda: [0.4, 0.7, 1.0],
        help="T_eval values each model is decoded at",
        check=Within("[0, inf)", nonempty=True),
    )
    metric: str = option(
        "pass@1",
        "the cell value, on all problems of the eval (on dev in the two-phase eval protocol)",
        check=pass_at_k,
    )
    teff_baseline: bool = option(
        True,
        "Also evaluate the base model at T_eff = T_train x T_eval of SSD's best cell: the paper's claim is "
        "that SSD beats any single global temperature, not only the base model's dev-chosen one.",
    )


@dataclass
class ReportConfig(Checked):
    """What `ssd report` states beyond its tables."""

    primary: list[str] = option(
        factory=list,
        volatile=True,
        help="Pre-registered primary endpoints, each 'NAME: pass@K MODEL@T vs MODEL@T' (MODEL: base, ssd, or "
        "ssd-tT_TRAIN in a sweep of several T_train; T: a decoded temperature, 0 = greedy), e.g. 'P1: pass@1 ssd@0.7 "
        "vs base@0.7'. Each is a paired comparison (first minus second) on every problem both evals decoded at those "
        "temperatures; the report adds Holm-adjusted p-values over all of them. It changes no stage's outputs.",
    )


@dataclass
class RunConfig(Checked):
    model: str = option("qwen2.5-coder-0.5b-instruct", "every stage's model unless a section names its own")
    ray_address: str | None = volatile(
        None, "the Ray cluster of every stage that generates or grades (sample, eval) unless a section names its own"
    )
    local_replicas: int | None = volatile(
        None, "sample's and eval's local_replicas unless a section names its own", check=Within("[1, inf)")
    )
    output_dir: str = volatile("runs/default", "the run directory: one hashed directory per stage inside")
    notes: str = volatile("", "where the preset's numbers come from")
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    report: ReportConfig = option(
        factory=ReportConfig, volatile=True, help="what `ssd report` states; no stage reads it"
    )


# ---------------------------------------------------------------- presets


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("selfdistill.presets").iterdir()
        if p.name.endswith(".yaml")
    )


def preset_path(name: str) -> Path:
    path = resources.files("selfdistill.presets") / f"{name}.yaml"
    if not path.is_file():
        hint = difflib.get_close_matches(name, preset_names(), n=1)
        raise ConfigError(
            f"unknown preset {name!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else f"; presets: {', '.join(preset_names())}")
        )
    return Path(str(path))


# ---------------------------------------------------------------- YAML with line numbers


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """Parse a YAML mapping and remember the line of every (dotted) key, for error messages."""
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a date that does not exist, such as 2025-02-30
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of config keys, got {type(data).__name__}")
    lines: dict[str, int] = {}

    def walk(n: yaml.Node, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1
                walk(v, key + ".")

    walk(node, "")
    return data, lines


# ---------------------------------------------------------------- typed assignment


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [v for v in str(value).split(",") if v != ""]  # "0.2,0.4" on the command line
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [
            _check_type(v if not isinstance(v, str) or item is str else yaml.safe_load(v), item, where) for v in value
        ]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-4, without a dot, as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, datetime.date):  # YAML reads an unquoted 2025-02-01 as a date
            return value.isoformat()
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported field type {tp}")


def _apply(cfg: Any, data: dict, where: str, lines: dict[str, int], origins: dict[str, str], prefix: str = "") -> None:
    """Set cfg's fields from data, typed; `origins` records where each value came from ("FILE:LINE")."""
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    names = list(fields)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        loc = f"{where}:{lines[dotted]}" if dotted in lines else where
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            raise ConfigError(
                f"{loc}: unknown key {dotted!r} for {type(cfg).__name__}"
                + (f"; did you mean {prefix + hint[0]!r}?" if hint else f"; valid keys: {', '.join(names)}")
            )
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{loc}: {dotted!r} is a section; expected a mapping, got {value!r}")
            _apply(current, value, where, lines, origins, dotted + ".")
        else:
            setattr(cfg, key, _check_type(value, hints[key], f"{loc}: {dotted}"))
            origins.pop(dotted, None)  # kept in the order the values were last set
            origins[dotted] = loc


def validate(cfg: Any, origins: dict[str, str] | None = None, prefix: str = "") -> None:
    """Check every field of cfg, its sections' included, against its choices and check, then the
    config's relations: the first value that breaks one is a ConfigError naming the field and, from
    `origins` (dotted key -> "FILE:LINE", in the order they were set), where the value came from; for a
    relation, where the last of its values was set."""
    origins = origins or {}
    order = {key: i for i, key in enumerate(origins)}

    def fail(names: tuple[str, ...], problem: str) -> None:
        given = [prefix + n for n in names if prefix + n in origins]
        loc = origins[max(given, key=order.get)] if given else None
        raise ConfigError(f"{loc + ': ' if loc else ''}{prefix}{names[0]}: {problem}")

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, origins, f"{prefix}{f.name}.")
        elif value is not None:
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            if choices and value not in choices:
                fail((f.name,), f"{value!r} is not one of {', '.join(choices)}")
            if check and (problem := check(value)):
                fail((f.name,), problem)
    for names, problem in cfg.relations():
        fail(names, problem)


def parse_overrides(pairs: list[str]) -> dict:
    """`a.b=1 c=x` -> {'a': {'b': 1}, 'c': 'x'}; values are parsed as YAML scalars."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except ValueError:  # a date that does not exist (2025-02-30): kept as text for its field's check
            value = raw
        except yaml.YAMLError as e:
            raise ConfigError(f"override {pair!r}: invalid YAML: {getattr(e, 'problem', e)}") from None
        node = nested
        *parents, leaf = key.strip().replace("-", "_").split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def load_run_config(preset: str | None = None, config_file: str | None = None, overrides: list[str] = ()) -> RunConfig:
    cfg, origins = RunConfig(), {}
    sources = [preset_path(preset)] if preset else []
    if config_file:
        if not Path(config_file).is_file():
            raise ConfigError(f"config file not found: {config_file}")
        sources.append(Path(config_file))
    for path in sources:
        data, lines = _read_yaml(path)
        _apply(cfg, _shared_keys_in_sections(data), str(path), lines, origins)
    _apply(cfg, _shared_keys_in_sections(parse_overrides(list(overrides))), "command line", {}, origins)
    validate(cfg, origins)  # the final values: a later source may mend an earlier one's
    return cfg


def _shared_keys_in_sections(data: dict) -> dict:
    """A top-level `model` is every stage's model, and a top-level `ray_address` (`local_replicas`) the
    cluster (the local replicas) of every stage that has one, unless a section names its own."""
    data = dict(data)
    for section, cls in _sections().items():
        fields = {f.name for f in dataclasses.fields(cls)}
        shared = {key: data["model"] for key in ("model", "base_model") if "model" in data and key in fields}
        shared.update({key: data[key] for key in ("ray_address", "local_replicas") if key in data and key in fields})
        if shared:
            data[section] = {**shared, **(data.get(section) or {})}
    return data


def _sections() -> dict[str, type]:
    """The run config's sections (`sample: SampleConfig`, ...): the stage table's names (stages.py)."""
    return {name: tp for name, tp in typing.get_type_hints(RunConfig).items() if dataclasses.is_dataclass(tp)}


def load_stage_config(cls: type, preset: str | None = None, config_file: str | None = None, overrides: list[str] = ()):
    """A stage's config: its section of the preset or file, then `key=value` overrides relative to
    that section (`ssd sample temperature=1.2` sets sample.temperature)."""
    section = next(name for name, tp in _sections().items() if tp is cls)
    run = load_run_config(preset, config_file, [f"{section}.{o}" for o in overrides])
    return getattr(run, section)


def load_config(cls: type, config_file: str | None = None, overrides: list[str] = ()):
    """A config that is no section of a run (FitConfig): its fields from a YAML file, then `key=value` overrides."""
    cfg, origins = cls(), {}
    if config_file:
        if not Path(config_file).is_file():
            raise ConfigError(f"config file not found: {config_file}")
        data, lines = _read_yaml(Path(config_file))
        _apply(cfg, data, config_file, lines, origins)
    _apply(cfg, parse_overrides(list(overrides)), "command line", {}, origins)
    validate(cfg, origins)
    return cfg


def from_dict(cls: type, data: dict, where: str):
    """A config from a mapping (the config a stage's manifest recorded), its keys, types and values checked as a
    file's are."""
    cfg, origins = cls(), {}
    _apply(cfg, data, where, {}, origins)
    validate(cfg, origins)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def fingerprint_dict(cfg: Any) -> dict:
    """The config minus volatile fields and fields at their default: what must match for two runs to
    share a directory. Defaults are left out so that a new field, whose default keeps the old behaviour,
    leaves finished stage directories valid (a long experiment survives code changes); a default that
    changes behaviour therefore needs a new field name."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("volatile"):
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = fingerprint_dict(value)
        elif value != (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default):
            out[f.name] = value
    return out


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
