"""`ssd eval`: sandboxed pass@k with bootstrap CIs over a temperature sweep, and a fair best temperature.

    evaluate(cfg, generator=None) -> output dir      the stage (`ssd eval`); reuses `generator` if given
    compare(eval_dir_a, eval_dir_b, k=1) -> dict     paired comparison of two models on the same problems
    base_settings(sweep_dir, recommended_dir) -> dict   the base model at its recommended, dev-chosen and best T

`--oracle` grades the benchmark's reference solutions instead, and `--replies FILE.jsonl` grades replies
made elsewhere (replies.py) with no model loaded; both write the layout below. Verdicts follow the
benchmark's grading profile, or cfg.grading (grading.py, docs/grading.md).

The model is loaded once and every temperature of the sweep (cfg.temperatures plus cfg.t_eval) is
decoded with the same truncation (cfg.top_k, cfg.top_p). Temperature 0 is greedy: one sample per
problem, and pass@k = pass@1 since every further sample would be the same. The best temperature is
chosen on a dev split (a fixed, seeded share cfg.dev_fraction of the problems) and reported on the
held-out rest, so neither the baseline nor SSD gets to pick its temperature on the problems it is
scored on. cfg.limit takes a fixed, seeded subset first (benchmarks.subset, hashed apart from the
split, so the subset's dev share stays cfg.dev_fraction).

Output directory (cfg.output_dir):
  manifest.json        RunDir manifest: config, versions, input hashes (model, benchmark file, prompts),
                       effective sampling parameters, wall times; with ray_address, `sandbox_nodes` (each
                       node's isolation mode and workers) and `placements` (the replica of each block)
  results/T0.70.jsonl  one record per (problem, sample) at that temperature, in problem order:
                         problem_id, temperature, sample_index, seed (from seed, problem id, temperature and
                         sample index), status (a sandbox status: passed, failed, timeout, memory,
                         runtime_error, output_limit, sandbox_error; or extraction_failed), passed, detail,
                         reply, reply_tokens, finish_reason (stop, length, prompt_too_long), prompt_text
                       rewritten atomically after each block of BLOCK requests is graded, so a killed
                       eval resumes with the unfinished blocks; blocks keep their composition across
                       resumes. A phase's unfinished blocks, all temperatures, go through the engine as
                       one stream (Generator.stream: it stays full, greedy and sampled requests side by
                       side), and a block goes to the sandbox as soon as its last reply is in, graded on
                       a thread while the engine keeps decoding: a kill loses the blocks not yet written.
                       With ray_address, blocks stream on replicas of the model on a Ray cluster, each
                       block whole on one replica, and grading runs on every node (distributed.py)
  results/oracle.jsonl --oracle: the same records for the reference solutions (temperature null)
  summary.json         benchmark, label ("all tests", or "public tests" for the shared LiveCodeBench copy),
                       grading (the profile), problem ids and the dev/test split; per temperature ("0.70"):
                       n (samples per problem; the most, for replies made elsewhere) and, per pass@k,
                       {mean, ci_lo, ci_hi, n_problems} on all problems, dev and test, and by difficulty
                       and by platform; status counts, extraction failures, truncated replies and reply
                       lengths; "selection": per pass@k, metrics.select_temperature (best T on dev, its
                       test score with CI, and the optimistic choice on test for reference only)
                       --oracle: pass rate and every problem whose reference fails, with the reason
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import benchmarks, metrics
from .benchmarks import BenchmarkError, Problem
from .config import EvalConfig
from .generate import GenerationProgress, Request
from .manifest import RunDir, atomic_write_json, atomic_write_jsonl, hash_inputs, load_manifest, read_jsonl, sha256_json
from .sandbox import Pool

console = Console(stderr=True, highlight=False)
BLOCK = 64  # requests graded and written together: the unit of atomic writes and of resume
RECORD_FIELDS = ("problem_id", "temperature", "sample_index", "seed", "status", "passed", "detail", "reply", "reply_tokens",
                 "finish_reason", "prompt_text")


def sample_seed(seed: int, problem_id: str, temperature: float, sample_index: int) -> int:
    """A request's seed from (run seed, problem id, temperature, sample index): reruns reproduce it and
    it does not depend on the problem's position, the subset or the other temperatures."""
    digest = hashlib.sha256(f"{seed}\0{problem_id}\0{temperature!r}\0{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: vLLM and torch take int64 seeds


def temperatures(cfg: EvalConfig) -> list[float]:
    temps = sorted(set(cfg.temperatures) | ({cfg.t_eval} if cfg.t_eval is not None else set()))
    names = [_label(T) for T in temps]
    if len(set(names)) != len(names):
        raise BenchmarkError(f"temperatures {temps} collide at two decimals (results are named T<0.00>.jsonl)")
    if any(T < 0 for T in temps):
        raise BenchmarkError(f"temperatures must be >= 0, got {temps}")
    return temps


def _label(T: float | None) -> str:
    return "none" if T is None else f"{T:.2f}"  # None: replies graded without a temperature


def _samples(cfg: EvalConfig, T: float, test: bool = False) -> int:
    return 1 if T == 0 else cfg.test_n if test else cfg.n


def results_path(eval_dir: str | Path, T: float | None) -> Path:
    """The results file of temperature T (None: replies graded without a temperature)."""
    return Path(eval_dir) / "results" / f"T{_label(T)}.jsonl"


def summary_path(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / "summary.json"


def load_summary(eval_dir: str | Path) -> dict:
    """The summary.json of a finished eval."""
    path = summary_path(eval_dir)
    if not path.is_file():
        raise BenchmarkError(f"{eval_dir} has no summary.json: the eval has not finished")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------- the stage


def evaluate(cfg: EvalConfig, generator=None) -> Path:
    """Run (or resume) the eval stage; returns the output directory. `generator`: an engine that is
    already loaded (`ssd run` shares one with sampling); it must hold cfg.model."""
    bench = benchmarks.get(cfg.benchmark).graded_by(cfg.grading)
    if cfg.oracle and cfg.replies:
        raise BenchmarkError("oracle and replies exclude each other: grade either the references or the replies")
    if not cfg.ks or min(cfg.ks) < 1 or (max(cfg.ks) > min(cfg.n, cfg.test_n or cfg.n) and not cfg.replies):  # replies: checked against the file
        raise BenchmarkError(f"ks={cfg.ks} with n={cfg.n}, test_n={cfg.test_n}: pass@k needs 1 <= k <= n (and <= test_n when set) samples per problem")
    if cfg.test_n < 0:
        raise BenchmarkError(f"test_n={cfg.test_n}: need 0 (every temperature on every problem) or a sample count")
    temps = temperatures(cfg)
    with _sandbox(cfg, bench) as pool:
        problems = bench.load(cfg.benchmark_path, cfg.release_from, cfg.release_to, cfg.platforms, cfg.limit, cfg.seed, pool)
        source = bench.source(cfg.benchmark_path)
        inputs = hash_inputs([source]) or {"benchmark": source}
        inputs["problems"] = sha256_json([p.id for p in problems])
        extra = {"benchmark_source": source, **({"sandbox_nodes": pool.nodes} if cfg.ray_address else {})}
        if cfg.oracle:
            if all(p.reference is None for p in problems):
                raise BenchmarkError(f"oracle not available: {bench.name} has no reference solutions")
            run = RunDir.open(cfg.output_dir, "eval", cfg, inputs, extra=extra)
            _oracle(run, bench, problems, pool)
        elif cfg.replies:
            from .replies import grade_replies

            grade_replies(cfg, bench, problems, inputs, extra, pool)
        else:
            _sweep(cfg, bench, problems, temps, inputs, extra, pool, generator)
    return Path(cfg.output_dir)


def _sandbox(cfg: EvalConfig, bench) -> Pool:
    """A warm sandbox here, or with ray_address one on every node of the cluster (distributed.RayPool;
    strict grading refuses nodes that isolate differently, since a verdict must not depend on the node)."""
    limits = bench.profile.limits(cfg.timeout, cfg.memory_mb)
    if cfg.ray_address:
        from .distributed import RayPool

        return RayPool(cfg.ray_address, cfg.workers, limits, uniform=bench.grading == "strict")
    return Pool(cfg.workers, limits)


def _sweep(cfg: EvalConfig, bench, problems: list[Problem], temps: list[float], inputs: dict, extra: dict, pool: Pool, generator) -> None:
    from .chat import chat_prompt
    from .generate import EngineSettings, SamplingSpec
    from .models import resolve_model

    model_path = resolve_model(cfg.model)
    if generator is not None and generator.model_path != model_path:
        raise ValueError(f"the generator holds {generator.model_path}, but the config evaluates {model_path}")
    if generator is not None:
        tokenizer = generator.tokenizer
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
    template_args = {"date": cfg.chat_date, "reasoning_effort": cfg.reasoning_effort}
    prompt_texts = {p.id: chat_prompt(tokenizer, bench.messages(p, cfg.prompt_format), **template_args) for p in problems}
    inputs.update(hash_inputs([model_path]) or {"model": model_path})
    inputs["prompts"] = sha256_json([[p.id, prompt_texts[p.id]] for p in problems])  # exactly what the model is fed
    run = RunDir.open(cfg.output_dir, "eval", cfg, inputs, extra={**extra, "model_path": model_path, "chat_template_args": template_args})
    out = run.path

    dev_ids, _ = metrics.dev_test_split([p.id for p in problems], cfg.dev_fraction, cfg.seed)
    dev = [p for p in problems if p.id in set(dev_ids)] if cfg.test_n else problems
    test = [p for p in problems if p not in dev]
    plan = {T: _load_block_plan(out, cfg, T, dev, test) for T in temps}
    for T in temps:  # replies the sandbox failed to grade (an infrastructure error, not the model's) get another try
        _regrade_sandbox_errors(bench, plan[T], problems, pool)
    owned = generator is None
    specs = {T: SamplingSpec(T, cfg.top_k, cfg.top_p, cfg.min_p, 1, cfg.max_tokens, cfg.seed, per_request_seeds=cfg.per_request_seeds) for T in temps}
    try:
        for phase in ("grid", "test") if cfg.test_n else ("grid",):
            if phase == "test":
                best = metrics.best_on_dev({T: per_problem_pass_at_k(plan[T]["records"].values(), dev_ids, 1) for T in temps}, dev_ids)
                _plan_test_phase(plan[best], cfg, test)
                console.print(f"T={best:g} chosen on the {len(dev)} dev problems (pass@1); decoding the {len(test)} test problems with {_samples(cfg, best, test=True)} samples each")
            missing = sum(len(block) for T in temps for block, done in plan[T]["blocks"] if not done)
            if not missing:
                continue
            if generator is None:
                console.print(f"loading {model_path} ({cfg.backend})")
                generator = EngineSettings.of(cfg).load(model_path)
            run.update(effective_params={_label(T): generator.effective_params(specs[T]) for T in temps})
            _generate(run, cfg, bench, generator, plan, specs, prompt_texts, pool, missing)
    finally:
        if owned and generator is not None:
            generator.close()
    results = {T: plan[T]["records"] for T in temps}
    summary = summarize(cfg, bench, problems, results)
    atomic_write_json(summary_path(out), summary)
    run.finish(n_problems=len(problems))
    print_sweep(summary)


def _load_block_plan(out: Path, cfg: EvalConfig, T: float, grid: list[Problem], test: list[Problem]) -> dict:
    """The requests at temperature T in blocks, with the records already on disk. `grid` problems are
    decoded at every temperature; `test` problems (two-phase protocol only) at the one chosen on dev,
    once _plan_test_phase adds them. Records of both phases share the file, grid ones first."""
    requests = [(p, j) for p in grid for j in range(_samples(cfg, T))]
    order = requests + [(p, j) for p in test for j in range(_samples(cfg, T, test=True))]
    path = results_path(out, T)
    records = {}
    if path.is_file():
        expected = {(p.id, j): sample_seed(cfg.seed, p.id, T, j) for p, j in order}
        for line_no, r in enumerate(read_jsonl(path), 1):
            key = (r["problem_id"], r["sample_index"])
            if expected.get(key) != r["seed"]:
                raise BenchmarkError(f"{path}:{line_no}: a record this run does not plan (problem {key[0]}, sample {key[1]}): "
                                     "the directory was modified; delete the file to redo this temperature")
            records[key] = r
    plan = {"T": T, "path": path, "order": order, "records": records, "requests": [], "blocks": []}
    _add_requests(plan, requests)
    return plan


def _add_requests(plan: dict, requests: list) -> None:
    """Blocks start afresh for each phase, so a phase's blocks keep their composition across resumes."""
    plan["requests"] += requests
    plan["blocks"] += [(block, all((p.id, j) in plan["records"] for p, j in block)) for block in
                       (requests[i : i + BLOCK] for i in range(0, len(requests), BLOCK))]


def _plan_test_phase(plan: dict, cfg: EvalConfig, test: list[Problem]) -> None:
    _add_requests(plan, [(p, j) for p in test for j in range(_samples(cfg, plan["T"], test=True))])


def _save(plan: dict) -> None:
    records = plan["records"]
    atomic_write_jsonl(plan["path"], [records[(p.id, j)] for p, j in plan["order"] if (p.id, j) in records])


def _regrade_sandbox_errors(bench, plan: dict, problems: list[Problem], pool: Pool) -> None:
    by_id = {p.id: p for p in problems}
    stale = [r for r in plan["records"].values() if r["status"] == "sandbox_error"]
    if not stale:
        return
    console.print(f"regrading {len(stale)} replies at T={_label(plan['T'])} that the sandbox failed to grade")
    verdicts = bench.grade_many([by_id[r["problem_id"]] for r in stale], [r["reply"] for r in stale], pool)
    for r, v in zip(stale, verdicts):
        r.update(status=v.status, passed=v.passed, detail=v.detail)
    _save(plan)


def _generate(run: RunDir, cfg: EvalConfig, bench, generator, plan: dict, specs: dict, prompt_texts: dict, pool: Pool, total: int) -> None:
    """Every unfinished block in one stream (on a Ray cluster: streams on several replicas); each
    finished block is graded and saved on a thread."""
    blocks = {(T, b): [(T, prob, j, sample_seed(cfg.seed, prob.id, T, j)) for prob, j in block]
              for T, p in plan.items() for b, (block, done) in enumerate(p["blocks"]) if not done}
    units = {key: [Request(prompt_texts[prob.id], specs[T], seed) for T, prob, _, seed in block] for key, block in blocks.items()}
    with GenerationProgress(console, "eval", total) as progress, ThreadPoolExecutor(1, thread_name_prefix="grading") as grader:
        graded = []
        for (T, b), completions, where in generator.stream_units(units, cfg.max_num_seqs, progress):
            graded.append(grader.submit(_grade_block, cfg, bench, plan, prompt_texts, pool, [(*r, c) for r, (c,) in zip(blocks[T, b], completions)], progress))
            if where:
                run.update(placements={**run.manifest.get("placements", {}), f"T{_label(T)} block {b}": where})
            for future in graded:
                if future.done():
                    future.result()  # a grading error stops the stream now, not after the last reply
        for future in graded:
            future.result()
    session = progress.session()
    run.update(sessions=run.manifest.get("sessions", []) + [session])
    console.print(f"generated and graded {total} samples in {session['seconds']:.0f} s ({session['tokens_per_second']} tokens/s)")


def _grade_block(cfg: EvalConfig, bench, plan: dict, prompt_texts: dict, pool: Pool, block: list[tuple], progress: GenerationProgress) -> None:
    """Grade one block's (T, problem, sample index, seed, completion) and rewrite its temperature's file."""
    T = block[0][0]
    verdicts = bench.grade_many([prob for _, prob, *_ in block], [c.text for *_, c in block], pool)
    for (_, prob, j, seed, c), v in zip(block, verdicts):
        if c.finish_reason == "prompt_too_long":
            v = benchmarks.Verdict("extraction_failed", False, f"the prompt does not fit max_model_len={cfg.max_model_len}")
        plan[T]["records"][(prob.id, j)] = {
            "problem_id": prob.id, "temperature": T, "sample_index": j, "seed": seed, "status": v.status,
            "passed": v.passed, "detail": v.detail, "reply": c.text, "reply_tokens": len(c.token_ids),
            "finish_reason": c.finish_reason, "prompt_text": prompt_texts[prob.id],
        }
    _save(plan[T])
    progress.checkpoint(f"T={_label(T)}: a block of {len(block)} samples graded")


# ---------------------------------------------------------------------------- oracle


def _oracle(run: RunDir, bench, problems: list[Problem], pool: Pool) -> None:
    """Grade the references through the full path (extraction included): a harness check."""
    with_ref = [p for p in problems if p.reference is not None]
    path = run.path / "results" / "oracle.jsonl"
    done = {r["problem_id"]: r for r in read_jsonl(path)} if path.is_file() else {}
    todo = [p for p in with_ref if p.id not in done]
    with Progress(TextColumn("oracle"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("oracle", total=len(with_ref), completed=len(with_ref) - len(todo))
        for i in range(0, len(todo), BLOCK):
            block = todo[i : i + BLOCK]
            replies = [bench.oracle_reply(p) for p in block]
            for p, reply, v in zip(block, replies, bench.grade_many(block, replies, pool)):
                done[p.id] = {"problem_id": p.id, "temperature": None, "sample_index": 0, "seed": None, "status": v.status,
                              "passed": v.passed, "detail": v.detail, "reply": reply, "reply_tokens": None, "finish_reason": "oracle"}
            atomic_write_jsonl(path, [done[p.id] for p in with_ref if p.id in done])
            bar.update(task, advance=len(block))
    records = [done[p.id] for p in with_ref]
    failures = [{"problem_id": r["problem_id"], "status": r["status"], "detail": r["detail"]} for r in records if not r["passed"]]
    summary = {
        "benchmark": bench.name, "label": benchmarks.tests_label(problems), "oracle": True, "n_problems": len(records),
        "passed": len(records) - len(failures), "pass_rate": (len(records) - len(failures)) / len(records),
        "status_counts": dict(Counter(r["status"] for r in records)), "failures": failures,
        "no_reference": [p.id for p in problems if p.reference is None],
    }
    atomic_write_json(summary_path(run.path), summary)
    run.finish(n_problems=len(records))
    console.print(f"oracle {bench.name}: {summary['passed']}/{summary['n_problems']} references pass ({100 * summary['pass_rate']:.1f}%)")
    for f in failures:
        console.print(f"  [red]{f['problem_id']}[/] {f['status']}: {f['detail'][:300]}")


# ---------------------------------------------------------------------------- metrics


def per_problem_pass_at_k(records, problem_ids: list[str], k: int) -> dict[str, float]:
    """Unbiased pass@k per problem from its n samples; greedy (one sample) gives pass@k = pass@1.
    Problems of `problem_ids` without samples (in the two-phase protocol, the test split at a
    temperature not chosen on dev) are left out; callers check the coverage they need."""
    n, c = Counter(), Counter()
    for r in records:
        n[r["problem_id"]] += 1
        c[r["problem_id"]] += bool(r["passed"])
    return {pid: float(c[pid] > 0) if n[pid] == 1 else metrics.pass_at_k(n[pid], c[pid], k) for pid in problem_ids if n[pid]}


def _require(scores: dict[str, float], ids: list[str], where: str) -> None:
    missing = [pid for pid in ids if pid not in scores]
    if missing:
        raise BenchmarkError(f"{where}: no graded samples for {len(missing)} problems (e.g. {missing[0]}): the eval did not finish")


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
        entry = {"temperature": T, "n": _samples(cfg, T), "greedy": T == 0}
        if cfg.test_n:
            entry["test_n"] = _samples(cfg, T, test=True) if any(r["problem_id"] in set(test) for r in records) else 0
        for k in cfg.ks:
            s = scores[k][T] = per_problem_pass_at_k(records, ids, k)
            _require(s, dev if cfg.test_n else ids, f"T={_label(T)}")
            entry[f"pass@{k}"] = {"all": _score(s, ids, cfg.seed), "dev": _score(s, dev, cfg.seed), "test": _score(s, test, cfg.seed),
                                  **{g: {name: _score(s, members, cfg.seed) for name, members in groups[g].items()} for g in groups}}
        tokens = sorted(r["reply_tokens"] for r in records if r["reply_tokens"] is not None)  # None: replies made elsewhere
        entry.update(
            status_counts=dict(Counter(r["status"] for r in records)),
            extraction_failed=sum(r["status"] == "extraction_failed" for r in records) / len(records),
            truncated=sum(r["finish_reason"] == "length" for r in records) / len(records),
            reply_tokens={"mean": sum(tokens) / len(tokens), "median": tokens[len(tokens) // 2], "max": tokens[-1]} if tokens else None,
        )
        per_T[_label(T)] = entry
    if dev and test:
        selection = {f"pass@{k}": _select(scores[k], dev, test, cfg.seed) for k in cfg.ks}
    else:
        selection = {"skipped": f"dev/test split of {len(ids)} problems left dev={len(dev)}, test={len(test)}: nothing to choose on or report"}
    return {
        "benchmark": bench.name, "label": benchmarks.tests_label(problems), "grading": bench.grading, "model": cfg.model,
        "prompt_format": cfg.prompt_format,
        "decoding": {"top_k": cfg.top_k, "top_p": cfg.top_p, "min_p": cfg.min_p, "max_tokens": cfg.max_tokens},
        "n_problems": len(ids), "ks": cfg.ks, "t_eval": cfg.t_eval, "dev_fraction": cfg.dev_fraction, "seed": cfg.seed,
        "protocol": f"two-phase: the temperatures on dev (n={cfg.n}), the dev-chosen one on test (n={cfg.test_n})" if cfg.test_n
                    else f"grid: every temperature on every problem (n={cfg.n})",
        "problem_ids": ids, "dev_ids": dev, "test_ids": test, "temperatures": per_T, "selection": selection,
    }


def _select(scores_by_T: dict, dev: list[str], test: list[str], seed: int) -> dict:
    """metrics.select_temperature, or why not: in the two-phase protocol a pass@k other than pass@1
    may prefer a temperature that was never decoded on test."""
    try:
        return metrics.select_temperature(scores_by_T, dev, test, seed=seed)
    except ValueError as e:
        return {"skipped": f"the temperature best on dev was not decoded on test ({e})"}


def _fmt(score: dict | None) -> str:
    return "-" if score is None else f"{100 * score['mean']:.1f} [{100 * score['ci_lo']:.1f}, {100 * score['ci_hi']:.1f}]"


def print_sweep(summary: dict) -> None:
    """The sweep as a table on stdout: pass@k with 95% CIs on all, dev and test problems."""
    ks = summary["ks"]
    label = "" if summary["label"] == "all tests" else f" ({summary['label']})"
    table = Table(title=f"{summary['benchmark']}{label}: {summary['model']}, {summary['n_problems']} problems "
                        f"(dev {len(summary['dev_ids'])} / test {len(summary['test_ids'])}), pass@k in % [95% CI]")
    for col in ["T", "n", *[f"pass@{k} all" for k in ks], "pass@1 dev", "pass@1 test", "no code", "truncated"]:
        table.add_column(col, justify="right")
    for name, e in summary["temperatures"].items():
        table.add_row(name + (" (greedy)" if e["greedy"] else ""), str(e["n"]), *[_fmt(e[f"pass@{k}"]["all"]) for k in ks],
                      _fmt(e["pass@1"]["dev"]) if 1 in ks else "-", _fmt(e["pass@1"]["test"]) if 1 in ks else "-",
                      f"{100 * e['extraction_failed']:.1f}%", f"{100 * e['truncated']:.1f}%")
    out = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets whole rows, not 80 columns
    out.print(table)
    k, temps = ks[0], summary["temperatures"]
    rows = [(f"{group.removeprefix('by_')} {name}", name, group) for group in ("by_difficulty", "by_platform")
            for name in next(iter(temps.values()))[f"pass@{k}"][group]]
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
        optimistic = "" if s["oracle_T"] is None else f"  (chosen on test instead: T={s['oracle_T']:g}, {100 * s['oracle_test_score']:.1f}, optimistic)"
        console.print(f"best T for {metric} on dev: {_label(s['best_T'])} (dev {100 * s['dev_score']:.1f}) -> test {100 * s['test_score']:.1f} "
                      f"[{100 * s['test_ci_lo']:.1f}, {100 * s['test_ci_hi']:.1f}]{optimistic}")


# ---------------------------------------------------------------------------- comparing two models


def load_results(eval_dir: str | Path) -> tuple[dict, dict[float, list[dict]]]:
    """An eval directory's summary and its results matrix by temperature."""
    eval_dir = Path(eval_dir)
    load_manifest(eval_dir)  # a clear error when this is not a stage directory
    summary = load_summary(eval_dir)
    if summary.get("oracle"):
        raise BenchmarkError(f"{eval_dir} is an oracle run: there is no model to compare")
    results = {e["temperature"]: read_jsonl(results_path(eval_dir, e["temperature"])) for e in summary["temperatures"].values()}
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
        return {"T": entry["temperature"], "top_k": summary["decoding"]["top_k"], "top_p": summary["decoding"]["top_p"],
                "test": entry[metric]["test"], "all": entry[metric]["all"]}

    out = {"metric": metric}
    if recommended_dir:
        recommended = load_summary(recommended_dir)
        out["recommended"] = setting(recommended, next(iter(recommended["temperatures"].values())))
    chosen = sweep["selection"].get(metric, {})
    if "best_T" in chosen:
        out["dev_chosen"] = setting(sweep, entries[chosen["best_T"]])
    if all(e[metric]["all"] for e in entries.values()):  # the two-phase protocol decodes few temperatures on all problems
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
            raise BenchmarkError(f"{eval_dir_a} and {eval_dir_b} differ in {key}: a paired comparison needs the same problems and split")
    ids, test = sa["problem_ids"], sa["test_ids"]
    a = {T: per_problem_pass_at_k(r, ids, k) for T, r in ra.items()}
    b = {T: per_problem_pass_at_k(r, ids, k) for T, r in rb.items()}
    # Per temperature, the problems both decoded: all of them in the grid protocol, dev in the two-phase one.
    shared = {T: [i for i in ids if i in a[T] and i in b[T]] for T in set(a) & set(b)}
    out = {"a": str(eval_dir_a), "b": str(eval_dir_b), "benchmark": sa["benchmark"], "label": sa["label"], "metric": f"pass@{k}",
           "model_a": sa["model"], "model_b": sb["model"], "n_problems": len(ids)}
    sel_a, sel_b = sa["selection"].get(f"pass@{k}"), sb["selection"].get(f"pass@{k}")
    if sel_a and sel_b and "best_T" in sel_a and "best_T" in sel_b:
        Ta, Tb = sel_a["best_T"], sel_b["best_T"]
        out["best_T"] = {"a": Ta, "b": Tb}
        out["test"] = metrics.paired_comparison([a[Ta][i] for i in test], [b[Tb][i] for i in test], seed=seed)
    out["by_temperature"] = {_label(T): {**metrics.paired_comparison([a[T][i] for i in shared[T]], [b[T][i] for i in shared[T]], seed=seed),
                                         "problems": "all" if len(shared[T]) == len(ids) else "dev" if len(shared[T]) == len(sa["dev_ids"]) else len(shared[T])}
                             for T in sorted(shared) if shared[T]}
    return out
