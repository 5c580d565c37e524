"""Sampling throughput, in one run: the hf and vllm backends on the same prompts, spec and seeds, or
(--compare) one vLLM job run as closed batches and as one continuously batched stream.

    flock /tmp/selfdistill-heavy.lock .venv/bin/python benchmarks/sampling_throughput.py
    ... --backends vllm --max-tokens 128 --out bench.json
    ... --compare --model smollm2-135m-instruct --prompts 256 --max-tokens 512 --out compare.json
    ... --decode-curve 1,4,16,64,256,512 --max-num-seqs 512 --out curve.json

Backends: generated tokens/s per backend (the generate() call only; model loading is timed apart), the
vllm/hf ratio (target >= 3), and the share of the machine's matmul peak each achieves:
2 * parameters * tokens/s / peak, with the bf16 and fp32 peaks timed here on a large torch.matmul.
Both backends compute in fp32 on a CPU without native bf16 (AVX512-BF16/AMX), where the bf16 "peak"
is emulation (~1 GFLOP/s) and the fp32 share is the meaningful one. hf runs first: vLLM's CPU worker
pins OpenMP threads for the rest of the process.

--compare, on one engine: the engine's prefill rate (a prefill-only batch: max_tokens=1) and decode
rate (every sequence in flight, timed between the last prefill and the first finished reply), then
the job as `ssd sample` ran it before streaming (closed batches of --closed-batch prompts, each
waiting for its longest reply) and as it runs now (Generator.stream, up to max_num_seqs in flight).
ideal = generated / (prompt tokens / prefill rate + generated / decode rate): the job with every
sequence slot always busy and prefill and decode taking turns. vLLM also runs new prefills inside
decode steps, a little cheaper than in turn, so a stream can pass it (1.02-1.13 of it here). The
prefix cache is emptied before each timed part, so none reuses another's prompts. With --gguf FILE
and llama-cpp-python installed, llama.cpp decodes the first --anchor-prompts prompts one at a time
(its Python API runs one sequence) as an outside anchor.

--decode-curve measures only the decode rate at each of several concurrencies (every sequence
shares the first prompt, so the prefix cache makes their prefill nearly free; each still attends
over its whole context): the best max_num_seqs for this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import torch

from selfdistill.chat import build_messages
from selfdistill.decoding import request_seed
from selfdistill.generate import Request, SamplingSpec, load_generator
from selfdistill.models import native_bf16
from selfdistill.peak import matmul_peak
from selfdistill.prompts import load_prompts


def run_backend(
    backend: str, model: str, prompts: list[list[dict]], spec: SamplingSpec, seeds: list[int], max_model_len: int
) -> dict:
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
            params = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(generator.model_path)).num_parameters(
                exclude_embeddings=True
            )  # the embedding lookup is no matmul
    tokens = sum(len(c.token_ids) for completions in out for c in completions)
    finish = [c.finish_reason for completions in out for c in completions]
    return {
        "backend": backend,
        "dtype": effective["dtype"],
        "effective_params": effective,
        "load_seconds": round(load_s, 1),
        "generate_seconds": round(seconds, 1),
        "generated_tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "parameters": params,
        "length_capped": finish.count("length"),
        "stopped": finish.count("stop"),
    }


def compare_backends(args, prompts: list[list[dict]], spec: SamplingSpec, seeds: list[int]) -> dict:
    peak, fp32_peak = matmul_peak(torch.bfloat16), matmul_peak(torch.float32)
    print(
        f"matmul peak: bf16 {peak / 1e9:.1f} GFLOP/s, fp32 {fp32_peak / 1e9:.1f} GFLOP/s on {os.cpu_count()} CPUs "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)",
        flush=True,
    )
    if not native_bf16():
        print(
            "bf16 is emulated on this CPU (no AVX512-BF16/AMX): both backends run fp32, so read the fp32 share",
            flush=True,
        )
    results = {
        "prompts": len(prompts),
        "spec": vars(spec),
        "bf16_matmul_peak_flops": peak,
        "fp32_matmul_peak_flops": fp32_peak,
        "backends": {},
    }
    for backend in args.backends.split(","):
        r = run_backend(backend, args.model, prompts, spec, seeds, args.max_model_len)
        r["bf16_peak_fraction"] = 2 * r["parameters"] * r["tokens_per_second"] / peak
        r["fp32_peak_fraction"] = 2 * r["parameters"] * r["tokens_per_second"] / fp32_peak
        results["backends"][backend] = r
        print(
            f"{backend:5s} {r['tokens_per_second']:7.1f} tokens/s  ({r['generated_tokens']} tokens in "
            f"{r['generate_seconds']} s; load {r['load_seconds']} s; {r['length_capped']} hit max_tokens; "
            f"{r['dtype']})  {100 * r['bf16_peak_fraction']:.1f}% of the bf16 matmul peak "
            f"({100 * r['fp32_peak_fraction']:.1f}% of fp32)",
            flush=True,
        )
    if {"hf", "vllm"} <= results["backends"].keys():
        ratio = results["backends"]["vllm"]["tokens_per_second"] / results["backends"]["hf"]["tokens_per_second"]
        results["vllm_over_hf"] = ratio
        print(f"vllm / hf: {ratio:.2f}x (target >= 3x)")
    return results


# ------------------------------------------------------------------------ --compare: closed batches against the stream


def prefill_rate(generator, requests: list[Request]) -> dict:
    """Prompt tokens/s of a prefill-only batch: max_tokens=1, so no request ever decodes."""
    generator.llm.reset_prefix_cache()
    start = time.perf_counter()
    out = generator.generate(
        [r.prompt for r in requests], replace(requests[0].spec, max_tokens=1), [r.seed for r in requests]
    )
    seconds = time.perf_counter() - start
    tokens = sum(c[0].prompt_tokens for c in out)
    return {
        "prompts": len(requests),
        "prompt_tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": tokens / seconds,
    }


def decode_rate(generator, requests: list[Request], concurrency: int, tokens: int) -> dict:
    """Generated tokens/s with `concurrency` sequences decoding, none stopping (ignore_eos): timed from
    the step that completes the last prefill to the first finished reply, through the engine's step API."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    engine = generator.llm.llm_engine
    generator.llm.reset_prefix_cache()
    for k in range(concurrency):
        r = requests[k % len(requests)]
        params = SamplingParams(
            temperature=r.spec.temperature,
            top_k=r.spec.top_k,
            top_p=r.spec.top_p,
            seed=r.seed + k,
            max_tokens=1 + tokens,
            ignore_eos=True,
            output_kind=RequestOutputKind.DELTA,
        )
        engine.add_request(
            f"decode-{k}",
            TokensPrompt(prompt_token_ids=generator.tokenizer(r.prompt, add_special_tokens=False)["input_ids"]),
            params,
        )
    started, window_start, produced = set(), None, 0
    while True:
        outputs = engine.step()
        now = time.perf_counter()
        if window_start is not None:
            produced += sum(len(o.outputs[0].token_ids) for o in outputs)
        started.update(o.request_id for o in outputs)
        if any(o.finished for o in outputs):
            break
        if window_start is None and len(started) == concurrency:
            window_start = now
    engine.abort_request([f"decode-{k}" for k in range(concurrency)])
    if window_start is None:
        raise SystemExit(
            f"a reply finished before all {concurrency} sequences were prefilled (the KV cache holds fewer): "
            "lower --decode-concurrency"
        )
    return {
        "concurrency": concurrency,
        "tokens": produced,
        "seconds": round(now - window_start, 1),
        "tokens_per_second": produced / (now - window_start),
    }


def timed_job(generator, run) -> dict:
    generator.llm.reset_prefix_cache()
    start = time.perf_counter()
    replies = run()
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for completions in replies for c in completions)
    return {
        "seconds": round(seconds, 1),
        "generated_tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "replies": replies,
    }


def closed_batches(generator, requests: list[Request], size: int) -> list:
    """The job as `ssd sample` ran it before streaming: one generate() per batch, each waiting for its longest
    reply."""
    return [
        completions
        for k in range(0, len(requests), size)
        for completions in generator.generate(
            [r.prompt for r in requests[k : k + size]],
            [r.spec for r in requests[k : k + size]],
            [r.seed for r in requests[k : k + size]],
        )
    ]


def streamed(generator, requests: list[Request]) -> list:
    return [completions for _, completions in sorted(generator.stream(requests), key=lambda item: item[0])]


def llama_cpp_anchor(gguf: str, requests: list[Request], n_ctx: int) -> dict:
    """llama.cpp (llama-cpp-python, when installed) on the same prompts and truncation, one sequence at a time."""
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=n_ctx, n_threads=os.cpu_count(), verbose=False)
    start, tokens = time.perf_counter(), 0
    for r in requests:
        out = llm.create_completion(
            r.prompt,
            max_tokens=r.spec.max_tokens,
            temperature=r.spec.temperature,
            top_k=r.spec.top_k,
            top_p=r.spec.top_p,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=r.seed % 2**31,
        )
        tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - start
    return {
        "gguf": gguf,
        "prompts": len(requests),
        "generated_tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": tokens / seconds,
    }


def compare_closed_and_stream(args, prompts: list[list[dict]], spec: SamplingSpec, seeds: list[int]) -> dict:
    with load_generator(
        args.model, "vllm", max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs
    ) as generator:
        requests = [Request(generator.chat_prompt(m), spec, seed) for m, seed in zip(prompts, seeds, strict=True)]
        concurrency = args.decode_concurrency or min(len(requests), generator.max_num_seqs)
        print(
            f"{args.model}: {len(requests)} prompts, max_tokens {spec.max_tokens}, "
            f"max_num_seqs {generator.max_num_seqs}",
            flush=True,
        )
        prefill = prefill_rate(generator, requests[: args.rate_prompts])
        print(
            f"prefill {prefill['tokens_per_second']:.1f} prompt tokens/s ({prefill['prompt_tokens']} tokens "
            f"in {prefill['seconds']} s)",
            flush=True,
        )
        decode = decode_rate(generator, requests, concurrency, args.decode_tokens)
        print(
            f"decode  {decode['tokens_per_second']:.1f} tokens/s at {concurrency} sequences ({decode['tokens']} "
            f"tokens in {decode['seconds']} s)",
            flush=True,
        )
        closed = timed_job(generator, lambda: closed_batches(generator, requests, args.closed_batch))
        print(
            f"closed batches of {args.closed_batch}: {closed['tokens_per_second']:.1f} tokens/s "
            f"({closed['generated_tokens']} tokens in {closed['seconds']} s)",
            flush=True,
        )
        stream = timed_job(generator, lambda: streamed(generator, requests))
        print(
            f"stream: {stream['tokens_per_second']:.1f} tokens/s ({stream['generated_tokens']} tokens "
            f"in {stream['seconds']} s)",
            flush=True,
        )
        effective = generator.effective_params(spec)
    prompt_tokens = sum(c.prompt_tokens for completions in stream["replies"] for c in completions)
    ideal_seconds = (
        prompt_tokens / prefill["tokens_per_second"] + stream["generated_tokens"] / decode["tokens_per_second"]
    )
    same = sum(
        [c.token_ids for c in a] == [c.token_ids for c in b]
        for a, b in zip(closed.pop("replies"), stream.pop("replies"), strict=True)
    )
    results = {
        "model": args.model,
        "prompts": len(requests),
        "spec": vars(spec),
        "max_num_seqs": effective["max_num_seqs"],
        "dtype": effective["dtype"],
        "closed_batch": args.closed_batch,
        "prompt_tokens": prompt_tokens,
        "prefill": prefill,
        "decode": decode,
        "closed": closed,
        "stream": stream,
        "closed_tokens_per_second": closed["tokens_per_second"],
        "stream_tokens_per_second": stream["tokens_per_second"],
        "ideal_tokens_per_second": stream["generated_tokens"] / ideal_seconds,
        "stream_over_closed": stream["tokens_per_second"] / closed["tokens_per_second"],
        "identical_replies": same,
    }
    print(
        f"ideal {results['ideal_tokens_per_second']:.1f} tokens/s; stream / closed "
        f"{results['stream_over_closed']:.2f}x, "
        f"stream / ideal {stream['tokens_per_second'] / results['ideal_tokens_per_second']:.2f}; "
        f"{same}/{len(requests)} replies identical both ways",
        flush=True,
    )
    if args.gguf:
        try:
            results["llama_cpp"] = llama_cpp_anchor(args.gguf, requests[: args.anchor_prompts], args.max_model_len)
            print(
                f"llama.cpp anchor: {results['llama_cpp']['tokens_per_second']:.1f} tokens/s, one sequence", flush=True
            )
        except ImportError:
            print("llama-cpp-python is not installed: no llama.cpp anchor", flush=True)
    return results


def decode_curve(args, prompts: list[list[dict]], spec: SamplingSpec, seeds: list[int]) -> dict:
    with load_generator(
        args.model, "vllm", max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs
    ) as generator:
        shared = [Request(generator.chat_prompt(prompts[0]), spec, seeds[0])]
        levels = [int(c) for c in args.decode_curve.split(",")]
        if max(levels) > generator.max_num_seqs:
            raise SystemExit(
                f"--decode-curve {max(levels)} exceeds the engine's max_num_seqs "
                f"{generator.max_num_seqs}: raise --max-num-seqs"
            )
        print(
            f"{args.model}: decode rate by sequences in flight ({args.decode_tokens} tokens each, max_num_seqs "
            f"{generator.max_num_seqs})",
            flush=True,
        )
        curve = []
        for c in levels:
            curve.append(decode_rate(generator, shared, c, args.decode_tokens))
            print(f"{c:5d} sequences: {curve[-1]['tokens_per_second']:7.1f} tokens/s", flush=True)
        effective = generator.effective_params(spec)
    best = max(curve, key=lambda r: r["tokens_per_second"])
    print(
        f"best: {best['concurrency']} sequences; {best['tokens_per_second'] / curve[-1]['tokens_per_second']:.2f}x "
        f"the rate at {curve[-1]['concurrency']}",
        flush=True,
    )
    return {
        "model": args.model,
        "dtype": effective["dtype"],
        "max_num_seqs": effective["max_num_seqs"],
        "decode_tokens": args.decode_tokens,
        "curve": curve,
        "best_concurrency": best["concurrency"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--prompt-source", default="leetcode-train")
    parser.add_argument("--prompts", type=int, default=64, help="how many prompts")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated, run in this order")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="vLLM only: closed batches against one stream, with the ideal from measured rates",
    )
    parser.add_argument(
        "--closed-batch",
        type=int,
        default=32,
        help="--compare: prompts per closed batch (`ssd sample`'s old shard size)",
    )
    parser.add_argument("--rate-prompts", type=int, default=64, help="--compare: prompts of the prefill-only batch")
    parser.add_argument(
        "--decode-concurrency",
        type=int,
        help="--compare: sequences for the decode rate; default min(prompts, max_num_seqs)",
    )
    parser.add_argument(
        "--decode-tokens",
        type=int,
        default=64,
        help="--compare, --decode-curve: tokens each sequence decodes for the decode rate",
    )
    parser.add_argument("--decode-curve", help="comma-separated concurrencies: measure only the decode rate at each")
    parser.add_argument("--max-num-seqs", type=int, help="the engine's max_num_seqs (default: vLLM's for the device)")
    parser.add_argument(
        "--gguf", help="--compare: a GGUF of the model, for the llama.cpp anchor (needs llama-cpp-python)"
    )
    parser.add_argument("--anchor-prompts", type=int, default=8)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    prompts = [
        build_messages(p.text, p.starter_code, "system") for p in load_prompts(args.prompt_source, limit=args.prompts)
    ]
    spec = SamplingSpec(
        temperature=1.6, top_k=20, top_p=0.8, max_tokens=args.max_tokens
    )  # the paper's T_train truncation
    seeds = [request_seed(0, str(i), 0) for i in range(len(prompts))]
    results = (decode_curve if args.decode_curve else compare_closed_and_stream if args.compare else compare_backends)(
        args, prompts, spec, seeds
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
