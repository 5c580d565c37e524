"""The eval stage's output, read and scored: where results and summary.json live, pass@k per problem,
the summary of a results matrix, and the paired comparison of two evals. evaluate.py (a model's
replies, or the references) and replies.py (replies made elsewhere) write this layout; every other
stage reads it through here.

    EVAL_DIR/results/T<0.00>.jsonl   one record per (problem, sample), written BLOCK records at a time
    EVAL_DIR/summary.json            summarize(): pass@k with CIs on all/dev/test, by group, the T chosen on dev
    primary_endpoints(specs, evals)  pre-registered paired comparisons with Holm-adjusted p (`ssd report`)
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import benchmarks, metrics
from .benchmarks import BenchmarkError, Problem
from .config import EvalConfig
from .grading import legacy_rules
from .manifest import finished, load_manifest, read_jsonl
from .sandbox import NOT_RUN

console = Console(stderr=True, highlight=False)
BLOCK = 64  # requests graded and written together: the unit of atomic writes and of resume


def t_label(T: float | None) -> str:
    return "none" if T is None else f"{T:.2f}"  # None: replies graded without a temperature


def samples_per_problem(cfg: EvalConfig, T: float, test: bool = False) -> int:
    return 1 if T == 0 else cfg.test_n if test else cfg.n


def results_path(eval_dir: str | Path, T: float | None) -> Path:
    """The results file of temperature T (None: replies graded without a temperature)."""
    return Path(eval_dir) / "results" / f"T{t_label(T)}.jsonl"


def summary_path(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / "summary.json"


def load_summary(eval_dir: str | Path) -> dict:
    """The summary.json of a finished eval."""
    path = summary_path(eval_dir)
    if not path.is_file():
        raise BenchmarkError(f"{eval_dir} has no summary.json: the eval has not finished")
    return json.loads(path.read_text())


def without_verdict(record: dict) -> bool:
    """A reply the sandbox failed to grade or never ran: no verdict on the model; the eval grades it again."""
    return record["status"] == "sandbox_error" or record["detail"].endswith(NOT_RUN)


def graded_benchmark(cfg: EvalConfig) -> benchmarks.Benchmark:
    """The benchmark under the config's grading profile and sanitizing switch."""
    return benchmarks.get(cfg.benchmark).graded_by(cfg.grading, cfg.sanitize)


def graded_otherwise(manifest: dict, bench: benchmarks.Benchmark) -> bool:
    """Whether an eval directory's verdicts were graded under other rules than `bench`'s (a directory
    from before rules were recorded: grading.legacy_rules). The eval regrades them all when it reopens,
    so a directory's verdicts always follow the rules its manifest and summary record."""
    return manifest.get("grading_rules", legacy_rules(bench.profile)) != bench.profile.rules()


def eval_done(cfg: EvalConfig) -> bool:
    """A finished eval stage of this config with a verdict on every reply, graded under the config's
    rules (otherwise the eval reopens and regrades: no model is loaded for that)."""
    return (
        finished(cfg.output_dir, cfg)
        and not graded_otherwise(load_manifest(cfg.output_dir), graded_benchmark(cfg))
        and not any(
            without_verdict(r)
            for path in results_path(cfg.output_dir, None).parent.glob("*.jsonl")
            for r in read_jsonl(path)
        )
    )


# ---------------------------------------------------------------------------- metrics


def per_problem_pass_at_k(records, problem_ids: list[str], k: int) -> dict[str, float]:
    """Unbiased pass@k per problem from its n samples; greedy (one sample) gives pass@k = pass@1.
    Problems of `problem_ids` without samples (in the two-phase protocol, the test split at a
    temperature not chosen on dev) are left out; callers check the coverage they need."""
    n, c = Counter(), Counter()
    for r in records:
        n[r["problem_id"]] += 1
        c[r["problem_id"]] += bool(r["passed"])
    return {
        pid: float(c[pid] > 0) if n[pid] == 1 else metrics.pass_at_k(n[pid], c[pid], k)
        for pid in problem_ids
        if n[pid]
    }


def _require(scores: dict[str, float], ids: list[str], where: str) -> None:
    missing = [pid for pid in ids if pid not in scores]
    if missing:
        raise BenchmarkError(
            f"{where}: no graded samples for {len(missing)} problems (e.g. {missing[0]}): the eval did not finish"
        )


def _score(scores: dict[str, float], ids: list[str], seed: int) -> dict | None:
    """Mean with a CI over `ids`; None when some of them were not decoded at this temperature."""
    if not ids or any(i not in scores for i in ids):
        return None
    mean, lo, hi = metrics.bootstrap_ci([scores[i] for i in ids], seed=seed)
    return {"mean": mean, "ci_lo": lo, "ci_hi": hi, "n_problems": len(ids)}


def _groups(problems: list[Problem], key: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for p in problems:
        if p.metadata.get(key):
            groups.setdefault(str(p.metadata[key]), []).append(p.id)
    return dict(sorted(groups.items()))


def summarize(cfg: EvalConfig, bench, problems: list[Problem], results: dict[float, dict]) -> dict:
    """summary.json from the results matrix alone (records keyed by (problem id, sample index))."""
    ids = [p.id for p in problems]
    dev, test = metrics.dev_test_split(ids, cfg.dev_fraction, cfg.seed)
    groups = {"by_difficulty": _groups(problems, "difficulty"), "by_platform": _groups(problems, "platform")}
    per_T, scores = {}, {k: {} for k in cfg.ks}
    for T, by_key in results.items():
        records = list(by_key.values())
        entry = {"temperature": T, "n": samples_per_problem(cfg, T), "greedy": T == 0}
        if cfg.test_n:
            entry["test_n"] = (
                samples_per_problem(cfg, T, test=True) if any(r["problem_id"] in set(test) for r in records) else 0
            )
        # pass@k for every k the samples allow (up to the fewest samples of a decoded problem), and cfg.ks (greedy: = pass@1)
        entry["ks"] = sorted(
            set(cfg.ks) | set(range(1, min(Counter(r["problem_id"] for r in records).values(), default=1) + 1))
        )
        for k in entry["ks"]:
            s = per_problem_pass_at_k(records, ids, k)
            if k in scores:
                scores[k][T] = s
            _require(s, dev if cfg.test_n else ids, f"T={t_label(T)}")
            entry[f"pass@{k}"] = {
                "all": _score(s, ids, cfg.seed),
                "dev": _score(s, dev, cfg.seed),
                "test": _score(s, test, cfg.seed),
                **{g: {name: _score(s, members, cfg.seed) for name, members in groups[g].items()} for g in groups},
            }
        tokens = sorted(
            r["reply_tokens"] for r in records if r["reply_tokens"] is not None
        )  # None: replies made elsewhere
        entry.update(
            status_counts=dict(Counter(r["status"] for r in records)),
            extraction_failed=sum(r["status"] == "extraction_failed" for r in records) / len(records),
            truncated=sum(r["finish_reason"] == "length" for r in records) / len(records),
            reply_tokens={"mean": sum(tokens) / len(tokens), "median": tokens[len(tokens) // 2], "max": tokens[-1]}
            if tokens
            else None,
        )
        per_T[t_label(T)] = entry
    if dev and test:
        selection = {f"pass@{k}": _select(scores[k], dev, test, cfg.seed) for k in cfg.ks}
    else:
        selection = {
            "skipped": f"dev/test split of {len(ids)} problems left dev={len(dev)}, test={len(test)}: nothing to choose on or report"
        }
    return {
        "benchmark": bench.name,
        "label": benchmarks.tests_label(problems),
        "grading": bench.grading,
        "grading_rules": bench.profile.rules(),
        "model": cfg.model,
        "prompt_format": cfg.prompt_format,
        "decoding": {"top_k": cfg.top_k, "top_p": cfg.top_p, "min_p": cfg.min_p, "max_tokens": cfg.max_tokens},
        "n_problems": len(ids),
        "ks": cfg.ks,
        "t_eval": cfg.t_eval,
        "dev_fraction": cfg.dev_fraction,
        "seed": cfg.seed,
        "protocol": f"two-phase: the temperatures on dev (n={cfg.n}), the dev-chosen one on test (n={cfg.test_n})"
        if cfg.test_n
        else f"grid: every temperature on every problem (n={cfg.n})",
        "problem_ids": ids,
        "dev_ids": dev,
        "test_ids": test,
        "temperatures": per_T,
        "selection": selection,
    }


def _select(scores_by_T: dict, dev: list[str], test: list[str], seed: int) -> dict:
    """metrics.select_temperature, or why not: in the two-phase protocol a pass@k other than pass@1
    may prefer a temperature that was never decoded on test."""
    try:
        return metrics.select_temperature(scores_by_T, dev, test, seed=seed)
    except ValueError as e:
        return {"skipped": f"the temperature best on dev was not decoded on test ({e})"}


def _fmt(score: dict | None) -> str:
    return (
        "-" if score is None else f"{100 * score['mean']:.1f} [{100 * score['ci_lo']:.1f}, {100 * score['ci_hi']:.1f}]"
    )


def print_sweep(summary: dict) -> None:
    """The sweep as a table on stdout: pass@k with 95% CIs on all, dev and test problems."""
    ks = summary["ks"]
    label = "" if summary["label"] == "all tests" else f" ({summary['label']})"
    table = Table(
        title=f"{summary['benchmark']}{label}: {summary['model']}, {summary['n_problems']} problems "
        f"(dev {len(summary['dev_ids'])} / test {len(summary['test_ids'])}), pass@k in % [95% CI]"
    )
    for col in ["T", "n", *[f"pass@{k} all" for k in ks], "pass@1 dev", "pass@1 test", "no code", "truncated"]:
        table.add_column(col, justify="right")
    for name, e in summary["temperatures"].items():
        table.add_row(
            name + (" (greedy)" if e["greedy"] else ""),
            str(e["n"]),
            *[_fmt(e[f"pass@{k}"]["all"]) for k in ks],
            _fmt(e["pass@1"]["dev"]) if 1 in ks else "-",
            _fmt(e["pass@1"]["test"]) if 1 in ks else "-",
            f"{100 * e['extraction_failed']:.1f}%",
            f"{100 * e['truncated']:.1f}%",
        )
    out = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets whole rows, not 80 columns
    out.print(table)
    k, temps = ks[0], summary["temperatures"]
    rows = [
        (f"{group.removeprefix('by_')} {name}", name, group)
        for group in ("by_difficulty", "by_platform")
        for name in next(iter(temps.values()))[f"pass@{k}"][group]
    ]
    if rows:
        breakdown = Table(title=f"pass@{k} in % by difficulty and platform (all problems)")
        for col in ["group", "problems", *[f"T={T}" for T in temps]]:
            breakdown.add_column(col, justify="right")
        for title, name, group in rows:
            cells = [e[f"pass@{k}"][group][name] for e in temps.values()]
            breakdown.add_row(title, str(cells[0]["n_problems"]), *map(_fmt, cells))
        out.print(breakdown)
    for metric, s in summary["selection"].items():
        if metric == "skipped":
            console.print(f"best temperature: {s}")
            continue
        optimistic = (
            ""
            if s["oracle_T"] is None
            else f"  (chosen on test instead: T={s['oracle_T']:g}, {100 * s['oracle_test_score']:.1f}, optimistic)"
        )
        console.print(
            f"best T for {metric} on dev: {t_label(s['best_T'])} (dev {100 * s['dev_score']:.1f}) -> test {100 * s['test_score']:.1f} "
            f"[{100 * s['test_ci_lo']:.1f}, {100 * s['test_ci_hi']:.1f}]{optimistic}"
        )


# ---------------------------------------------------------------------------- comparing two models


def load_results(eval_dir: str | Path) -> tuple[dict, dict[float, list[dict]]]:
    """An eval directory's summary and its results matrix by temperature."""
    eval_dir = Path(eval_dir)
    load_manifest(eval_dir)  # a clear error when this is not a stage directory
    summary = load_summary(eval_dir)
    if summary.get("oracle"):
        raise BenchmarkError(f"{eval_dir} is an oracle run: there is no model to compare")
    results = {
        e["temperature"]: read_jsonl(results_path(eval_dir, e["temperature"]))
        for e in summary["temperatures"].values()
    }
    return summary, results


def base_settings(sweep_dir: str | Path, recommended_dir: str | Path | None = None, k: int = 1) -> dict:
    """The base model's pass@k three ways, from the eval summaries: at its recommended decoding (paper
    Table 4, the eval in `recommended_dir`), at the T_eval chosen on dev (the fair baseline), and at the
    T_eval best on all problems (optimistic: chosen on the problems it is scored on). Each gives its
    test and all-problem scores; a setting the evals cannot give is left out."""
    metric = f"pass@{k}"
    sweep = load_summary(sweep_dir)
    entries = {e["temperature"]: e for e in sweep["temperatures"].values()}

    def setting(summary: dict, entry: dict) -> dict:
        return {
            "T": entry["temperature"],
            "top_k": summary["decoding"]["top_k"],
            "top_p": summary["decoding"]["top_p"],
            "test": entry[metric]["test"],
            "all": entry[metric]["all"],
        }

    out = {"metric": metric}
    if recommended_dir:
        recommended = load_summary(recommended_dir)
        out["recommended"] = setting(recommended, next(iter(recommended["temperatures"].values())))
    chosen = sweep["selection"].get(metric, {})
    if "best_T" in chosen:
        out["dev_chosen"] = setting(sweep, entries[chosen["best_T"]])
    if all(
        e[metric]["all"] for e in entries.values()
    ):  # the two-phase protocol decodes few temperatures on all problems
        best = max(entries, key=lambda T: (entries[T][metric]["all"]["mean"], -T))  # ties -> the lower T
        out["optimistic"] = setting(sweep, entries[best])
    return out


def compare(eval_dir_a: str | Path, eval_dir_b: str | Path, k: int = 1, seed: int = 0) -> dict:
    """b versus a on the same problems: each at its own temperature chosen on dev, compared on test
    (the fair comparison), and at every temperature both swept, on all problems. Differences are b - a,
    with a paired bootstrap CI and paired tests (metrics.paired_comparison)."""
    sa, ra = load_results(eval_dir_a)
    sb, rb = load_results(eval_dir_b)
    for key in ("benchmark", "problem_ids", "dev_ids", "test_ids"):
        if sa[key] != sb[key]:
            raise BenchmarkError(
                f"{eval_dir_a} and {eval_dir_b} differ in {key}: a paired comparison needs the same problems and split"
            )
    if sa.get("grading_rules") != sb.get("grading_rules"):
        raise BenchmarkError(
            f"{eval_dir_a} and {eval_dir_b} were graded under different rules (grading_rules in their summaries): "
            "rerun the older eval to regrade it (no model is loaded)"
        )
    ids, test = sa["problem_ids"], sa["test_ids"]
    a = {T: per_problem_pass_at_k(r, ids, k) for T, r in ra.items()}
    b = {T: per_problem_pass_at_k(r, ids, k) for T, r in rb.items()}
    # Per temperature, the problems both decoded: all of them in the grid protocol, dev in the two-phase one.
    shared = {T: [i for i in ids if i in a[T] and i in b[T]] for T in set(a) & set(b)}
    out = {
        "a": str(eval_dir_a),
        "b": str(eval_dir_b),
        "benchmark": sa["benchmark"],
        "label": sa["label"],
        "metric": f"pass@{k}",
        "model_a": sa["model"],
        "model_b": sb["model"],
        "n_problems": len(ids),
    }
    sel_a, sel_b = sa["selection"].get(f"pass@{k}"), sb["selection"].get(f"pass@{k}")
    if sel_a and sel_b and "best_T" in sel_a and "best_T" in sel_b:
        Ta, Tb = sel_a["best_T"], sel_b["best_T"]
        out["best_T"] = {"a": Ta, "b": Tb}
        out["test"] = metrics.paired_comparison([a[Ta][i] for i in test], [b[Tb][i] for i in test], seed=seed)
    out["by_temperature"] = {
        t_label(T): {
            **metrics.paired_comparison([a[T][i] for i in shared[T]], [b[T][i] for i in shared[T]], seed=seed),
            "problems": "all"
            if len(shared[T]) == len(ids)
            else "dev"
            if len(shared[T]) == len(sa["dev_ids"])
            else len(shared[T]),
        }
        for T in sorted(shared)
        if shared[T]
    }
    return out


# ---------------------------------------------------------------------------- pre-registered endpoints

_ENDPOINT = re.compile(
    r"^\s*(?P<name>[^:]+?)\s*:\s*pass@(?P<k>\d+)\s+(?P<b>\S+)@(?P<tb>[\d.]+)\s+vs\s+(?P<a>\S+)@(?P<ta>[\d.]+)\s*$"
)
ENDPOINT_FORMAT = "'NAME: pass@K MODEL@T vs MODEL@T' (e.g. 'P1: pass@1 ssd@0.7 vs base@0.7')"


def primary_endpoints(declared: list[tuple[str, str, dict[str, Path]]], seed: int = 0) -> list[dict]:
    """Each pre-registered endpoint (config report.primary) as a paired comparison, first model minus
    second, on every problem both evals decoded at those temperatures (no temperature is chosen, so no
    problem is held out), with Holm's adjustment over the whole family. `declared`: (where it is declared,
    as "FILE: report.primary[i]", the spec, its models' eval dirs by name). An endpoint whose evals have
    not finished has no comparison and counts as p = 1 in the adjustment (conservative). A spec that does
    not parse raises BenchmarkError naming where it is declared."""
    out, cache = [], {}
    for where, spec, evals in declared:
        m = _ENDPOINT.match(spec)
        if not m or int(m["k"]) < 1:
            raise BenchmarkError(f"{where}: {spec!r}: expected {ENDPOINT_FORMAT}")
        for model in (m["a"], m["b"]):
            if model not in evals:
                raise BenchmarkError(f"{where}: {spec!r}: unknown model {model!r}; models here: {', '.join(evals)}")
        k, sides = int(m["k"]), [(m["b"], float(m["tb"])), (m["a"], float(m["ta"]))]
        endpoint = {
            "name": m["name"],
            "spec": spec.strip(),
            "metric": f"pass@{k}",
            "b": sides[0],
            "a": sides[1],
            "comparison": None,
        }
        scores = []
        for model, T in sides:
            if evals[model] not in cache:
                cache[evals[model]] = load_results(evals[model]) if finished(evals[model]) else None
            loaded = cache[evals[model]]
            records = loaded and next((r for t, r in loaded[1].items() if t is not None and abs(t - T) < 1e-9), None)
            if records is not None and k > 1 and min(Counter(r["problem_id"] for r in records).values()) < k:
                raise BenchmarkError(f"{where}: {spec!r}: {model} has fewer than {k} samples per problem at T={T:g}")
            scores.append(per_problem_pass_at_k(records, loaded[0]["problem_ids"], k) if records is not None else None)
        if all(s is not None for s in scores):
            shared = [pid for pid in scores[0] if pid in scores[1]]
            endpoint["comparison"] = metrics.paired_comparison(
                [scores[1][p] for p in shared], [scores[0][p] for p in shared], seed=seed
            )
        out.append(endpoint)
    for endpoint, adjusted in zip(
        out, metrics.holm([e["comparison"]["p_value"] if e["comparison"] else 1.0 for e in out])
    ):
        endpoint["holm_p"] = adjusted
    return out
