"""How many verdicts sanitizing changes: regrade committed eval records with and without it.

    python benchmarks/regrade_sanitized.py [EVAL_DIR ...]     (default: experiments/ssd-qwen0.5b/runs/eval-*)

Reads every record of each eval directory (nothing is written there) and builds each reply's program
twice, under the directory's grading profile without and with sanitizing (sanitize.py). Where the two
programs are the same text the verdict cannot change; the others are graded both ways in the sandbox,
so a flip is counted only where sanitizing alone makes it (the regrade without it is checked against
the recorded verdict). Prints a table per directory and per benchmark and model. Run it under the
heavy-job lock (it grades in the sandbox on every core).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path

from selfdistill.benchmarks import ExtractionError
from selfdistill.config import EvalConfig
from selfdistill.manifest import load_manifest, read_jsonl
from selfdistill.results import graded_benchmark, load_summary
from selfdistill.sandbox import Pool

REPO = Path(__file__).resolve().parents[1]


def program(bench, problem, reply: str) -> str | None:
    try:
        return bench.program(problem, bench.extract(problem, reply))
    except ExtractionError:
        return None  # no code either way


def regrade(eval_dir: Path, workers: int | None) -> Counter:
    manifest = load_manifest(eval_dir)
    cfg = EvalConfig(
        **{f.name: manifest["config"][f.name] for f in dataclasses.fields(EvalConfig) if f.name in manifest["config"]}
    )
    plain, sanitized = (
        graded_benchmark(dataclasses.replace(cfg, sanitize=False)),
        graded_benchmark(dataclasses.replace(cfg, sanitize=True)),
    )
    with Pool(workers, plain.profile.limits(cfg.timeout, cfg.memory_mb)) as pool:  # the eval's own limits
        return _regrade(eval_dir, cfg, plain, sanitized, pool)


def _regrade(eval_dir: Path, cfg: EvalConfig, plain, sanitized, pool: Pool) -> Counter:
    problems = {
        p.id: p
        for p in plain.load(
            cfg.benchmark_path, cfg.release_from, cfg.release_to, cfg.platforms, cfg.limit, cfg.seed, pool
        )
    }
    records = [
        r
        for path in sorted((eval_dir / "results").glob("T*.jsonl"))
        for r in read_jsonl(path)
        if r["finish_reason"] != "prompt_too_long"
    ]
    changed = [
        r
        for r in records
        if program(plain, problems[r["problem_id"]], r["reply"])
        != program(sanitized, problems[r["problem_id"]], r["reply"])
    ]
    before = plain.grade_many([problems[r["problem_id"]] for r in changed], [r["reply"] for r in changed], pool)
    after = sanitized.grade_many([problems[r["problem_id"]] for r in changed], [r["reply"] for r in changed], pool)
    n = Counter(replies=len(records), failing=sum(not r["passed"] for r in records), changed=len(changed))
    for r, b, a in zip(changed, before, after, strict=True):
        if b.passed != r["passed"]:
            n["regrade differs from the record"] += 1
        elif a.passed != b.passed:
            n["fail -> pass" if a.passed else "pass -> fail"] += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dirs", nargs="*", type=Path)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    dirs = args.eval_dirs or sorted((REPO / "experiments" / "ssd-qwen0.5b" / "runs").glob("eval-*"))
    columns = ["replies", "failing", "changed", "fail -> pass", "pass -> fail", "regrade differs from the record"]
    totals: dict[tuple[str, str], Counter] = {}
    print(
        f"{'eval dir':<22} {'benchmark':<15} {'model':<14} "
        + " ".join(f"{c:>12}" for c in columns[:5])
        + "  regrade != record"
    )
    for d in dirs:
        s = load_summary(d)
        model = "base" if d.name.startswith("eval-base") else f"SSD {Path(s.model).parent.name}"
        n = regrade(d, args.workers)
        totals.setdefault((s.benchmark, model.split()[0]), Counter()).update(n)
        print(
            f"{d.name:<22} {s.benchmark:<15} {model:<14} "
            + " ".join(f"{n[c]:>12}" for c in columns[:5])
            + f"  {n[columns[5]]:>8}"
        )
        sys.stdout.flush()
    print("\nby benchmark and model (all temperatures and evals): fail -> pass as a share of the failing replies")
    for (bench, model), n in sorted(totals.items()):
        print(
            f"  {bench:<15} {model:<5} {n['replies']:>5} replies, {n['failing']:>5} failing, {n['changed']:>4} "
            f"programs changed: {n['fail -> pass']} fail -> pass "
            f"({100 * n['fail -> pass'] / max(n['failing'], 1):.1f}% of failing), {n['pass -> fail']} pass -> fail, "
            f"{n[columns[5]]} regraded otherwise without sanitizing"
        )


if __name__ == "__main__":
    main()
