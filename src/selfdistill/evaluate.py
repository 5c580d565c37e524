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
                         runtime_error, output_limit, sandbox_error, not_run; or extraction_failed), passed, detail,
                         reply, reply_tokens, finish_reason (stop, length, prompt_too_long), prompt_text
                       rewritten atomically after each block of BLOCK requests is graded, so a killed
                       eval resumes with the unfinished blocks; blocks keep their composition across
                       resumes. A phase's unfinished blocks, all temperatures, go through the engine as
                       one stream (Generator.stream: it stays full, greedy and sampled requests side by
                       side), and a block goes to the sandbox as soon as its last reply is in, graded on
                       a thread while the engine keeps decoding: a kill loses the blocks not yet written.
                       With ray_address, blocks stream on replicas of the model on a Ray cluster, each
                       block whole on one replica, and grading runs on every node (distributed.py); on a
                       machine with several GPUs (local_replicas, engine.py), on replicas of a Ray
                       instance started here, grading in this process's sandbox
  results/oracle.jsonl --oracle: the same records for the reference solutions (temperature null)
  summary.json         results.EvalSummary, every field commented there: benchmark, label ("all tests", or
                       "public tests" for the shared LiveCodeBench copy),
                       grading (the profile), problem ids and the dev/test split; per temperature ("0.70"):
                       n (samples per problem; the most, for replies made elsewhere) and, per pass@k,
                       {mean, ci_lo, ci_hi, n_problems} on all problems, dev and test, and by difficulty
                       and by platform; status counts, extraction failures, truncated replies and reply
                       lengths; "selection": per pass@k, metrics.select_temperature (best T on dev, its
                       test score with CI, and the optimistic choice on test for reference only)
                       --oracle: pass rate and every problem whose reference fails, with the reason
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import benchmarks, metrics
from .benchmarks import BenchmarkError, Problem
from .config import EvalConfig
from .decoding import Decoder, request_seed
from .generate import GenerationProgress, Request, SamplingSpec
from .manifest import RunDir, atomic_write_json, atomic_write_jsonl, hash_inputs, read_jsonl, sha256_json
from .results import (
    BLOCK,
    graded_benchmark,
    graded_otherwise,
    per_problem_pass_at_k,
    print_sweep,
    results_path,
    samples_per_problem,
    summarize,
    summary_path,
    t_label,
    without_verdict,
    write_summary,
)
from .sandbox import Pool

console = Console(stderr=True, highlight=False)
RECORD_FIELDS = (
    "problem_id",
    "temperature",
    "sample_index",
    "seed",
    "status",
    "passed",
    "detail",
    "reply",
    "reply_tokens",
    "finish_reason",
    "prompt_text",
)


def temperatures(cfg: EvalConfig) -> list[float]:
    temps = sorted(set(cfg.temperatures) | ({cfg.t_eval} if cfg.t_eval is not None else set()))
    names = [t_label(T) for T in temps]
    if len(set(names)) != len(names):
        raise BenchmarkError(f"temperatures {temps} collide at two decimals (results are named T<0.00>.jsonl)")
    return temps


# ---------------------------------------------------------------------------- the stage


def evaluate(cfg: EvalConfig, generator=None) -> Path:
    """Run (or resume) the eval stage; returns the output directory. `generator`: an engine that is
    already loaded (`ssd run` shares one with sampling); it must hold cfg.model."""
    bench = graded_benchmark(cfg)
    temps = temperatures(cfg)
    with _sandbox(cfg, bench) as pool:
        problems = bench.load(
            cfg.benchmark_path, cfg.release_from, cfg.release_to, cfg.platforms, cfg.limit, cfg.seed, pool
        )
        sources = bench.sources(cfg.benchmark_path)
        source = ", ".join(sources)
        inputs = hash_inputs(sources) or {"benchmark": source}
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


def _sweep(
    cfg: EvalConfig,
    bench,
    problems: list[Problem],
    temps: list[float],
    inputs: dict,
    extra: dict,
    pool: Pool,
    generator,
) -> None:
    decoder = Decoder(cfg, generator)
    prompt_texts = decoder.render({p.id: bench.messages(p, cfg.prompt_format) for p in problems})
    inputs.update(decoder.inputs(prompt_texts))
    run = RunDir.open(
        cfg.output_dir,
        "eval",
        cfg,
        inputs,
        extra={**extra, "model_path": decoder.model_path, "chat_template_args": decoder.template_args},
    )
    out = run.path

    dev_ids, _ = metrics.dev_test_split([p.id for p in problems], cfg.dev_fraction, cfg.seed)
    dev = [p for p in problems if p.id in set(dev_ids)] if cfg.test_n else problems
    test = [p for p in problems if p not in dev]
    plan = {T: _load_block_plan(out, cfg, T, dev, test) for T in temps}
    everything = graded_otherwise(run.manifest, bench)
    for T in (
        temps
    ):  # replies graded under other rules, or that the sandbox failed to grade or never ran, are graded (again)
        _regrade(bench, plan[T], problems, pool, everything)
    run.update(grading_rules=bench.profile.rules())
    specs = {T: SamplingSpec.from_config(cfg, temperature=T) for T in temps}
    with decoder:
        for phase in ("grid", "test") if cfg.test_n else ("grid",):
            if phase == "test":
                best = metrics.best_on_dev(
                    {T: per_problem_pass_at_k(plan[T]["records"].values(), dev_ids, 1) for T in temps}, dev_ids
                )
                _plan_test_phase(plan[best], cfg, test)
                console.print(
                    f"T={best:g} chosen on the {len(dev)} dev problems (pass@1); decoding the {len(test)} test "
                    f"problems with {samples_per_problem(cfg, best, test=True)} samples each"
                )
            missing = sum(len(block) for block in _pending_blocks(plan).values())
            if not missing:
                continue
            generator = decoder.engine()
            run.update(effective_params={t_label(T): generator.effective_params(specs[T]) for T in temps})
            _generate(run, cfg, bench, decoder, plan, specs, prompt_texts, pool)
    results = {T: plan[T]["records"] for T in temps}
    summary = summarize(cfg, bench, problems, results)
    write_summary(out, summary)
    run.finish(n_problems=len(problems))
    print_sweep(summary)


def _load_block_plan(out: Path, cfg: EvalConfig, T: float, grid: list[Problem], test: list[Problem]) -> dict:
    """The requests at temperature T in blocks, with the records already on disk. `grid` problems are
    decoded at every temperature; `test` problems (two-phase protocol only) at the one chosen on dev,
    once _plan_test_phase adds them. Records of both phases share the file, grid ones first."""
    requests = [(p, j) for p in grid for j in range(samples_per_problem(cfg, T))]
    order = requests + [(p, j) for p in test for j in range(samples_per_problem(cfg, T, test=True))]
    path = results_path(out, T)
    records = {}
    if path.is_file():
        expected = {(p.id, j): request_seed(cfg.seed, p.id, j, T) for p, j in order}
        for line_no, r in enumerate(read_jsonl(path), 1):
            key = (r["problem_id"], r["sample_index"])
            if expected.get(key) != r["seed"]:
                raise BenchmarkError(
                    f"{path}:{line_no}: a record this run does not plan (problem {key[0]}, sample {key[1]}): "
                    "the directory was modified; delete the file to redo this temperature"
                )
            records[key] = r
    plan = {"T": T, "path": path, "order": order, "records": records, "blocks": []}
    _add_requests(plan, requests)
    return plan


def _add_requests(plan: dict, requests: list) -> None:
    """Blocks start afresh for each phase, so a phase's blocks keep their composition across resumes."""
    plan["blocks"] += [requests[i : i + BLOCK] for i in range(0, len(requests), BLOCK)]


def _pending_blocks(plan: dict) -> dict:
    """{(T, block index): its (problem, sample index)} for every block with a reply not yet recorded.
    Read from the records each time: a block finished earlier in this process is not pending."""
    return {
        (T, b): block
        for T, p in plan.items()
        for b, block in enumerate(p["blocks"])
        if not all((prob.id, j) in p["records"] for prob, j in block)
    }


def _plan_test_phase(plan: dict, cfg: EvalConfig, test: list[Problem]) -> None:
    _add_requests(plan, [(p, j) for p in test for j in range(samples_per_problem(cfg, plan["T"], test=True))])


def _save(plan: dict) -> None:
    records = plan["records"]
    atomic_write_jsonl(plan["path"], [records[(p.id, j)] for p, j in plan["order"] if (p.id, j) in records])


def _regrade(bench, plan: dict, problems: list[Problem], pool: Pool, everything: bool) -> None:
    """Grade again the records without a verdict, or `everything` (graded under other rules)."""
    by_id = {p.id: p for p in problems}
    stale = [r for r in plan["records"].values() if everything or without_verdict(r)]
    if not stale:
        return
    why = "graded under other rules" if everything else "that the sandbox failed to grade or never ran"
    console.print(f"regrading {len(stale)} replies at T={t_label(plan['T'])} {why}")
    verdicts = bench.grade_many([by_id[r["problem_id"]] for r in stale], [r["reply"] for r in stale], pool)
    for r, v in zip(stale, verdicts, strict=True):
        r.update(status=v.status, passed=v.passed, detail=v.detail)
    _save(plan)


def _generate(
    run: RunDir, cfg: EvalConfig, bench, decoder: Decoder, plan: dict, specs: dict, prompt_texts: dict, pool: Pool
) -> None:
    """Every unfinished block in one stream (on a Ray cluster: streams on several replicas); each
    finished block is graded and saved on a thread, each finished reply journaled until then."""
    blocks = {
        (T, b): [(T, prob, j, request_seed(cfg.seed, prob.id, j, T)) for prob, j in block]
        for (T, b), block in _pending_blocks(plan).items()
    }
    units = {
        key: [Request(prompt_texts[prob.id], specs[T], seed) for T, prob, _, seed in block]
        for key, block in blocks.items()
    }
    with (
        ThreadPoolExecutor(1, thread_name_prefix="grading") as grader,
        decoder.decode(run, units, "eval", lambda key: f"T{t_label(key[0])} block {key[1]}") as (progress, finished),
    ):
        graded = []
        for key, completions in finished:
            block = [(*r, c) for r, c in zip(blocks[key], completions, strict=True)]
            graded.append(grader.submit(_grade_block, cfg, bench, plan, prompt_texts, pool, block, progress))
            for future in graded:
                if future.done():
                    future.result()  # a grading error stops the stream now, not after the last reply
        for future in graded:  # the journal goes once every block is graded and written
            future.result()


def _grade_block(
    cfg: EvalConfig,
    bench,
    plan: dict,
    prompt_texts: dict,
    pool: Pool,
    block: list[tuple],
    progress: GenerationProgress,
) -> None:
    """Grade one block's (T, problem, sample index, seed, completion) and rewrite its temperature's file."""
    T = block[0][0]
    verdicts = bench.grade_many([prob for _, prob, *_ in block], [c.text for *_, c in block], pool)
    for (_, prob, j, seed, c), v in zip(block, verdicts, strict=True):
        if c.finish_reason == "prompt_too_long":
            v = benchmarks.Verdict(
                "extraction_failed", False, f"the prompt does not fit max_model_len={cfg.max_model_len}"
            )
        plan[T]["records"][(prob.id, j)] = {
            "problem_id": prob.id,
            "temperature": T,
            "sample_index": j,
            "seed": seed,
            "status": v.status,
            "passed": v.passed,
            "detail": v.detail,
            "reply": c.text,
            "reply_tokens": len(c.token_ids),
            "finish_reason": c.finish_reason,
            "prompt_text": prompt_texts[prob.id],
        }
    _save(plan[T])
    progress.checkpoint(f"T={t_label(T)}: a block of {len(block)} samples graded")


# ---------------------------------------------------------------------------- oracle


def _oracle(run: RunDir, bench, problems: list[Problem], pool: Pool) -> None:
    """Grade the references through the full path (extraction included): a harness check."""
    with_ref = [p for p in problems if p.reference is not None]
    path = run.path / "results" / "oracle.jsonl"
    done = (
        {r["problem_id"]: r for r in read_jsonl(path)}
        if path.is_file() and not graded_otherwise(run.manifest, bench)
        else {}
    )
    todo = [p for p in with_ref if p.id not in done]
    with Progress(
        TextColumn("oracle"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("oracle", total=len(with_ref), completed=len(with_ref) - len(todo))
        for i in range(0, len(todo), BLOCK):
            block = todo[i : i + BLOCK]
            replies = [bench.oracle_reply(p) for p in block]
            for p, reply, v in zip(block, replies, bench.grade_many(block, replies, pool), strict=True):
                done[p.id] = {
                    "problem_id": p.id,
                    "temperature": None,
                    "sample_index": 0,
                    "seed": None,
                    "status": v.status,
                    "passed": v.passed,
                    "detail": v.detail,
                    "reply": reply,
                    "reply_tokens": None,
                    "finish_reason": "oracle",
                }
            atomic_write_jsonl(path, [done[p.id] for p in with_ref if p.id in done])
            bar.update(task, advance=len(block))
    run.update(grading_rules=bench.profile.rules())  # once every record follows them
    records = [done[p.id] for p in with_ref]
    failures = [
        {"problem_id": r["problem_id"], "status": r["status"], "detail": r["detail"]}
        for r in records
        if not r["passed"]
    ]
    summary = {
        "benchmark": bench.name,
        "label": benchmarks.tests_label(problems),
        "grading": bench.grading,
        "grading_rules": bench.profile.rules(),
        "oracle": True,
        "n_problems": len(records),
        "passed": len(records) - len(failures),
        "pass_rate": (len(records) - len(failures)) / len(records),
        "status_counts": dict(Counter(r["status"] for r in records)),
        "failures": failures,
        "no_reference": [p.id for p in problems if p.reference is None],
    }
    atomic_write_json(summary_path(run.path), summary)
    run.finish(n_problems=len(records))
    console.print(
        f"oracle {bench.name}: {summary['passed']}/{summary['n_problems']} references pass "
        f"({100 * summary['pass_rate']:.1f}%)"
    )
    for f in failures:
        console.print(f"  [red]{f['problem_id']}[/] {f['status']}: {f['detail'][:300]}")
