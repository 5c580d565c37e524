"""One GPU node, checked end to end in one run (under 10 minutes on one GPU), on a model built here: no
download, no vLLM. Run it through benchmarks/gpu_check.sh, which sets up the environment.

    python benchmarks/gpu_check.py            # CUDA: a 98M-parameter model, timed
    python benchmarks/gpu_check.py --dry-run  # CPU: the same steps with a 2-layer model (or GPU_CHECK_DRY=1)

1. the machine: GPU, torch and its CUDA, the bf16 matmul peak (measured, and the datasheet's where known)
2. the model: random Qwen2-shaped weights in bf16 (12 layers, hidden 768, vocabulary 32,768: 98M
   parameters) with a word-level tokenizer and a ChatML template; a quarter of its words end a line, so
   replies of random tokens are not one-line stubs that `ssd sample` would drop
3. `ssd sample` with the hf backend, per-request seeds: tokens/s, and the CUDA memory this process still
   holds once the generator is closed (`ssd run` then launches training, which needs the GPU free)
4. `ssd train`, full fine-tune, bf16 autocast, 1 GPU, launched the way `ssd run` launches it
   (launch.train_command): tokens/s, MFU = 6 x parameters x tokens/s / bf16 peak
5. the same with LoRA (MFU with 4 x parameters: frozen weights need no weight gradients)
6. FSDP (accelerate/fsdp.yaml) with 1 process: sharded checkpoints; the run is cut back to its first
   checkpoint (later checkpoint, model/ and finished mark removed, as a crash leaves it) and rerun: it
   resumes, reaches the uninterrupted run's final loss and exports model/ in bf16, which transformers loads

Tokens/s are prompt + reply tokens (no padding), the median of the logged steps after the first two.
On CPU, accelerate does not run FSDP (it shards on GPUs only): the dry run's step 6 trains unsharded
and checks the resume and the export. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peak import matmul_peak

from selfdistill.config import SampleConfig, TrainConfig
from selfdistill.launch import train_command
from selfdistill.train import use_bf16

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
# dense bf16 tensor-core peaks from NVIDIA's datasheets (SXM parts unless named); the first match wins
DATASHEET_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("B200", 2250e12)]


@dataclass(frozen=True)
class Size:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    prompts: int
    prompt_words: tuple[int, int]
    max_tokens: int
    global_batch: int
    per_device_batch: int
    steps: int  # optimizer steps of the full and LoRA runs
    fsdp_steps: int  # the FSDP run's; it checkpoints halfway


GPU = Size(768, 2048, 12, 12, 32768, 128, (64, 192), 384, 32, 8, 40, 6)
DRY = Size(64, 128, 2, 4, 512, 8, (8, 24), 24, 4, 2, 3, 4)


class CheckFailed(RuntimeError):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


# ---------------------------------------------------------------- 1. the machine


def machine(device: str, bf16: bool) -> dict:
    precision = torch.bfloat16 if bf16 else torch.float32
    measured = matmul_peak(precision, device)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    datasheet = next((peak for key, peak in DATASHEET_BF16 if key in name), None) if device == "cuda" else None
    print(f"device {name}; torch {torch.__version__} (CUDA {torch.version.cuda}); training precision {'bf16 autocast' if bf16 else 'fp32'}")
    print(f"matmul peak {str(precision).removeprefix('torch.')}: measured {measured / 1e12:.1f} TFLOP/s"
          + (f", datasheet {datasheet / 1e12:.0f} TFLOP/s" if datasheet else ""))  # fmt: skip
    return {"device": name, "measured_peak": measured, "datasheet_peak": datasheet, "peak": datasheet or measured}


# ---------------------------------------------------------------- 2. the model


def words(size: Size) -> list[str]:
    """The vocabulary after the special tokens; every fourth word ends a line."""
    return [f"w{i}" + ("\n" if i % 4 == 0 else "") for i in range(size.vocab - len(SPECIAL))]


def build_model(out: Path, size: Size) -> tuple[Path, int]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {token: i for i, token in enumerate(SPECIAL + words(size))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>")
    tokenizer.chat_template = CHATML
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    eos, pad = vocab["<|im_end|>"], vocab["<|endoftext|>"]
    config = Qwen2Config(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.intermediate, num_hidden_layers=size.layers,
                         num_attention_heads=size.heads, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=eos, pad_token_id=pad)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def write_prompts(path: Path, size: Size) -> Path:
    g = torch.Generator().manual_seed(1)
    plain = [w for w in words(size) if not w.endswith("\n")]
    with open(path, "w") as f:
        for i in range(size.prompts):
            n = int(torch.randint(*size.prompt_words, (1,), generator=g))
            statement = " ".join(plain[int(j)] for j in torch.randint(len(plain), (n,), generator=g))
            f.write(json.dumps({"id": f"p{i}", "question": f"Problem {i}: {statement}"}) + "\n")
    return path


# ---------------------------------------------------------------- 3. sampling


def sample_step(model: Path, prompts: Path, out: Path, size: Size, device: str) -> dict:
    from selfdistill.manifest import load_manifest
    from selfdistill.sample import sample

    cfg = SampleConfig(model=str(model), prompts=str(prompts), decontaminate=[], temperature=1.0, top_k=20, top_p=0.95,
                       max_tokens=size.max_tokens, max_model_len=1024, backend="hf", output_dir=str(out))  # fmt: skip
    sample(cfg)
    manifest = load_manifest(out)
    session = manifest["sessions"][-1]
    check(manifest["counts"]["kept"] >= size.global_batch, f"sampling kept {manifest['counts']['kept']} samples, fewer than one batch")
    held = torch.cuda.memory_allocated() if device == "cuda" else 0
    check(held == 0, f"the closed generator left {held / 2**20:.1f} MiB allocated on the GPU")
    return {"tokens_per_second": session["tokens_per_second"], "detail": f"{session['generated_tokens']} tokens, {manifest['counts']['kept']} samples kept; "
            f"CUDA memory held after close: {held / 2**20:.0f} MiB"}  # fmt: skip


# ---------------------------------------------------------------- 4-6. training


def launch(cfg: TrainConfig, log: Path) -> str:
    """`ssd train` as `ssd run` launches it on a 1-GPU node; its output (also in `log`)."""
    command = train_command(cfg, gpus=1)
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    output = proc.stdout + proc.stderr
    log.write_text(output)
    check(proc.returncode == 0, f"{' '.join(command[:12])} ... exited {proc.returncode}; the end of its output:\n{output[-3000:]}")
    return output


def steady_speed(output: str) -> float:
    speeds = [float(s) for s in re.findall(r"^step \d+/\d+ .* (\d+) tok/s$", output, re.MULTILINE)]
    check(len(speeds) >= 2, "training logged fewer than 2 steps")
    return statistics.median(speeds[2:] or speeds[1:])


def train_step(cfg: TrainConfig, flops_per_token: float, peak: float) -> dict:
    output = launch(cfg, Path(cfg.output_dir).with_suffix(".log"))
    speed = steady_speed(output)
    check(json.loads((Path(cfg.output_dir) / "model" / "config.json").read_text())["dtype"] == "bfloat16", "the exported model is not in bf16")
    return {"tokens_per_second": speed, "mfu": flops_per_token * speed / peak, "detail": f"final loss {final_loss(Path(cfg.output_dir)):.4f}"}


def final_loss(out: Path) -> float:
    return float((out / "loss.csv").read_text().strip().splitlines()[-1].split(",")[2])


def fsdp_step(cfg: TrainConfig, device: str) -> dict:
    from transformers import AutoModelForCausalLM

    out = Path(cfg.output_dir)
    launch(cfg, out.with_suffix(".log"))
    whole = final_loss(out)
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    check(len(checkpoints) == 2, f"expected 2 checkpoints, found {[p.name for p in checkpoints]}")
    first = {p.name for p in checkpoints[0].iterdir()}
    if device == "cuda":  # sharded: every process's part of model and optimizer, no gathered weights
        check("pytorch_model_fsdp_0" in first and "model.safetensors" not in first, f"checkpoint not sharded: {sorted(first)}")
    # as a crash after the first checkpoint leaves the run
    shutil.rmtree(checkpoints[1])
    shutil.rmtree(out / "model")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "finished_at": None}))
    output = " ".join(launch(cfg, out.with_suffix(".resume.log")).split())
    check(f"resuming from {checkpoints[0]}" in output, "the rerun did not resume from the first checkpoint")
    resumed = final_loss(out)
    tolerance = 2e-2 if device == "cuda" else 1e-4  # bf16 kernels on GPU need not be bitwise deterministic
    check(abs(resumed - whole) <= tolerance * abs(whole), f"resumed run ends at loss {resumed:.5f}, the uninterrupted one at {whole:.5f}")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    check(next(model.parameters()).dtype == torch.bfloat16, "the exported model does not load in bf16")
    layout = "sharded checkpoints" if device == "cuda" else "unsharded (no FSDP on CPU)"
    return {"detail": f"{layout}; resumed from {checkpoints[0].name}: final loss {resumed:.4f} (uninterrupted {whole:.4f}); model/ loads in bf16"}


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("GPU_CHECK_DRY") == "1", help="CPU, tiny model, few steps")
    parser.add_argument("--workdir", type=Path, help="where models and runs go (default: a new temporary directory)")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch, or run with --dry-run", file=sys.stderr)
        return 2
    size = DRY if args.dry_run else GPU
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, dict] = {}

    def step(name: str, fn, *fn_args) -> None:
        t = time.perf_counter()
        print(f"--- {name}", flush=True)
        results[name] = {**fn(*fn_args), "seconds": time.perf_counter() - t}
        print(f"{name}: {results[name]['detail']}  ({results[name]['seconds']:.0f} s)", flush=True)

    try:
        peaks = machine(device, use_bf16(True))
        model, params = build_model(work / "model", size)
        print(f"model: {params / 1e6:.1f}M parameters (Qwen2-shaped, random, bf16) in {model}")
        step("sample (hf, seeded)", sample_step, model, write_prompts(work / "prompts.jsonl", size), work / "samples", size, device)
        base = TrainConfig(model=str(model), samples=str(work / "samples"), global_batch_size=size.global_batch, per_device_batch_size=size.per_device_batch,
                           max_steps=size.steps, learning_rate=1e-4, min_learning_rate=1e-5, warmup_ratio=0.0, save_steps=10**6, num_processes=1)  # fmt: skip
        step("train full, 1 process", train_step, replace(base, output_dir=str(work / "full")), 6 * params, peaks["peak"])
        step("train LoRA, 1 process", train_step, replace(base, output_dir=str(work / "lora"), use_lora=True, learning_rate=1e-3), 4 * params, peaks["peak"])
        fsdp = replace(base, output_dir=str(work / "fsdp"), accelerate_config="fsdp", max_steps=size.fsdp_steps, save_steps=size.fsdp_steps // 2)
        step("FSDP, 1 process: resume, export", fsdp_step, fsdp, device)
    except CheckFailed as failure:
        print(f"FAILED: {failure}\n(work directory: {work})", file=sys.stderr)
        return 1
    print(f"\n{'step':<34} {'seconds':>8} {'tokens/s':>10} {'MFU':>6}")
    for name, r in results.items():
        speed = f"{r['tokens_per_second']:.0f}" if "tokens_per_second" in r else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
        print(f"{name:<34} {r['seconds']:>8.0f} {speed:>10} {mfu:>6}")
    basis = "datasheet" if peaks["datasheet_peak"] else "measured"
    print(f"MFU against the {basis} {'bf16' if use_bf16(True) else 'fp32'} peak of {peaks['peak'] / 1e12:.1f} TFLOP/s; "
          f"all checks passed in {time.perf_counter() - start:.0f} s (work directory: {work})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
