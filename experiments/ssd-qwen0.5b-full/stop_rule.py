"""The pre-registered stop rule (README, "Design"), read from the distillation fit's rows.

    python experiments/ssd-qwen0.5b-full/stop_rule.py [FIT_JSONL] [--step 40]

At the step: has the held-out tail term (-log p(S), all reply positions) fallen by at least 25% from the
base model's (step 0), and has the held-out within-support KL at forks fallen? Prints both; exits 0 when
both hold (training goes on), 1 when the rule triggers (stop; train the same samples with soft targets),
2 when the rows are not there yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIT = Path(__file__).parent / "runs/train-62eed3ce1f/fit/fit.jsonl"
TAIL_DROP = 0.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fit", nargs="?", type=Path, default=FIT)
    parser.add_argument("--step", type=int, default=40)
    args = parser.parse_args()
    rows = {r["step"]: r for r in map(json.loads, args.fit.read_text().splitlines())} if args.fit.is_file() else {}
    if 0 not in rows or args.step not in rows:
        print(f"{args.fit}: no row for step 0 and step {args.step} yet", file=sys.stderr)
        return 2
    base, now = rows[0], rows[args.step]
    tail = now["heldout_all"]["tail"] / base["heldout_all"]["tail"] - 1
    within = now["heldout_fork"]["within_kl"] / base["heldout_fork"]["within_kl"] - 1
    tail_ok, within_ok = tail <= -TAIL_DROP, within < 0
    print(f"step {args.step} against step 0, held-out samples:")
    print(f"  tail term, all positions: {tail:+.1%} (needs <= -{TAIL_DROP:.0%}): {'met' if tail_ok else 'NOT met'}")
    print(f"  within-support KL at forks: {within:+.1%} (needs < 0): {'met' if within_ok else 'NOT met'}")
    print("training goes on" if tail_ok and within_ok else "the stop rule triggers: stop, train with soft targets")
    return 0 if tail_ok and within_ok else 1


if __name__ == "__main__":
    sys.exit(main())
