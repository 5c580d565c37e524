"""Precision and power of experiment 2's primary endpoints, projected from experiment 1's records.

    python experiments/ssd-qwen0.5b-full/power.py

Experiment 1 decoded the same base model and a (LoRA) SSD model on HumanEval+ and MBPP dev problems
at T 0.8 with n=2, and greedily. From those paired records it estimates the variance of a problem's
paired difference, split into the between-problem part (how much the true SSD - base gap varies by
problem) and the within-problem sampling part (p(1-p)/n per model, unbiased from n samples). It then
projects both to experiment 2's design: 228 LeetCode problems, n=8 at T 0.7, greedy n=1. LeetCode
test problems are harder than HumanEval+/MBPP for this model, so the variances are also scaled by
p(1-p) at an assumed base rate (the binomial variance shrinks with the rate). Holm over two endpoints:
the smaller p-value is tested at 0.025, so power is computed at two-sided alpha 0.025 (conservative).
"""

import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import NormalDist

RUNS = Path(__file__).resolve().parent.parent / "ssd-qwen0.5b" / "runs"
PAIRS = {  # benchmark: (base eval, SSD T_train 1.6 eval)
    "humaneval_plus": ("eval-base-5a9437dabf", "eval-ssd-714f3a9741"),
    "mbpp": ("eval-base-0b46b37a58", "eval-ssd-a903ff0dab"),
}
PROBLEMS, N_SAMPLED = 228, 8
Z = NormalDist().inv_cdf


def outcomes(eval_dir: str, temperature: str) -> dict[str, list[int]]:
    by_problem = defaultdict(list)
    for line in (RUNS / eval_dir / "results" / f"T{temperature}.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_problem[row["problem_id"]].append(int(bool(row["passed"])))
    return by_problem


def components(base: dict, ssd: dict) -> tuple[float, float, float, int]:
    """(between-problem variance of the true gap, mean within-problem p(1-p) of base, of SSD, problems)."""
    ids = sorted(set(base) & set(ssd))
    diffs, within_b, within_s, pq_b, pq_s = [], [], [], [], []
    for i in ids:
        b, s = base[i], ssd[i]
        pb, ps = sum(b) / len(b), sum(s) / len(s)
        diffs.append(ps - pb)
        # unbiased p(1-p) from n Bernoulli draws: p^(1-p^) n/(n-1); a single (greedy) draw has no
        # within-problem estimate
        ub_b = pb * (1 - pb) * len(b) / (len(b) - 1) if len(b) > 1 else 0.0
        ub_s = ps * (1 - ps) * len(s) / (len(s) - 1)
        within_b.append(ub_b / len(b))
        within_s.append(ub_s / len(s))
        pq_b.append(ub_b)
        pq_s.append(ub_s)
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    between = var - sum(within_b) / len(ids) - sum(within_s) / len(ids)
    return between, sum(pq_b) / len(ids), sum(pq_s) / len(ids), len(ids)


def power(effect: float, se: float, alpha: float) -> float:
    return NormalDist().cdf(abs(effect) / se - Z(1 - alpha / 2))


def main() -> None:
    pooled = defaultdict(list)
    for bench, (base_dir, ssd_dir) in PAIRS.items():
        for name, base_t in (("P1 (same T)", "0.80"), ("P2 (vs greedy)", "0.00")):
            between, pq_b, pq_s, k = components(outcomes(base_dir, base_t), outcomes(ssd_dir, "0.80"))
            pooled[name].append((between, pq_b, pq_s, k))
            print(
                f"{bench:15s} {name:15s} problems {k:3d}  between-problem var {between:.4f}  "
                f"mean p(1-p): base {pq_b:.3f}, SSD {pq_s:.3f}"
            )
    print()
    for rate in (0.45, 0.15, 0.10):
        for name, parts in pooled.items():
            k = sum(p[3] for p in parts)
            between = sum(p[0] * p[3] for p in parts) / k
            pq_s = sum(p[2] * p[3] for p in parts) / k
            scale = (
                rate * (1 - rate) / pq_s
            )  # experiment 1's mean p(1-p) is about 0.2: rescale every component to the rate
            n_base = N_SAMPLED if name.startswith("P1") else 1
            # the greedy arm's per-problem outcome is deterministic: its variance is all between problems,
            # already in `between`
            within = pq_s / N_SAMPLED + (pq_s / n_base if n_base > 1 else 0.0)
            se = math.sqrt(max(between, 0.0) * scale + within * scale) / math.sqrt(PROBLEMS) * 100
            mde = (Z(1 - 0.025 / 2) + Z(0.8)) * se
            print(
                f"base rate {rate:.2f}  {name:15s} SE {se:.2f} pts, 95% CI half-width {1.96 * se:.2f}; "
                "power for +3.3 pts at alpha 0.025: "
                f"{power(3.3, se, 0.025):.2f}; 80%-power effect {mde:.1f} pts"
            )


if __name__ == "__main__":
    main()
