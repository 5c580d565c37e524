"""Sampling throughput: the same prompts, spec and seeds through the hf and vllm backends, in one run.

    flock /tmp/selfdistill-heavy.lock .venv/bin/python benchmarks/sampling_throughput.py
    ... --backends vllm --max-tokens 128 --out bench.json

Prints generated tokens/s per backend (the generate() call only; model loading is timed apart), the
vllm/hf ratio (target >= 3), and the share of the machine's matmul peak each achieves:
2 * parameters * tokens/s / peak, with the bf16 and fp32 peaks timed here on a large torch.matmul.
Both backends compute in fp32 on a CPU without native bf16 (AVX512-BF16/AMX), where the bf16 "peak"
is emulation (~1 GFLOP/s) and the fp32 share is the meaningful one. hf runs first: vLLM's CPU worker
pins OpenMP threads for the rest of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from peak import matmul_peak

from selfdistill.generate import SamplingSpec, load_generator
from selfdistill.models import native_bf16
from selfdistill.prompts import build_messages, load_prompts
from selfdistill.sample import sample_seed


def run_backend(backend: str, model: str, prompts: list[list[dict]], spec: SamplingSpec, seeds: list[int], max_model_len: int) -> dict:
    start = time.perf_counter()
    with load_generator(model, backend, max_model_len=max_model_len) as generator:
        load_s = time.perf_counter() - start
        effective = generator.effective_params(spec)
        texts = [generator.chat_prompt(m) for m in prompts]
        start = time.perf_counter()
        out = generator.generate(texts, spec, seeds)
        seconds = time.perf_counter() - start
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            params = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(generator.model_path)).num_parameters(exclude_embeddings=True)  # the embedding lookup is no matmul
    tokens = sum(len(c.token_ids) for completions in out for c in completions)
    finish = [c.finish_reason for completions in out for c in completions]
    return {"backend": backend, "dtype": effective["dtype"], "effective_params": effective, "load_seconds": round(load_s, 1), "generate_seconds": round(seconds, 1), "generated_tokens": tokens,
            "tokens_per_second": tokens / seconds, "parameters": params, "length_capped": finish.count("length"), "stopped": finish.count("stop")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--prompts", default="leetcode-train")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated, run in this order")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    prompts = [build_messages(p.text, p.starter_code, "system") for p in load_prompts(args.prompts, limit=args.num_prompts)]
    spec = SamplingSpec(temperature=1.6, top_k=20, top_p=0.8, max_tokens=args.max_tokens)  # the paper's T_train truncation
    seeds = [sample_seed(0, str(i), 0) for i in range(len(prompts))]
    peak, fp32_peak = matmul_peak(torch.bfloat16), matmul_peak(torch.float32)
    print(f"matmul peak: bf16 {peak / 1e9:.1f} GFLOP/s, fp32 {fp32_peak / 1e9:.1f} GFLOP/s on {os.cpu_count()} CPUs "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
    if not native_bf16():
        print("bf16 is emulated on this CPU (no AVX512-BF16/AMX): both backends run fp32, so read the fp32 share", flush=True)
    results = {"prompts": len(prompts), "spec": vars(spec), "bf16_matmul_peak_flops": peak, "fp32_matmul_peak_flops": fp32_peak, "backends": {}}
    for backend in args.backends.split(","):
        r = run_backend(backend, args.model, prompts, spec, seeds, args.max_model_len)
        r["bf16_peak_fraction"] = 2 * r["parameters"] * r["tokens_per_second"] / peak
        r["fp32_peak_fraction"] = 2 * r["parameters"] * r["tokens_per_second"] / fp32_peak
        results["backends"][backend] = r
        print(f"{backend:5s} {r['tokens_per_second']:7.1f} tokens/s  ({r['generated_tokens']} tokens in {r['generate_seconds']} s; load {r['load_seconds']} s; "
              f"{r['length_capped']} hit max_tokens; {r['dtype']})  {100 * r['bf16_peak_fraction']:.1f}% of the bf16 matmul peak "
              f"({100 * r['fp32_peak_fraction']:.1f}% of fp32)", flush=True)
    if {"hf", "vllm"} <= results["backends"].keys():
        ratio = results["backends"]["vllm"]["tokens_per_second"] / results["backends"]["hf"]["tokens_per_second"]
        results["vllm_over_hf"] = ratio
        print(f"vllm / hf: {ratio:.2f}x (target >= 3x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
