"""Data-parallel sampling on Ray: the same shards in this process (no Ray), on one replica and on two.
Prints the speed-up of 2 replicas over 1, Ray's overhead per shard (1 replica against this process),
and checks that all three runs give the same completions.

    .venv/bin/python benchmarks/ray_scaling.py                      # a local 2-node cluster, tiny-random, hf
    .venv/bin/python benchmarks/ray_scaling.py --model qwen2.5-coder-0.5b-instruct --backend vllm \\
        --shards 16 --shard-size 8 --max-tokens 256 --cpus-per-node 1 --out ray_scaling.json
    # a running cluster (GPU nodes: a replica per GPU)
    .venv/bin/python benchmarks/ray_scaling.py --ray-address auto ...

Without --ray-address the cluster is two nodes of --cpus-per-node CPUs on loopback (ray.cluster_utils), one
replica per node, so on a small machine the two replicas share its cores: the speed-up shows what Ray
adds and that the results do not change, not what more machines give. Times exclude model loading
(reported apart). A shard is --shard-size prompts, sampled once each at T=1.6 / top-k 20 / top-p 0.8,
as `ssd sample` makes them; every replica streams up to --max-num-seqs sequences (default: its engine's).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from selfdistill.chat import build_messages
from selfdistill.decoding import request_seed
from selfdistill.distributed import RayGenerator
from selfdistill.generate import Request, SamplingSpec, load_generator
from selfdistill.models import resolve_model
from selfdistill.prompts import load_prompts


def shards(generator, args) -> dict[int, list[Request]]:
    spec = SamplingSpec(temperature=1.6, top_k=20, top_p=0.8, max_tokens=args.max_tokens)
    prompts = load_prompts(args.prompt_source, limit=args.shards * args.shard_size)
    requests = [
        Request(
            generator.chat_prompt(build_messages(p.text, p.starter_code, "system")), spec, request_seed(0, p.id, 0)
        )
        for p in prompts
    ]
    return {k: requests[k * args.shard_size : (k + 1) * args.shard_size] for k in range(args.shards)}


def timed(generator, units: dict, max_num_seqs: int | None, load_seconds: float) -> dict:
    start = time.perf_counter()
    out = {key: (completions, where) for key, completions, where in generator.stream_units(units, max_num_seqs)}
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for completions, _ in out.values() for cs in completions for c in cs)
    return {
        "load_seconds": round(load_seconds, 1),
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "completions": {k: [[c.token_ids for c in cs] for cs in completions] for k, (completions, _) in out.items()},
        "shards_per_node": _count([where["node_id"] for _, where in out.values() if where]),
    }


def _count(items: list) -> dict:
    return {item: items.count(item) for item in sorted(set(items))}


def on_ray(model: str, args, units: dict, address: str, replicas: int) -> dict:
    start = time.perf_counter()
    with RayGenerator(
        model, args.backend, args.max_model_len, 1, 0, args.max_num_seqs, address, replicas=replicas
    ) as generator:
        return timed(generator, units, args.max_num_seqs, time.perf_counter() - start)


def local_cluster(cpus: int):
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    for _ in range(2):
        cluster.add_node(num_cpus=cpus, object_store_memory=100 << 20, include_dashboard=False)
    return cluster


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    ap.add_argument("--prompt-source", default="leetcode-train")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=4, help="prompts per shard")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument(
        "--max-num-seqs", type=int, default=None, help="sequences a replica streams at once (default: its engine's)"
    )
    ap.add_argument("--cpus-per-node", type=int, default=1, help="the local cluster's nodes")
    ap.add_argument("--ray-address", default=None, help="a running cluster instead of a local one")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    model = resolve_model(args.model)
    start = time.perf_counter()
    with load_generator(
        model, args.backend, args.max_model_len, max_num_seqs=args.max_num_seqs
    ) as generator:  # before the cluster: alone on the CPUs
        units = shards(generator, args)
        runs = {"this process": timed(generator, units, args.max_num_seqs, time.perf_counter() - start)}
    cluster = None if args.ray_address else local_cluster(args.cpus_per_node)
    try:
        for name, replicas in (("1 replica", 1), ("2 replicas", 2)):
            runs[name] = on_ray(model, args, units, args.ray_address or cluster.address, replicas)
    finally:
        if cluster is not None:
            cluster.shutdown()

    one, two, here = runs["1 replica"], runs["2 replicas"], runs["this process"]
    same = all(r["completions"] == here["completions"] for r in runs.values())
    summary = {
        "model": args.model,
        "backend": args.backend,
        "shards": args.shards,
        "shard_size": args.shard_size,
        "max_tokens": args.max_tokens,
        "cpus": os.cpu_count(),
        "speedup_2_over_1": round(one["seconds"] / two["seconds"], 2),
        "overhead_per_shard_seconds": round((one["seconds"] - here["seconds"]) / args.shards, 3),
        "identical_completions": same,
    }
    for name, r in runs.items():
        print(
            f"{name:13s} {r['seconds']:8.2f} s  {r['tokens_per_second']:8.1f} tokens/s  (load {r['load_seconds']} s; "
            f"shards per node {list(r['shards_per_node'].values()) or '-'})"
        )
    print(
        f"2 replicas over 1: {summary['speedup_2_over_1']:.2f}x; Ray's overhead per shard (1 replica against this "
        f"process): {summary['overhead_per_shard_seconds']:+.3f} s; identical completions in all three runs: {same}"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    **summary,
                    "runs": {name: {k: v for k, v in r.items() if k != "completions"} for name, r in runs.items()},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
