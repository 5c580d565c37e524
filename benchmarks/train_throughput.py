"""Training throughput: `ssd train`'s path (SFTTrainer as train.py builds it) against a plain PyTorch
loop on the same model, batch and length, in one run; then variable-length batches, padded and
packed (padding-free), to show what padding costs and that packing removes it.

    python benchmarks/train_throughput.py                       # CPU: SmolLM2-135M, batch 4 x 128
    python benchmarks/train_throughput.py --model qwen2.5-coder-0.5b-instruct --batch 8 --length 512 --steps 10

Precision is what `ssd train` would choose on this machine (bf16 autocast on CUDA and on CPUs with
native bf16, fp32 elsewhere) for both loops; the script also times a large matmul in fp32 and bf16,
which shows why. Tokens/s counts real (non-padding) tokens, prompt and reply. MFU = FLOPs per token x
tokens/s over the measured peak matmul throughput in the training precision, FLOPs per token counted as
`ssd train` records them for `ssd report` (train.training_flops: 6 per multiplying weight).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from selfdistill.config import TrainConfig
from selfdistill.models import resolve_model
from selfdistill.peak import matmul_peak, sync
from selfdistill.train import (
    Prepared,
    build_trainer,
    quiet_library_progress_bars,
    training_flops,
    use_bf16,
)


def make_examples(lengths: list[int], vocab: int, seed: int) -> list[dict]:
    """Random tokens; the first half of each example is its prompt (no loss), the rest its reply."""
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(100, vocab, (n,), generator=g).tolist(),
            "completion_mask": [0] * (n // 2) + [1] * (n - n // 2),
            "prompt_len": n // 2,
        }
        for n in lengths
    ]


def plain_loop(model_path: str, examples: list[dict], batch: int, steps: int, bf16: bool, device: str) -> float:
    """The baseline: fp32 weights, bf16 autocast if chosen, AdamW, HF's own loss on equal-length batches."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(steps + 1):  # the first step warms up
        rows = examples[step * batch % len(examples) :][:batch]
        ids = torch.tensor([r["input_ids"] for r in rows], device=device)
        labels = torch.tensor(
            [[t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"], strict=True)] for r in rows],
            device=device,
        )
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    del model, optimizer
    gc.collect()
    return sum(len(r["input_ids"]) for r in examples[:batch]) * steps / sum(times[1:])


class StepTimer(TrainerCallback):
    def __init__(self, device: str):
        self.device, self.times = device, []

    def on_step_begin(self, args, state, control, **kwargs):
        sync(self.device)
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.times.append(time.perf_counter() - self.start)


def our_loop(
    model_path: str, tokenizer, examples: list[dict], batch: int, steps: int, packing: bool, device: str
) -> float:
    """train.py's trainer: one optimizer step per batch of `batch` examples, checkpoints off."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(model=model_path, global_batch_size=batch, per_device_batch_size=batch, max_steps=steps + 1,
                          save_steps=10**9, learning_rate=1e-5, min_learning_rate=1e-6, packing=packing,
                          output_dir=out, logging_steps=1)  # fmt: skip
        prep = Prepared(model_path, tokenizer, examples[: batch * (steps + 1)], {}, tokenizer.chat_template, {})
        timer = StepTimer(device)
        trainer, _ = build_trainer(cfg, prep, Path(out), callbacks=[timer])
        trainer.train()
        # TRL's cumulative count of real tokens (attention mask, or the packed row's length)
        tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
        del trainer
        gc.collect()
    return (tokens[-1] - tokens[0]) / sum(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="tokens per example (the mean, for variable lengths)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps, after one warm-up step")
    args = parser.parse_args()
    quiet_library_progress_bars()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = use_bf16(True)
    model_path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    flops = training_flops(AutoModelForCausalLM.from_pretrained(model_path))
    params, flops_per_token = flops["parameters"], flops["flops_per_token"]

    peaks = {name: matmul_peak(dtype, device) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    precision = "bf16" if bf16 else "fp32"
    print(
        f"device {device} ({torch.get_num_threads()} threads), "
        f"matmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s"
    )
    print(
        f"model {args.model} ({params / 1e6:.0f}M parameters), training precision {precision}, "
        f"batch {args.batch} x {args.length} tokens, {args.steps} timed steps"
    )

    n = args.batch * (args.steps + 1)
    fixed = make_examples([args.length] * n, len(tokenizer), seed=0)
    g = torch.Generator().manual_seed(1)
    varied = make_examples(
        torch.randint(args.length // 4, args.length * 7 // 4 + 1, (n,), generator=g).tolist(), len(tokenizer), seed=2
    )
    padded_fraction = 1 - sum(len(e["input_ids"]) for e in varied) / sum(
        args.batch * max(len(e["input_ids"]) for e in varied[i : i + args.batch]) for i in range(0, n, args.batch)
    )

    results = {
        "plain PyTorch loop, equal lengths": plain_loop(model_path, fixed, args.batch, args.steps, bf16, device),
        "ssd train, equal lengths": our_loop(model_path, tokenizer, fixed, args.batch, args.steps, False, device),
        f"ssd train, varied lengths, padded (~{padded_fraction:.0%} padding)": our_loop(
            model_path, tokenizer, varied, args.batch, args.steps, False, device
        ),
        "ssd train, varied lengths, packing (padding-free)": our_loop(
            model_path, tokenizer, varied, args.batch, args.steps, True, device
        ),
    }
    base = results["plain PyTorch loop, equal lengths"]
    peak = peaks[precision]
    print(f"\n{'':<58}{'tokens/s':>10}{'vs plain':>10}{'MFU':>8}")
    for name, tps in results.items():
        print(f"{name:<58}{tps:>10.1f}{tps / base:>9.2f}x{flops_per_token * tps / peak:>8.1%}")


if __name__ == "__main__":
    main()
