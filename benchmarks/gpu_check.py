"""One GPU node, checked end to end in one run (under 8 minutes on one H100), on random models built
here: no download, no vLLM. Run it through benchmarks/gpu_check.sh, which sets up the environment.

    python benchmarks/gpu_check.py            # CUDA, at the sizes below
    python benchmarks/gpu_check.py --dry-run  # CPU: the same steps at tiny sizes (or GPU_CHECK_DRY=1)

Every step prints one line with its measurement, its seconds and its budget; a failed step prints
FAILED with the reason and the run goes on with the steps that do not need it (one run on a lent GPU
then says all it can). Exit status 1 when any check failed or the total passed 8 minutes.

1. environment: GPU, driver, torch and the CUDA it was built for; fails if nvidia-smi (NVML) sees a
   GPU that torch cannot use (no CUDA, another device count, an architecture the build lacks)
2. the bf16 matmul peak, measured (selfdistill/peak.py); MFU below is against it
3. a random Qwen2.5-0.5B-shaped model (24 layers, hidden 896, vocabulary 151,936: 494M parameters) in
   bf16, with a word-level tokenizer and a ChatML template; a quarter of its words end a line, so
   replies of random tokens are not one-line stubs that `ssd sample` would drop
4. `ssd sample` with the hf backend and per-request seeds: tokens/s, and that the closed generator
   leaves no more CUDA memory allocated than there was before it (`ssd run` then trains in new
   processes, which need the GPU free)
5. `ssd train`, full fine-tune, bf16 autocast, launched the way `ssd run` launches it
   (launch.train_command): tokens/s, MFU = the FLOPs per token `ssd train` records (6 per weight that
   multiplies) x tokens/s / measured peak
6. the same with LoRA (4 FLOPs per frozen weight: frozen weights need no weight gradients)
7. long-sequence memory: one training step (train.build_trainer: SFTTrainer, fused AdamW, gradient
   checkpointing) on one example of 69,632 tokens under FSDP2 (accelerate/fsdp.yaml, 1 process), on
   random models of Qwen3-4B's width with 2 and 4 layers and of Qwen3-30B-A3B's width (128 experts,
   top-8) with 1 and 2 layers; peak allocated memory, fitted per family to a per-layer and a constant term
8. GPT-OSS sinks: a tiny random GptOss model, forward and backward with eager attention and with
   flex_attention: the sinks get a gradient, and the two agree (fp32; bf16 autocast reported)
9. FSDP (accelerate/fsdp.yaml) with 1 process: sharded checkpoints; the run is cut back to its first
   checkpoint (later checkpoint, model/ and finished mark removed, as a crash leaves it) and rerun: it
   resumes, reaches the uninterrupted run's final loss and exports model/ in bf16, which transformers loads

Tokens/s are prompt + reply tokens (no padding), the median of the logged steps after the first two.
On CPU, accelerate does not run FSDP (it shards on GPUs only): the dry run's steps 7 and 9 train
unsharded, step 7 reports the launched process's peak RSS instead of CUDA memory, and step 8 runs
eager attention only (transformers refuses attention sinks in flex_attention on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from selfdistill.config import SampleConfig, TrainConfig
from selfdistill.launch import train_command
from selfdistill.peak import matmul_peak
from selfdistill.train import use_bf16

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
# dense bf16 tensor-core peaks from NVIDIA's datasheets (SXM parts unless named), printed beside the measured one
DATASHEET_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("B200", 2250e12),
]
TOTAL_BUDGET_S = 8 * 60


@dataclass(frozen=True)
class Size:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    prompts: int
    prompt_words: int  # the same for every prompt: the hf sampler batches prompts of one length together
    max_tokens: int
    global_batch: int
    per_device_batch: int
    steps: int  # optimizer steps of the full and LoRA runs
    fsdp_steps: int  # the FSDP run's; it checkpoints halfway
    probe_tokens: int  # the memory probe's one example
    dense: dict  # the memory probe's dense width (Qwen3 config fields)
    moe: dict  # and its MoE width (Qwen3Moe config fields)
    sinks: dict  # the GptOss config of step 8
    sinks_tokens: int


QWEN3_4B = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "tie_word_embeddings": True,
}
QWEN3_30B_A3B = {"hidden_size": 2048, "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
                 "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "norm_topk_prob": True,
                 "tie_word_embeddings": False}  # fmt: skip
GPU = Size(896, 4864, 24, 14, 2, 151936, 64, 128, 256, 32, 16, 40, 6, 69632, QWEN3_4B, QWEN3_30B_A3B,
           {"hidden_size": 256, "intermediate_size": 256, "head_dim": 64, "num_attention_heads": 8,
            "num_key_value_heads": 2, "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": 128,
            "num_hidden_layers": 2, "vocab_size": 1024}, 512)  # fmt: skip
DRY = Size(64, 128, 2, 4, 2, 512, 8, 16, 24, 4, 2, 3, 4, 256,
           {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "tie_word_embeddings": True},
           {"hidden_size": 64, "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "norm_topk_prob": True,
            "tie_word_embeddings": False},
           {"hidden_size": 64, "intermediate_size": 64, "head_dim": 16, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 16,
            "num_hidden_layers": 2, "vocab_size": 256}, 64)  # fmt: skip
# Seconds each step may take on one H100, estimated from the dry run's times on the 2-core development
# machine (process starts and imports, which a 16-core GPU host does no slower) plus the GPU work at the
# measured peak and a margin; docs/training.md shows the arithmetic. A step over budget is reported.
BUDGET_S = {"environment": 10, "bf16 matmul peak": 10, "model": 25, "sample (hf, seeded)": 40,
            "train full, 1 process": 60, "train LoRA, 1 process": 60, "long-sequence memory, FSDP2": 110,
            "GPT-OSS sinks: eager vs flex": 75, "FSDP, 1 process: resume, export": 80}  # fmt: skip


class CheckFailed(RuntimeError):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


# ---------------------------------------------------------------- 1-2. the machine


def nvml_gpus() -> list[dict]:
    """The GPUs NVML sees (through nvidia-smi, which every driver installs), whatever torch makes of them."""
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    )
    check(out.returncode == 0, f"nvidia-smi failed: {out.stderr.strip() or out.stdout.strip()}")
    return [
        dict(zip(("name", "driver", "memory"), (f.strip() for f in line.split(",")), strict=True))
        for line in out.stdout.strip().splitlines()
    ]


def environment(device: str) -> dict:
    gpus = nvml_gpus()
    build = (
        f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"
        if torch.version.cuda
        else f"torch {torch.__version__} (no CUDA build)"
    )
    if device == "cpu":
        return {"detail": f"CPU dry run; {build}; nvidia-smi sees {len(gpus)} GPU(s)"}
    check(bool(gpus), f"nvidia-smi sees no GPU; {build}")
    seen = f"{len(gpus)} x {gpus[0]['name']} ({gpus[0]['memory']}), driver {gpus[0]['driver']}"
    check(
        torch.cuda.is_available(),
        f"NVML sees {seen} but torch cannot use it: {build} (a CUDA 13 build needs driver R580 or newer)",
    )
    check(torch.cuda.device_count() == len(gpus), f"NVML sees {len(gpus)} GPUs, torch {torch.cuda.device_count()}")
    major, minor = torch.cuda.get_device_capability()
    arches = torch.cuda.get_arch_list()
    # a kernel for this architecture, or PTX of an older one that the driver compiles for it
    runs = f"sm_{major}{minor}" in arches or any(
        a.startswith("compute_") and int(re.sub(r"\D", "", a)) <= major * 10 + minor for a in arches
    )
    check(runs, f"{gpus[0]['name']} is sm_{major}{minor}; this torch build has kernels for {' '.join(arches)} only")
    return {"detail": f"{seen}; {build}; sm_{major}{minor} in its kernels"}


def machine_peak(device: str, bf16: bool) -> dict:
    precision = torch.bfloat16 if bf16 else torch.float32
    measured = matmul_peak(precision, device)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    datasheet = (
        next((peak for key, peak in DATASHEET_BF16 if key in name), None) if device == "cuda" and bf16 else None
    )
    note = f" (datasheet {datasheet / 1e12:.0f} TFLOP/s: {measured / datasheet:.0%} of it)" if datasheet else ""
    return {
        "peak": measured,
        "detail": f"{str(precision).removeprefix('torch.')} on {name}: measured {measured / 1e12:.2f} TFLOP/s{note}",
    }


# ---------------------------------------------------------------- 3. the model


def words(vocab: int) -> list[str]:
    """The vocabulary after the special tokens; every fourth word ends a line."""
    return [f"w{i}" + ("\n" if i % 4 == 0 else "") for i in range(vocab - len(SPECIAL))]


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + words(vocab_size))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHATML
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return tokenizer


def save_random_model(out: Path, config, tokenizer) -> int:
    """A random model of `config` in bf16 (built on the GPU when there is one: initializing billions of
    parameters on the CPU takes minutes) saved with `tokenizer`; its parameter count."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    with_token_ids(config, tokenizer)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return params


def with_token_ids(config, tokenizer):
    config.eos_token_id, config.pad_token_id, config.bos_token_id = (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        None,
    )
    return config


def build_model(out: Path, size: Size) -> dict:
    from transformers import Qwen2Config

    config = Qwen2Config(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.intermediate,
                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                         num_key_value_heads=size.kv_heads, max_position_embeddings=4096,
                         tie_word_embeddings=True)  # fmt: skip
    params = save_random_model(out, config, build_tokenizer(size.vocab))
    return {
        "path": out,
        "params": params,
        "detail": f"{params / 1e6:.1f}M parameters (Qwen2, {size.layers} x {size.hidden}, random, bf16) in {out}",
    }


def write_prompts(path: Path, size: Size) -> Path:
    g = torch.Generator().manual_seed(1)
    plain = [w for w in words(size.vocab) if not w.endswith("\n")]
    with open(path, "w") as f:
        for i in range(size.prompts):
            statement = " ".join(plain[int(j)] for j in torch.randint(len(plain), (size.prompt_words,), generator=g))
            f.write(json.dumps({"id": f"p{i}", "question": f"Problem: {statement}"}) + "\n")
    return path


# ---------------------------------------------------------------- 4. sampling


def sample_step(model: Path, prompts: Path, out: Path, size: Size, device: str) -> dict:
    from selfdistill.manifest import load_manifest
    from selfdistill.sample import sample

    cfg = SampleConfig(model=str(model), prompts=str(prompts), decontaminate=[], temperature=1.0, top_k=20, top_p=0.95,
                       max_tokens=size.max_tokens, max_model_len=1024, backend="hf", max_num_seqs=size.prompts,
                       output_dir=str(out))  # fmt: skip
    before = torch.cuda.memory_allocated() if device == "cuda" else 0
    sample(cfg)
    manifest = load_manifest(out)
    session = manifest["sessions"][-1]
    check(
        manifest["counts"]["kept"] >= size.global_batch,
        f"sampling kept {manifest['counts']['kept']} samples, fewer than one batch",
    )
    held = torch.cuda.memory_allocated() if device == "cuda" else 0
    check(
        held <= before,
        f"the closed generator left {(held - before) / 2**20:.1f} MiB more allocated on the GPU than before it",
    )
    return {"tokens_per_second": session["tokens_per_second"],
            "detail": f"{session['tokens_per_second']:.0f} tokens/s, {session['generated_tokens']} tokens, "
                      f"{manifest['counts']['kept']} samples kept; "
                      f"CUDA memory allocated after close {held / 2**20:.0f} MiB "
                      f"(before {before / 2**20:.0f} MiB)"}  # fmt: skip


# ---------------------------------------------------------------- 5-6, 9. `ssd train`


def launch(cfg: TrainConfig, log: Path) -> str:
    """`ssd train` as `ssd run` launches it on a 1-GPU node; its output (also in `log`)."""
    return run_logged(train_command(cfg, gpus=1), log)


def run_logged(command: list[str], log: Path) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    output = proc.stdout + proc.stderr
    log.write_text(output)
    check(
        proc.returncode == 0,
        f"{' '.join(command[:12])} ... exited {proc.returncode} (log {log}); the end of its output:\n{output[-3000:]}",
    )
    return output


def steady_speed(output: str) -> float:
    speeds = [float(s) for s in re.findall(r"^step \d+/\d+ .* (\d+) tok/s$", output, re.MULTILINE)]
    check(len(speeds) >= 2, "training logged fewer than 2 steps")
    return statistics.median(speeds[2:] or speeds[1:])


def final_loss(out: Path) -> float:
    return float((out / "loss.csv").read_text().strip().splitlines()[-1].split(",")[2])


def train_step(cfg: TrainConfig, peak: float) -> dict:
    output = launch(cfg, Path(cfg.output_dir).with_suffix(".log"))
    speed = steady_speed(output)
    check(
        json.loads((Path(cfg.output_dir) / "model" / "config.json").read_text())["dtype"] == "bfloat16",
        "the exported model is not in bf16",
    )
    # the FLOPs per token `ssd train` recorded (train.compute_budget): the count `ssd report`'s MFU uses too
    flops_per_token = json.loads((Path(cfg.output_dir) / "manifest.json").read_text())["compute"]["flops_per_token"]
    mfu = flops_per_token * speed / peak
    return {
        "tokens_per_second": speed,
        "mfu": mfu,
        "detail": f"{speed:.0f} tokens/s, MFU {mfu:.1%}; final loss {final_loss(Path(cfg.output_dir)):.4f}",
    }


def fsdp_step(cfg: TrainConfig, device: str) -> dict:
    from transformers import AutoModelForCausalLM

    out = Path(cfg.output_dir)
    launch(cfg, out.with_suffix(".log"))
    whole = final_loss(out)
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    check(len(checkpoints) == 2, f"expected 2 checkpoints, found {[p.name for p in checkpoints]}")
    first = {p.name for p in checkpoints[0].iterdir()}
    if device == "cuda":  # sharded: every process's part of model and optimizer, no gathered weights
        check(
            "pytorch_model_fsdp_0" in first and "model.safetensors" not in first,
            f"checkpoint not sharded: {sorted(first)}",
        )
    # as a crash after the first checkpoint leaves the run
    shutil.rmtree(checkpoints[1])
    shutil.rmtree(out / "model")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "finished_at": None}))
    output = " ".join(launch(cfg, out.with_suffix(".resume.log")).split())
    check(f"resuming from {checkpoints[0]}" in output, "the rerun did not resume from the first checkpoint")
    resumed = final_loss(out)
    tolerance = 2e-2 if device == "cuda" else 1e-4  # bf16 kernels on GPU need not be bitwise deterministic
    check(
        abs(resumed - whole) <= tolerance * abs(whole),
        f"resumed run ends at loss {resumed:.5f}, the uninterrupted one at {whole:.5f}",
    )
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    check(next(model.parameters()).dtype == torch.bfloat16, "the exported model does not load in bf16")
    layout = "sharded checkpoints" if device == "cuda" else "unsharded (no FSDP on CPU)"
    return {
        "detail": f"{layout}; resumed from {checkpoints[0].name}: final loss {resumed:.4f} "
        f"(uninterrupted {whole:.4f}); model/ reloads in bf16"
    }


# ---------------------------------------------------------------- 7. long-sequence memory


def probe_models(work: Path, size: Size, tokenizer_dir: Path) -> list[dict]:
    """The probe's models: dense at 2 and 4 layers, MoE at 1 and 2. Each family is saved once at its
    larger depth; the shallower one is a config beside the same weights (from_pretrained ignores the
    layers its config does not have)."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3MoeConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    models = []
    for family, config_class, fields, depths in (
        ("dense", Qwen3Config, size.dense, (2, 4)),
        ("moe", Qwen3MoeConfig, size.moe, (1, 2)),
    ):

        def config(layers: int, config_class=config_class, fields=fields):
            return config_class(
                vocab_size=size.vocab, num_hidden_layers=layers, max_position_embeddings=size.probe_tokens, **fields
            )

        deep, shallow = work / f"{family}-{depths[1]}", work / f"{family}-{depths[0]}"
        save_random_model(deep, config(depths[1]), tokenizer)
        shallow.mkdir()
        for f in deep.iterdir():
            if f.name != "config.json":
                (shallow / f.name).symlink_to(f)
        with_token_ids(config(depths[0]), tokenizer).save_pretrained(shallow)
        models += [
            {"family": family, "layers": depths[0], "path": str(shallow)},
            {"family": family, "layers": depths[1], "path": str(deep)},
        ]
    return models


def memory_step(work: Path, size: Size, tokenizer_dir: Path, device: str) -> dict:
    """One launched process (FSDP2 recipe, 1 process) trains one step on each probe model in turn."""
    models = probe_models(work, size, tokenizer_dir)
    spec = work / "probe.json"
    spec.write_text(
        json.dumps(
            {"models": models, "tokens": size.probe_tokens, "vocab": size.vocab, "out": str(work / "probe-runs")}
        )
    )
    cfg = TrainConfig(accelerate_config="fsdp")
    command = train_command(cfg, gpus=1)
    launcher = command[
        : command.index("-m", 3)
    ]  # accelerate launch with the FSDP2 recipe, running the probe instead of `ssd train`
    output = run_logged(launcher + [str(Path(__file__).resolve()), "--memory-probe", str(spec)], work / "probe.log")
    results = [json.loads(line.removeprefix("PROBE ")) for line in output.splitlines() if line.startswith("PROBE ")]
    check(
        len(results) == len(models),
        f"the probe reported {len(results)} of {len(models)} models (log {work / 'probe.log'})",
    )
    what = (
        "peak CUDA memory allocated"
        if device == "cuda"
        else "peak RSS of the process so far (CPU: no FSDP, not comparable with the plan)"
    )
    parts = []
    for family in ("dense", "moe"):
        (l1, p1), (l2, p2) = [(r["layers"], r["peak_bytes"]) for r in results if r["family"] == family]
        per_layer = (p2 - p1) / (l2 - l1)
        steps = ", ".join(f"{r['layers']} layers {gib(r['peak_bytes'])} ({r['step_seconds']:.1f} s"
                          + (f", {gib(r['allocated_before_bytes'])} left by the model before"
                             if r["allocated_before_bytes"] else "")
                          + f"; ssd plan {gib(planned_peak(r['path'], size.probe_tokens))})"
                          for r in results if r["family"] == family)  # fmt: skip
        parts.append(f"{family}: {steps}; fit {gib(p1 - l1 * per_layer)} + {gib(per_layer)} per layer")
    return {"detail": f"{what}, one step of {size.probe_tokens:,} tokens: " + "; ".join(parts)}


def planned_peak(model_path: str, tokens: int) -> int:
    """`ssd plan`'s prediction of the probe's peak allocation (one process, FSDP, checkpointing): its
    terms less the allowance for the CUDA context and NCCL, which the allocator does not see."""
    from transformers import AutoConfig

    from selfdistill.plan import ModelShape, TrainSetup, training_memory

    terms = training_memory(ModelShape.of(AutoConfig.from_pretrained(model_path)), TrainSetup(seq_len=tokens, gpus=1))
    return sum(v for k, v in terms.items() if k != "CUDA context, NCCL, slack")


def memory_probe_child(spec_file: Path) -> int:
    """Run under `accelerate launch` (memory_step): one optimizer step per probe model, printing
    `PROBE {json}` with the peak memory. The trainer is train.py's own (gradient checkpointing on, its
    optimizer and fused LM-head loss), on one example of random tokens (train_throughput.make_examples)."""
    import gc

    from train_throughput import StepTimer, make_examples
    from transformers import AutoTokenizer

    from selfdistill.train import Prepared, build_trainer, quiet_library_progress_bars

    quiet_library_progress_bars()
    spec = json.loads(spec_file.read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for model in spec["models"]:
        tokenizer = AutoTokenizer.from_pretrained(model["path"])
        examples = make_examples([spec["tokens"]], spec["vocab"], seed=0)
        out = Path(spec["out"]) / f"{model['family']}-{model['layers']}"
        cfg = TrainConfig(model=model["path"], global_batch_size=1, per_device_batch_size=1, max_steps=1,
                          save_steps=10**9, logging_steps=1, gradient_checkpointing=True,
                          output_dir=str(out))  # fmt: skip
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        left = torch.cuda.memory_allocated() if device == "cuda" else 0  # by the model before: should be 0
        timer = StepTimer(device)
        trainer, _ = build_trainer(
            cfg, Prepared(model["path"], tokenizer, examples, {}, tokenizer.chat_template, {}), out, callbacks=[timer]
        )
        trainer.train()
        peak = (
            torch.cuda.max_memory_allocated()
            if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        reserved = torch.cuda.max_memory_reserved() if device == "cuda" else 0
        print(
            "PROBE "
            + json.dumps(
                {
                    **model,
                    "peak_bytes": peak,
                    "reserved_bytes": reserved,
                    "allocated_before_bytes": left,
                    "step_seconds": timer.times[0],
                }
            ),
            flush=True,
        )
        del trainer
        gc.collect()
    return 0


# ---------------------------------------------------------------- 8. GPT-OSS sinks


def sinks_step(size: Size, device: str) -> dict:
    """Loss and gradients of one batch through eager attention (what `ssd train` uses for GPT-OSS) and
    flex_attention, from the same weights: every layer's sinks must get a finite, nonzero gradient, and
    the two kernels must agree in fp32. bf16 autocast (training's precision) is reported, not checked."""
    from transformers import AutoModelForCausalLM, GptOssConfig

    config = GptOssConfig(**size.sinks)
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(device).train()
    ids = torch.randint(config.vocab_size, (2, size.sinks_tokens), generator=torch.Generator().manual_seed(1)).to(
        device
    )

    def loss_and_grads(model, bf16: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item(), {
            n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None
        }

    loss, grads = loss_and_grads(eager, False)
    sinks = {n: g for n, g in grads.items() if n.endswith("sinks")}
    check(
        len(sinks) == config.num_hidden_layers,
        f"{len(sinks)} of {config.num_hidden_layers} layers' sinks got a gradient",
    )
    for name, g in sinks.items():
        check(bool(torch.isfinite(g).all()) and float(g.abs().max()) > 0, f"{name}: gradient {g.tolist()}")
    smallest = min(float(g.abs().max()) for g in sinks.values())
    line = (
        f"eager: sinks of all {len(sinks)} layers get a gradient (smallest max |grad| {smallest:.2e}), loss {loss:.4f}"
    )
    if device == "cpu":
        return {"detail": line + "; flex_attention not run (transformers refuses sinks in it on CPU)"}

    flex = AutoModelForCausalLM.from_config(config, attn_implementation="flex_attention").to(device).train()
    flex.load_state_dict(eager.state_dict())
    compared = []
    for bf16 in (False, True):
        (a, ga), (b, gb) = loss_and_grads(eager, bf16), loss_and_grads(flex, bf16)
        check(
            set(ga) == set(gb),
            f"parameters with a gradient under eager only: {sorted(set(ga) - set(gb))}, "
            f"flex only: {sorted(set(gb) - set(ga))}",
        )
        worst = max(grads_differ(ga[n], gb[n]) for n in ga)
        sink = max(grads_differ(ga[n], gb[n]) for n in ga if n.endswith("sinks"))
        compared.append((bf16, abs(a - b) / abs(a), worst, sink))
    _, loss_diff, worst, _ = compared[0]
    check(
        loss_diff < 1e-4 and worst < 1e-2,
        f"flex_attention differs from eager in fp32: loss by {loss_diff:.1e}, "
        f"gradients by up to {worst:.1e} (relative)",
    )
    described = "; ".join(
        f"{'bf16 autocast' if bf16 else 'fp32'} loss {d:.1e}, gradients {w:.1e} (sinks {s:.1e})"
        for bf16, d, w, s in compared
    )
    return {"detail": f"{line}; flex vs eager, relative difference: {described}"}


def grads_differ(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm().clamp_min(1e-30))


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=os.environ.get("GPU_CHECK_DRY") == "1",
        help="CPU, tiny models, few steps",
    )
    parser.add_argument("--workdir", type=Path, help="where models and runs go (default: a new temporary directory)")
    parser.add_argument("--memory-probe", type=Path, help=argparse.SUPPRESS)  # step 7's launched process
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe_child(args.memory_probe)
    device = "cpu" if args.dry_run else "cuda"
    size = DRY if args.dry_run else GPU
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, dict] = {}
    failed: list[str] = []

    def step(name: str, fn, *fn_args, needs: tuple[str, ...] = ()) -> dict | None:
        missing = [n for n in needs if n not in results]
        if missing:
            failed.append(name)
            print(f"{name}: SKIPPED (needs {', '.join(missing)})", flush=True)
            return None
        t = time.perf_counter()
        try:
            result = fn(*fn_args)
        except Exception as e:  # one failed step must not cost the rest of a run on a lent GPU
            failed.append(name)
            (work / "failures.log").open("a").write(f"--- {name}\n{traceback.format_exc()}\n")
            reason = str(e) if isinstance(e, CheckFailed) else f"{type(e).__name__}: {e}"
            print(
                f"{name}: FAILED after {time.perf_counter() - t:.0f} s: {reason}  "
                f"(traceback in {work / 'failures.log'})",
                flush=True,
            )
            return None
        seconds = time.perf_counter() - t
        results[name] = {**result, "seconds": seconds}
        over = " OVER BUDGET" if seconds > BUDGET_S[name] and device == "cuda" else ""
        print(f"{name}: {result['detail']}  ({seconds:.0f} s of {BUDGET_S[name]} s budgeted{over})", flush=True)
        return results[name]

    bf16 = use_bf16(True)
    if not step("environment", environment, device):
        return 1  # nothing else can run on a GPU torch cannot use
    peak = step("bf16 matmul peak", machine_peak, device, bf16)
    model = step("model", build_model, work / "model", size)
    if model:
        step(
            "sample (hf, seeded)",
            sample_step,
            model["path"],
            write_prompts(work / "prompts.jsonl", size),
            work / "samples",
            size,
            device,
        )
    base = TrainConfig(model=str(work / "model"), samples=str(work / "samples"), global_batch_size=size.global_batch,
                       per_device_batch_size=size.per_device_batch, max_steps=size.steps, learning_rate=1e-4,
                       min_learning_rate=1e-5, warmup_ratio=0.0, save_steps=10**6, num_processes=1)  # fmt: skip
    measured = (peak or {}).get("peak", 1.0)
    needs = ("model", "sample (hf, seeded)", "bf16 matmul peak")
    step(
        "train full, 1 process",
        train_step,
        replace(base, output_dir=str(work / "full")),
        measured,
        needs=needs,
    )
    step(
        "train LoRA, 1 process",
        train_step,
        replace(base, output_dir=str(work / "lora"), use_lora=True, learning_rate=1e-3),
        measured,
        needs=needs,
    )
    step("long-sequence memory, FSDP2", memory_step, work / "probe", size, work / "model", device, needs=("model",))
    step("GPT-OSS sinks: eager vs flex", sinks_step, size, device)
    fsdp = replace(
        base,
        output_dir=str(work / "fsdp"),
        accelerate_config="fsdp",
        max_steps=size.fsdp_steps,
        save_steps=size.fsdp_steps // 2,
    )
    step("FSDP, 1 process: resume, export", fsdp_step, fsdp, device, needs=needs[:2])

    total = time.perf_counter() - start
    late = device == "cuda" and total > TOTAL_BUDGET_S
    verdict = f"{len(failed)} step(s) failed: {', '.join(failed)}" if failed else "all checks passed"
    print(
        f"\n{verdict} in {total:.0f} s"
        + (f", over the {TOTAL_BUDGET_S} s budget" if late else "")
        + f" (work directory: {work})"
    )
    return 1 if failed or late else 0


if __name__ == "__main__":
    sys.exit(main())
